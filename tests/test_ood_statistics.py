"""The OOD gate's image statistics and scores (sswe_node.trust, issue 12), without a network."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from sswe_node.trust import (
    BASIC_STATISTICS,
    IMAGE_STATISTICS,
    Gaussian,
    Neighbours,
    TrustStats,
    image_statistics,
    ledoit_wolf,
)


def _speckle(n: int, seed: int, blur: float = 1.0, gain: float = 0.0) -> np.ndarray:
    """Log-compressed Rayleigh speckle (0-1), smoothed by a point-spread function ``blur``."""
    rng = np.random.default_rng(seed)
    envelope = rng.rayleigh(1.0, (n, 96, 64))
    if blur:
        envelope = gaussian_filter(envelope, (0, blur, blur))
    db = 20 * np.log10(envelope + 1e-3)
    span = 50.0
    return np.clip((db - np.percentile(db, 99) + span) / span + gain, 0, 1).astype(np.float32)


def test_statistics_names_and_shape() -> None:
    stats = image_statistics(_speckle(5, 0))
    assert stats.shape == (5, len(IMAGE_STATISTICS)) and np.isfinite(stats).all()
    assert IMAGE_STATISTICS[: len(BASIC_STATISTICS)] == BASIC_STATISTICS
    assert len(set(IMAGE_STATISTICS)) == len(IMAGE_STATISTICS)
    black = image_statistics(np.zeros((2, 96, 64), np.float32))  # no speckle at all: finite
    assert np.isfinite(black).all()


def test_speckle_statistics_see_the_point_spread_function() -> None:
    """White (unfiltered) speckle has no autocorrelation; a PSF-smoothed one does."""
    column = {name: i for i, name in enumerate(IMAGE_STATISTICS)}
    white = image_statistics(_speckle(4, 1, blur=0))
    smooth = image_statistics(_speckle(4, 1, blur=1.5))
    for name in ("autocorrelation_axial_1", "autocorrelation_lateral_1"):
        assert np.all(white[:, column[name]] < 0.1), name
        assert np.all(smooth[:, column[name]] > 0.5), name
    # Log-compressed unsmoothed speckle: the heavy dark tail of log-Rayleigh.
    assert np.all(white[:, column["residual_skewness"]] < smooth[:, column["residual_skewness"]])


def test_ledoit_wolf_matches_scikit_learn() -> None:
    covariance = pytest.importorskip("sklearn.covariance")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 12)) @ rng.normal(size=(12, 12))
    z = x - x.mean(axis=0)
    expected, _ = covariance.ledoit_wolf(z, assume_centered=True)
    np.testing.assert_allclose(ledoit_wolf(z), expected, rtol=1e-8, atol=1e-10)


def test_scores_are_out_of_patient() -> None:
    """Frames of one patient are alike: in-patient scores would make new patients look odd."""
    rng = np.random.default_rng(3)
    patients = rng.normal(scale=3.0, size=(30, 6))
    x = np.repeat(patients, 4, axis=0) + rng.normal(scale=0.3, size=(120, 6))
    groups = np.repeat(np.arange(30), 4).astype(str)
    fresh = rng.normal(scale=3.0, size=(300, 6)) + rng.normal(scale=0.3, size=(300, 6))
    for fit in (lambda g: Gaussian.fit(x, groups=g), lambda g: Neighbours.fit(x, groups=g)):
        by_patient, by_frame = fit(groups), fit(None)
        assert np.mean(by_patient.percentile(fresh) > 99) < 0.06
        assert np.mean(by_frame.percentile(fresh) > 99) > np.mean(by_patient.percentile(fresh) > 99)


def test_trust_stats_round_trip_and_flag_other_speckle(tmp_path) -> None:
    train = np.concatenate([_speckle(20, s, blur=1.2, gain=0.05 * (s % 3)) for s in range(4)])
    groups = np.repeat([f"p{s}" for s in range(4)], 20)
    pooled = np.random.default_rng(4).normal(size=(len(train), 3))
    latent = np.random.default_rng(5).normal(size=(len(train), 2, 2, 3))
    stats = TrustStats.fit(train, pooled, latent, ["SIM A"], {"split": "train"}, groups=groups)
    table = stats.save(tmp_path)
    back = TrustStats.load(table, tmp_path)
    own = _speckle(20, 9, blur=1.2, gain=0.05)
    white = _speckle(20, 9, blur=0)
    np.testing.assert_allclose(back.score(own), stats.score(own))
    assert set(back.percentiles(own)) == {"basic", "all", "nearest"}
    assert np.mean(back.score(own) > 99) <= 0.1
    assert np.all(back.score(white) > 99)
    assert back.source["scores_out_of"] == "patient"
    old = {**table, "image_statistics": list(BASIC_STATISTICS)}
    with pytest.raises(ValueError, match="other image statistics|SHA-256"):
        TrustStats.load(old, tmp_path)


def test_field_of_view_score(tmp_path) -> None:
    """A frame imaged with another grid-cell size (mm) is flagged; one without a spacing is
    scored on its image alone."""
    rng = np.random.default_rng(6)
    train = np.concatenate([_speckle(20, s, blur=1.2) for s in range(4)])
    groups = np.repeat([f"p{s}" for s in range(4)], 20)
    cells = np.exp(np.log([0.58, 0.83]) + rng.normal(scale=0.08, size=(80, 2)))
    pooled, latent = np.zeros((80, 3)), np.zeros((80, 2, 2, 3))
    stats = TrustStats.fit(train, pooled, latent, ["SIM A"], {}, groups=groups, spacing=cells)
    back = TrustStats.load(stats.save(tmp_path), tmp_path)
    assert back.field_of_view is not None
    own = _speckle(10, 11, blur=1.2)
    same = np.tile([0.58, 0.83], (10, 1))
    finer = np.tile([0.40, 0.90], (10, 1))  # another organ's protocol: a smaller field of view
    unknown = np.full((10, 2), np.nan)
    assert np.all(back.score(own, spacing=same) <= 99)
    assert np.all(back.score(own, spacing=finer) > 99)
    np.testing.assert_array_equal(back.score(own, spacing=unknown), back.score(own))
    assert back.percentiles(own, finer).keys() == {"basic", "all", "nearest", "field_of_view"}
    few = TrustStats.fit(train[:5], pooled[:5], latent[:5], ["SIM A"], {}, spacing=cells[:5])
    assert few.field_of_view is None  # too few frames with a spacing: no such score
