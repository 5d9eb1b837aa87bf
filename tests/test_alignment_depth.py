"""Depth-matched alignment reference: a key's rows meet the training frames' at the same depth."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sswe_node.alignment import (
    SPACING_PREFIX,
    MemoryScannerStats,
    depth_matched,
    make_aligner,
)
from sswe_node.trust import FeatureStats

H, W, C = 24, 16, 2
SPACING = (0.5, 0.8)


def _gradient_reference() -> FeatureStats:
    """A reference whose mean and variance grow with depth (row) and not across columns."""
    rows = np.arange(H, dtype=np.float64)[:, None, None] * np.ones((1, W, C))
    count = 100
    return FeatureStats(count, (rows / 10).reshape(-1), ((0.25 + rows / 100) * count).reshape(-1))


def _toy_model(depth: bool | None = None) -> SimpleNamespace:
    inference = {} if depth is None else {"align_depth": depth}
    manifest = SimpleNamespace(
        name="toy", grid=(4 * H, 4 * W), spacing_mm=SPACING, inference=inference
    )
    trust = SimpleNamespace(reference=_gradient_reference())
    return SimpleNamespace(manifest=manifest, trust=trust, latent_channels=C)


def _row_means(values: np.ndarray) -> np.ndarray:
    return values.reshape(len(values), H, W, C).mean(axis=0)


def test_depth_matched_reference_reads_the_same_depth() -> None:
    ref = _gradient_reference()
    same = depth_matched(ref, (H, W, C), (1.0, 1.0))
    np.testing.assert_array_equal(same.mean, ref.mean)
    np.testing.assert_array_equal(same.variance, ref.variance)
    # half the cell size: row r lies at the depth of the reference's row (r + 0.5) / 2 - 0.5
    half = depth_matched(ref, (H, W, C), (0.5, 1.0))
    depth = np.clip((np.arange(H) + 0.5) * 0.5 - 0.5, 0, None)
    mean = half.mean.reshape(H, W, C)
    np.testing.assert_allclose(mean, np.broadcast_to(depth[:, None, None] / 10, mean.shape))
    np.testing.assert_allclose(
        half.variance.reshape(H, W, C),
        np.broadcast_to(0.25 + depth[:, None, None] / 100, mean.shape),
    )
    # twice the cell size: deeper than the training frames saw takes the last row's statistics
    double = depth_matched(ref, (H, W, C), (2.0, 1.0)).mean.reshape(H, W, C)
    assert double[0, 0, 0] == pytest.approx(0.05)
    np.testing.assert_array_equal(double[12:], np.full((H - 12, W, C), (H - 1) / 10))
    # columns are matched about the centre line: a column pattern is stretched symmetrically
    across = np.broadcast_to(np.arange(W, dtype=np.float64)[None, :, None], (H, W, C))
    cols = FeatureStats(1, across.ravel(), np.ones(H * W * C))
    wide = depth_matched(cols, (H, W, C), (1.0, 0.5)).mean.reshape(H, W, C)[0, :, 0]
    np.testing.assert_allclose(wide, (np.arange(W) + 0.5 - W / 2) * 0.5 + W / 2 - 0.5)


def test_aligner_aligns_a_half_cell_key_to_the_matching_depth() -> None:
    rng = np.random.default_rng(0)
    n = 40
    latent = rng.normal(3.0, 1.0, (2 * n, H * W * C)).astype(np.float32)
    keys = ["B [bmode]"] * n + ["C [bmode]"] * n
    spacing = np.full((2 * n, 2), np.nan)
    spacing[:n] = (0.25, 0.8)  # key B: half the model's cell size along rows; key C unknown
    store = MemoryScannerStats()
    aligner = make_aligner(_toy_model(depth=True), keys, store, min_frames=1)
    rows_only = make_aligner(_toy_model(depth="rows"), keys, MemoryScannerStats(), min_frames=1)
    assert aligner.axes == (0, 1) and rows_only.axes == (0,)
    assert aligner.uses_spacing
    scale, shift, aligned = aligner(latent, spacing)
    assert aligned.all()
    out = scale * latent + shift
    depth = np.clip((np.arange(H) + 0.5) * 0.5 - 0.5, 0, None)
    matched = np.broadcast_to(depth[:, None, None] / 10, (H, W, C))
    plain = np.broadcast_to(np.arange(H)[:, None, None] / 10, (H, W, C))
    np.testing.assert_allclose(_row_means(out[:n]), matched, atol=1e-4)
    np.testing.assert_allclose(_row_means(out[n:]), plain, atol=1e-4)  # no spacing: as before
    variance = out[:n].reshape(n, H, W, C).var(axis=0)
    expected = np.broadcast_to(0.25 + depth[:, None, None] / 100, variance.shape)
    np.testing.assert_allclose(variance, expected, rtol=2e-3)
    kept = store.get("toy", SPACING_PREFIX + "B [bmode]")
    assert kept.count == n and np.allclose(kept.mean, (0.25, 0.8))
    assert store.get("toy", SPACING_PREFIX + "C [bmode]") is None
    # switched off (the default): the spacing is not asked for and the reference is per position
    for off in (_toy_model(), _toy_model(depth=False)):
        plain_aligner = make_aligner(off, keys, MemoryScannerStats(), min_frames=1)
        assert not plain_aligner.uses_spacing
        a, b, _ = plain_aligner(latent)
        np.testing.assert_allclose(_row_means(a[:n] * latent[:n] + b[:n]), plain, atol=1e-4)


pytest.importorskip("keras")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> object:
    from sswe_node.model import load_model
    from tests.toydata import tiny_trusted_package

    folder = tiny_trusted_package(tmp_path_factory.mktemp("models") / "tiny-depth", 0.2)
    return load_model(folder, device="cpu", batch_size=16)


def test_infer_passes_the_spacing_to_a_depth_matching_aligner(model) -> None:
    from tests.toydata import blob_frames

    images = blob_frames(6, seed=8, bright=0.3)
    keys = ["B [bmode]"] * 6
    spacing = np.asarray(model.manifest.spacing_mm, np.float64)
    store = MemoryScannerStats()

    def run(depth, cells, into=None):
        aligner = make_aligner(model, keys, into or MemoryScannerStats(), min_frames=1, depth=depth)
        return model.infer(images, passes=1, aligner=aligner, spacing=cells).values

    shallow = np.tile(spacing * [0.6, 1.0], (6, 1))
    plain = run((), shallow)
    matched = run((0, 1), shallow, store)
    kept = store.get(model.manifest.name, SPACING_PREFIX + "B [bmode]")
    assert kept.count == 6 and np.allclose(kept.mean, spacing * [0.6, 1.0])
    assert np.abs(matched - plain).max() > 1e-3  # another reference for a shallower key
    np.testing.assert_array_equal(run((0, 1), np.full((6, 2), np.nan)), plain)
    np.testing.assert_array_equal(run((0, 1), None), plain)
    np.testing.assert_allclose(run((0, 1), np.tile(spacing, (6, 1))), plain, atol=1e-4)
