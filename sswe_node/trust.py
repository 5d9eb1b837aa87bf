"""Trust statistics of a packaged model: out-of-distribution scores and scanner alignment.

Pure NumPy, shared by packaging (``training.package``) and the node (``sswe_node.model``):

* **Image statistics** (:func:`image_statistics`): 46 cheap numbers per model-grid frame that
  describe the B-mode's look and its speckle physics: grey levels (percentiles, dark and bright
  fractions, dynamic range, histogram moments), the depth and lateral profile (TGC, field of
  view), the speckle (autocorrelation of the detrended image along and across the beam at lags
  1, 2 and 4, the sd of 8x8 blocks and its spread, the speckle SNR mean/sd of bright blocks),
  the histogram of the block-normalised residual (log-compressed fully developed speckle has a
  skewed, heavy dark tail; averaged speckle is close to Gaussian) and the residual's spectrum in
  three bands along and across the beam.
* **Out-of-distribution scores**: three scores of a frame's image statistics, each turned into
  a percentile of the training frames' own *out-of-patient* scores (every training frame is
  scored by a model fitted without its patient, so a new patient of the training distribution
  ranks like them): the Mahalanobis distance of the eight basic statistics (:class:`Gaussian`),
  the Mahalanobis distance of all 46 (Ledoit-Wolf shrinkage of the standardised covariance),
  and the distance to the nearest training frame in standardised units (:class:`Neighbours`:
  a frame between the training frames' clusters is far from each). A frame's score is the
  largest of the three percentiles.
* **Field of view** (optional): the logarithm of a frame's grid-cell size in mm
  (:data:`FIELD_OF_VIEW`), a Gaussian of the training frames', scored like the others when the
  caller gives the frames' spacing (``spacing`` of :meth:`TrustStats.score`); another organ's
  protocol or another scanner images another field of view onto the same grid.
* **Pooled latent features**: the per-channel mean over the latent map of each frame, recorded
  as a Gaussian but not part of the score (measured on the shipped models with the simulated
  sets of ``benchmarks/bench_trust.py``: latent features, pooled at any encoder level, flagged
  more of the model's own held-out frames and no more of the other kinds).
* **Scanner alignment** (:class:`FeatureStats`, :func:`alignment`): per-feature mean and
  variance of the flattened latent maps of a scanner's frames (Chan's parallel update, so
  running statistics can be merged batch by batch), and the feature-wise affine map that
  gives the target scanner the training frames' mean and variance (AdaBN style).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "BASIC_STATISTICS",
    "FIELD_OF_VIEW",
    "IMAGE_STATISTICS",
    "FeatureStats",
    "REFERENCE_FILE",
    "Gaussian",
    "Neighbours",
    "TrustStats",
    "alignment",
    "image_statistics",
    "ledoit_wolf",
    "stats_digest",
]

#: The eight basic grey-level statistics (the first columns of :func:`image_statistics`).
BASIC_STATISTICS = (
    "mean",
    "sd",
    "p05",
    "p50",
    "p95",
    "dark_fraction",
    "bright_fraction",
    "gradient",
)

#: Names of the image statistics, in the order :func:`image_statistics` returns them.
IMAGE_STATISTICS = (
    *BASIC_STATISTICS,
    *(f"depth_mean_{k}" for k in range(6)),
    *(f"lateral_mean_{k}" for k in range(4)),
    *(f"autocorrelation_{axis}_{lag}" for axis in ("axial", "lateral") for lag in (1, 2, 4)),
    "block_sd_median",
    "block_sd_iqr",
    "speckle_snr",
    "skewness",
    "kurtosis",
    "dynamic_range",
    "black_fraction",
    "residual_sd",
    "residual_skewness",
    "residual_kurtosis",
    *(f"residual_cdf_{t:+g}" for t in (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0)),
    *(f"spectrum_{axis}_{band}" for axis in ("axial", "lateral") for band in range(3)),
)

#: The field of view: the physical size of a model-grid cell (mm), when the frame has a spacing.
FIELD_OF_VIEW = ("grid_row_mm", "grid_col_mm")

#: Side of the blocks of the speckle statistics (pixels of the model grid).
BLOCK = 8

#: Blocks darker than this (0-1) hold no speckle: left out of the residual histogram.
DARK_BLOCK = 0.08

#: Training frames with a known spacing needed to fit the field-of-view score.
MIN_FIELD_OF_VIEW_FRAMES = 10

#: Where the residual's CDF is read (in block standard deviations).
RESIDUAL_CDF = (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0)


def image_statistics(images: NDArray[np.floating]) -> NDArray[np.float64]:
    """Return ``(N, 46)`` statistics of ``(N, rows, cols)`` model-grid frames (0-1).

    In :data:`IMAGE_STATISTICS` order (see the module docstring). The speckle statistics use
    the image with the mean of each 8x8 block removed (the residual), so the tissue's
    structure (gland, lesions, shadows) mostly leaves them.
    """
    x = np.asarray(images, np.float32)
    n, rows, cols = x.shape
    flat = x.reshape(n, -1)
    p01, p05, p50, p95, p99 = np.percentile(flat, [1, 5, 50, 95, 99], axis=1)
    grad = np.abs(np.diff(x, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(x, axis=2)).mean(
        axis=(1, 2)
    )
    mean, sd = flat.mean(axis=1), flat.std(axis=1)
    z = (flat - mean[:, None]) / (sd[:, None] + 1e-6)
    z2 = z * z
    depth = np.stack([b.mean(axis=(1, 2)) for b in np.array_split(x, 6, axis=1)], axis=1)
    lateral = np.stack([b.mean(axis=(1, 2)) for b in np.array_split(x, 4, axis=2)], axis=1)
    br, bc = rows // BLOCK, cols // BLOCK
    blocks = x[:, : br * BLOCK, : bc * BLOCK].reshape(n, br, BLOCK, bc, BLOCK)
    block_mean = blocks.mean(axis=(2, 4), keepdims=True)
    block_sd = blocks.std(axis=(2, 4), keepdims=True)
    residual = (blocks - block_mean).reshape(n, br * BLOCK, bc * BLOCK)
    var = (residual**2).mean(axis=(1, 2)) + 1e-9

    def autocorrelation(lag: int, axis: int) -> NDArray[np.float32]:
        a = residual[:, :-lag] if axis == 1 else residual[:, :, :-lag]
        b = residual[:, lag:] if axis == 1 else residual[:, :, lag:]
        return (a * b).mean(axis=(1, 2)) / var

    bsd = block_sd.reshape(n, -1)
    q75, q25 = np.percentile(bsd, [75, 25], axis=1)
    bright = block_mean.reshape(n, -1) > DARK_BLOCK
    snr = block_mean.reshape(n, -1) / (bsd + 1e-6)
    speckle_snr = (snr * bright).sum(axis=1) / np.maximum(bright.sum(axis=1), 1)
    # Histogram of the block-normalised residual of the bright blocks: moments and CDF.
    weight = np.broadcast_to(block_mean > DARK_BLOCK, blocks.shape).reshape(n, -1)
    count = np.maximum(weight.sum(axis=1), 1)
    r = ((blocks - block_mean) / (block_sd + 1e-6)).reshape(n, -1)
    r2 = r * r
    histogram = [(r2 * r * weight).sum(axis=1) / count, (r2 * r2 * weight).sum(axis=1) / count]
    histogram += [((r < t) & weight).sum(axis=1) / count for t in RESIDUAL_CDF]
    spectra = []
    for axis in (1, 2):
        power = (np.abs(np.fft.rfft(residual, axis=axis)) ** 2).mean(axis=3 - axis)
        power /= power.sum(axis=1, keepdims=True) + 1e-12
        spectra += [band.sum(axis=1) for band in np.array_split(power, 4, axis=1)[:3]]
    columns = [
        mean, sd, p05, p50, p95, (flat < 0.05).mean(axis=1), (flat > 0.95).mean(axis=1), grad,
        *depth.T, *lateral.T,
        *(autocorrelation(lag, axis) for axis in (1, 2) for lag in (1, 2, 4)),
        np.median(bsd, axis=1), q75 - q25, speckle_snr,
        (z2 * z).mean(axis=1), (z2 * z2).mean(axis=1),
        p99 - p01, (flat < 0.02).mean(axis=1), np.sqrt(var), *histogram, *spectra,
    ]  # fmt: skip
    return np.stack(columns, axis=1).astype(np.float64)


def ledoit_wolf(z: NDArray[np.float64]) -> NDArray[np.float64]:
    """Ledoit-Wolf shrunk covariance of centred ``(N, d)`` data (towards a scaled identity)."""
    n, d = z.shape
    sample = z.T @ z / n
    mu = float(np.trace(sample)) / d
    target = mu * np.eye(d)
    d2 = float(((sample - target) ** 2).sum())
    b2 = (float(((z**2).sum(axis=1) ** 2).sum()) - n * float((sample**2).sum())) / n**2
    shrinkage = 1.0 if d2 <= 0 else min(1.0, max(0.0, b2 / d2))
    return shrinkage * target + (1 - shrinkage) * sample


def _folds(n: int, groups: Sequence[Any] | None, folds: int, seed: int) -> list[NDArray[np.intp]]:
    """Held-out parts: one per group (patient) when groups are given, else random folds."""
    if groups is not None:
        keys = np.asarray([str(g) for g in groups])
        return [np.flatnonzero(keys == k) for k in np.unique(keys)]
    order = np.random.default_rng(seed).permutation(n)
    return list(np.array_split(order, min(folds, n)))


@dataclass
class Gaussian:
    """A Gaussian model of training vectors with the training frames' distance distribution.

    Attributes
    ----------
    mean : numpy.ndarray
        ``(d,)`` mean of the training vectors.
    covariance : numpy.ndarray
        ``(d, d)`` shrunk covariance.
    scores : numpy.ndarray
        Sorted Mahalanobis distances of the training frames (out of fold), for percentiles.
    """

    mean: NDArray[np.float64]
    covariance: NDArray[np.float64]
    scores: NDArray[np.float64]

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, np.float64)
        self.covariance = np.asarray(self.covariance, np.float64)
        self.scores = np.sort(np.asarray(self.scores, np.float64))
        self._precision = np.linalg.pinv(self.covariance)

    @staticmethod
    def _fit(x: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        # Ledoit-Wolf shrinkage of the correlation-scale covariance, back to the units.
        cov = ledoit_wolf((x - mean) / scale) * np.outer(scale, scale)
        return mean, cov + 1e-9 * (float(np.mean(np.diag(cov))) + 1e-12) * np.eye(len(mean))

    @classmethod
    def fit(
        cls,
        vectors: NDArray[np.floating],
        folds: int = 5,
        seed: int = 0,
        groups: Sequence[Any] | None = None,
    ) -> Gaussian:
        """Fit on ``(N, d)`` training vectors; the scores are out of fold.

        With ``groups`` (each frame's patient) every patient's frames are scored by a fit
        without that patient, so a new patient ranks like the training ones; without, by
        ``folds`` random folds. In-sample distances would be smaller than a new frame's.
        """
        x = np.asarray(vectors, np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"need at least two (N, d) training vectors, got {x.shape}")
        mean, cov = cls._fit(x)
        scores = np.empty(len(x))
        for part in _folds(len(x), groups, folds, seed):
            rest = np.setdiff1d(np.arange(len(x)), part)
            if len(rest) < 2:
                rest = np.arange(len(x))
            m, c = cls._fit(x[rest])
            scores[part] = _mahalanobis(x[part], m, np.linalg.pinv(c))
        return cls(mean, cov, scores)

    def distance(self, vectors: NDArray[np.floating]) -> NDArray[np.float64]:
        """Return the Mahalanobis distance of each ``(N, d)`` vector."""
        return _mahalanobis(np.asarray(vectors, np.float64), self.mean, self._precision)

    def percentile(self, vectors: NDArray[np.floating]) -> NDArray[np.float64]:
        """Return each vector's distance as a percentile (0-100) of the training frames'."""
        return _percentile(self.scores, self.distance(vectors))

    def to_dict(self) -> dict[str, Any]:
        """Return a TOML/JSON-friendly mapping."""
        return {
            "mean": [float(v) for v in self.mean],
            "covariance": [[float(v) for v in row] for row in self.covariance],
            "scores": [float(v) for v in self.scores],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Gaussian:
        """Inverse of :meth:`to_dict`."""
        return cls(
            np.asarray(raw["mean"]), np.asarray(raw["covariance"]), np.asarray(raw["scores"])
        )


def _percentile(scores: NDArray[np.float64], d: NDArray[np.float64]) -> NDArray[np.float64]:
    """Return each distance in ``d`` as a percentile (0-100) of the sorted ``scores``."""
    return 100.0 * np.searchsorted(scores, d, side="left") / len(scores)


def _mahalanobis(
    x: NDArray[np.float64], mean: NDArray[np.float64], precision: NDArray[np.float64]
) -> NDArray[np.float64]:
    diff = x - mean
    return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", diff, precision, diff), 0.0))


@dataclass
class Neighbours:
    """Distance to the nearest training frame, in standardised units, as a percentile.

    Attributes
    ----------
    mean, scale : numpy.ndarray
        ``(d,)`` per-statistic mean and sd of the training vectors (the standardisation).
    vectors : numpy.ndarray
        ``(N, d)`` standardised training vectors.
    scores : numpy.ndarray
        Sorted distances of each training frame to the nearest frame of another patient.
    """

    mean: NDArray[np.float64]
    scale: NDArray[np.float64]
    vectors: NDArray[np.float64]
    scores: NDArray[np.float64]

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, np.float64)
        self.scale = np.asarray(self.scale, np.float64)
        self.vectors = np.asarray(self.vectors, np.float64)
        self.scores = np.sort(np.asarray(self.scores, np.float64))

    @classmethod
    def fit(cls, vectors: NDArray[np.floating], groups: Sequence[Any] | None = None) -> Neighbours:
        """Fit on ``(N, d)`` training vectors (``groups``: each frame's patient, if known).

        A training frame's score is its distance to the nearest frame of another patient
        (without groups: of another frame), as a new patient's frame would be scored.
        """
        x = np.asarray(vectors, np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"need at least two (N, d) training vectors, got {x.shape}")
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        z = (x - mean) / scale
        d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(axis=2)
        keys = np.arange(len(x)) if groups is None else np.asarray([str(g) for g in groups])
        same = keys[:, None] == keys[None, :]
        if same.all(axis=1).any():  # a single group: fall back to other frames
            same = np.eye(len(x), dtype=bool)
        d[same] = np.inf
        return cls(mean, scale, z, np.sqrt(d.min(axis=1)))

    def distance(self, vectors: NDArray[np.floating]) -> NDArray[np.float64]:
        """Return each ``(N, d)`` vector's distance to the nearest training frame."""
        z = (np.asarray(vectors, np.float64) - self.mean) / self.scale
        d = (z**2).sum(axis=1)[:, None] - 2 * z @ self.vectors.T
        d += (self.vectors**2).sum(axis=1)[None, :]
        return np.sqrt(np.maximum(d.min(axis=1), 0.0))

    def percentile(self, vectors: NDArray[np.floating]) -> NDArray[np.float64]:
        """Return each vector's distance as a percentile (0-100) of the training frames'."""
        return _percentile(self.scores, self.distance(vectors))

    def to_dict(self) -> dict[str, Any]:
        """Return the TOML/JSON-friendly part (the vectors go to the reference file)."""
        return {
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "scores": [float(v) for v in self.scores],
        }


@dataclass
class FeatureStats:
    """Per-feature mean and sum of squared deviations of flattened latent maps (mergeable).

    Every latent feature (position and channel, ``h * w * C`` of them) has its own mean and
    variance over frames, so an alignment also corrects where in the image a scanner differs
    (depth-dependent gain, field of view), not only by how much per channel.

    Attributes
    ----------
    count : int
        Frames seen.
    mean : numpy.ndarray
        ``(F,)`` mean over those frames.
    m2 : numpy.ndarray
        ``(F,)`` sum of squared deviations from ``mean``.
    """

    count: int
    mean: NDArray[np.float64]
    m2: NDArray[np.float64]

    @classmethod
    def from_frames(cls, features: NDArray[np.floating]) -> FeatureStats:
        """Build from ``(N, F)`` flattened latent maps."""
        x = np.asarray(features, np.float64).reshape(len(features), -1)
        if not len(x):
            return cls(0, np.zeros(x.shape[1]), np.zeros(x.shape[1]))
        mean = x.mean(axis=0)
        return cls(len(x), mean, ((x - mean) ** 2).sum(axis=0))

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Return the statistics of both sets of frames (Chan et al.'s parallel update)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        na, nb = self.count, other.count
        delta = other.mean - self.mean
        n = na + nb
        mean = self.mean + delta * nb / n
        m2 = self.m2 + other.m2 + delta**2 * na * nb / n
        return FeatureStats(n, mean, m2)

    @property
    def variance(self) -> NDArray[np.float64]:
        """``(F,)`` per-feature variance."""
        return self.m2 / max(1, self.count)


def alignment(
    target: FeatureStats, reference: FeatureStats, eps: float = 1e-4
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Return the per-feature ``(scale, shift)`` mapping ``target`` onto ``reference``.

    ``aligned = scale * latent + shift`` has the reference's per-feature mean and variance.
    ``eps`` (in squared latent units) keeps near-constant features from being blown up.
    """
    scale = np.sqrt((reference.variance + eps) / (target.variance + eps))
    shift = reference.mean - scale * target.mean
    return scale.astype(np.float32), shift.astype(np.float32)


#: Sidecar file of a package holding the alignment reference (too large for the TOML).
REFERENCE_FILE = "trust.npz"


@dataclass
class TrustStats:
    """The trust table of a manifest: OOD scores and the training latent statistics.

    Attributes
    ----------
    image : Gaussian
        The eight basic statistics (:data:`BASIC_STATISTICS`) of the training frames.
    latent : Gaussian
        Pooled latent features (channel means) of the training frames (recorded, not scored).
    reference : FeatureStats
        Per-feature latent statistics of the training frames (the alignment reference),
        kept in :data:`REFERENCE_FILE` beside the manifest, whose SHA-256 the table holds.
    scanners : list of str
        The training frames' scanners (Manufacturer + Model Name).
    source : dict
        How the statistics were made (dataset, rows, command).
    statistics : Gaussian
        All :data:`IMAGE_STATISTICS` of the training frames.
    neighbours : Neighbours
        The same, for the nearest-training-frame distance (its vectors in the reference file).
    field_of_view : Gaussian or None
        The logarithm of the training frames' grid-cell size in mm (:data:`FIELD_OF_VIEW`):
        scored only for frames whose spacing is given (``spacing`` of :meth:`score`).
    """

    image: Gaussian
    latent: Gaussian
    reference: FeatureStats
    scanners: list[str]
    source: dict[str, Any]
    statistics: Gaussian | None = None
    neighbours: Neighbours | None = None
    field_of_view: Gaussian | None = None

    @classmethod
    def fit(
        cls,
        images: NDArray[np.floating],
        pooled: NDArray[np.floating],
        latent: NDArray[np.floating],
        scanners: Sequence[str],
        source: Mapping[str, Any],
        *,
        groups: Sequence[Any] | None = None,
        seed: int = 0,
        spacing: NDArray[np.floating] | None = None,
    ) -> TrustStats:
        """Fit every part on the training frames.

        Parameters
        ----------
        images : numpy.ndarray
            ``(N, rows, cols)`` training frames on the model grid (0-1).
        pooled, latent : numpy.ndarray
            Their pooled latent features ``(N, C)`` and latent maps ``(N, h, w, C)``.
        scanners : sequence of str
            Each frame's scanner.
        source : mapping
            How the frames were chosen (recorded).
        groups : sequence, optional
            Each frame's patient: the training scores are then out of patient.
        seed : int
            Seed of the random folds when no groups are given.
        spacing : numpy.ndarray, optional
            ``(N, 2)`` grid-cell size in mm of each frame (NaN: unknown); the field-of-view
            score is fitted when at least :data:`MIN_FIELD_OF_VIEW_FRAMES` frames have one.
        """
        stats = image_statistics(images)
        field_of_view = None
        if spacing is not None:
            cells = np.asarray(spacing, np.float64).reshape(len(images), len(FIELD_OF_VIEW))
            known = np.isfinite(cells).all(axis=1) & (cells > 0).all(axis=1)
            if known.sum() >= MIN_FIELD_OF_VIEW_FRAMES:
                keys = None if groups is None else np.asarray([str(g) for g in groups])[known]
                field_of_view = Gaussian.fit(np.log(cells[known]), seed=seed, groups=keys)
        basic = len(BASIC_STATISTICS)
        return cls(
            image=Gaussian.fit(stats[:, :basic], seed=seed, groups=groups),
            latent=Gaussian.fit(pooled, seed=seed, groups=groups),
            reference=FeatureStats.from_frames(np.asarray(latent).reshape(len(latent), -1)),
            scanners=sorted({str(s) for s in scanners}),
            source={
                **dict(source),
                "frames": int(len(images)),
                "scores_out_of": "patient" if groups is not None else "fold",
            },
            statistics=Gaussian.fit(stats, seed=seed, groups=groups),
            neighbours=Neighbours.fit(stats, groups=groups),
            field_of_view=field_of_view,
        )

    def percentiles(
        self, images: NDArray[np.floating], spacing: NDArray[np.floating] | None = None
    ) -> dict[str, NDArray[np.float64]]:
        """Return each frame's percentile under each score.

        ``basic``, ``all`` and ``nearest`` (image statistics); with ``spacing`` (``(N, 2)``
        grid-cell size in mm, NaN where unknown) and a fitted field of view, also
        ``field_of_view`` (0 for frames without a spacing).
        """
        stats = image_statistics(images)
        out = {"basic": self.image.percentile(stats[:, : len(BASIC_STATISTICS)])}
        if self.statistics is not None:
            out["all"] = self.statistics.percentile(stats)
        if self.neighbours is not None:
            out["nearest"] = self.neighbours.percentile(stats)
        if spacing is not None and self.field_of_view is not None:
            cells = np.asarray(spacing, np.float64).reshape(len(stats), len(FIELD_OF_VIEW))
            known = np.isfinite(cells).all(axis=1) & (cells > 0).all(axis=1)
            fov = np.zeros(len(stats))
            if known.any():
                fov[known] = self.field_of_view.percentile(np.log(cells[known]))
            out["field_of_view"] = fov
        return out

    def score(
        self,
        images: NDArray[np.floating],
        pooled: NDArray[np.floating] | None = None,
        spacing: NDArray[np.floating] | None = None,
    ) -> NDArray[np.float64]:
        """Return each frame's OOD score: the largest of its percentiles (0-100).

        ``pooled`` (the latent features) is accepted for the callers' sake and not scored;
        ``spacing`` adds the field-of-view score (see :meth:`percentiles`).
        """
        return np.max(np.stack(list(self.percentiles(images, spacing).values())), axis=0)

    def save(self, folder: str | Path) -> dict[str, Any]:
        """Write the reference file into ``folder``; return the manifest table (with digest)."""
        path = Path(folder) / REFERENCE_FILE
        ref = self.reference
        arrays: dict[str, Any] = {"count": np.int64(ref.count), "mean": ref.mean, "m2": ref.m2}
        if self.neighbours is not None:
            arrays["neighbours"] = self.neighbours.vectors
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        body: dict[str, Any] = {
            "image_statistics": list(IMAGE_STATISTICS),
            "image": self.image.to_dict(),
            "latent": self.latent.to_dict(),
            "reference": {
                "file": REFERENCE_FILE,
                "sha256": _sha256(path),
                "frames": int(ref.count),
                "features": int(ref.mean.size),
            },
            "scanners": list(self.scanners),
            "source": dict(self.source),
        }
        if self.statistics is not None:
            body["statistics"] = self.statistics.to_dict()
        if self.neighbours is not None:
            body["neighbours"] = self.neighbours.to_dict()
        if self.field_of_view is not None:
            body["field_of_view"] = {
                "statistics": list(FIELD_OF_VIEW),
                "log": True,
                **self.field_of_view.to_dict(),
            }
        return {**body, "sha256": stats_digest(body)}

    @classmethod
    def load(cls, raw: Mapping[str, Any], folder: str | Path) -> TrustStats:
        """Read the manifest table and its reference file; ``ValueError`` on any mismatch."""
        body = {k: v for k, v in raw.items() if k != "sha256"}
        if stats_digest(body) != raw.get("sha256"):
            raise ValueError("trust statistics do not match their SHA-256")
        if tuple(raw.get("image_statistics", ())) != IMAGE_STATISTICS:
            raise ValueError(
                "trust statistics were made with other image statistics: "
                "run `sswe-node model stats` again"
            )
        ref = raw["reference"]
        path = Path(folder) / str(ref["file"])
        if not path.is_file() or _sha256(path) != ref["sha256"]:
            raise ValueError(f"{path}: missing or does not match its SHA-256")
        with np.load(path) as npz:
            reference = FeatureStats(int(npz["count"]), npz["mean"], npz["m2"])
            vectors = npz["neighbours"] if "neighbours" in npz.files else None
        neighbours = None
        if "neighbours" in raw:
            if vectors is None:
                raise ValueError(f"{path}: no nearest-neighbour vectors")
            n = raw["neighbours"]
            neighbours = Neighbours(n["mean"], n["scale"], vectors, n["scores"])
        return cls(
            Gaussian.from_dict(raw["image"]),
            Gaussian.from_dict(raw["latent"]),
            reference,
            [str(s) for s in raw.get("scanners", [])],
            dict(raw.get("source", {})),
            Gaussian.from_dict(raw["statistics"]) if "statistics" in raw else None,
            neighbours,
            Gaussian.from_dict(raw["field_of_view"]) if "field_of_view" in raw else None,
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stats_digest(body: Mapping[str, Any]) -> str:
    """SHA-256 of a canonical JSON of ``body`` (floats rounded to 12 significant digits)."""

    def canon(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): canon(v) for k, v in sorted(value.items())}
        if isinstance(value, Sequence) and not isinstance(value, str):
            return [canon(v) for v in value]
        if isinstance(value, float | np.floating):
            return float(f"{float(value):.12g}")
        return value

    text = json.dumps(canon(body), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
