"""Trust statistics of a packaged model: out-of-distribution scores and scanner alignment.

Pure NumPy, shared by packaging (``training.package``) and the node (``sswe_node.model``):

* **Image statistics** (:func:`image_statistics`): eight cheap numbers per model-grid frame.
* **Pooled latent features**: the per-channel mean over the latent map of each frame.
* **Out-of-distribution score** (:class:`Gaussian`): the Mahalanobis distance of a frame's
  vector from the training frames' mean (shrunk covariance), turned into a percentile of the
  training frames' own out-of-fold distances. A frame's score is the larger percentile of its
  image statistics and its latent features.
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
    "IMAGE_STATISTICS",
    "FeatureStats",
    "REFERENCE_FILE",
    "Gaussian",
    "TrustStats",
    "alignment",
    "image_statistics",
    "stats_digest",
]

#: Names of the cheap image statistics, in the order :func:`image_statistics` returns them.
IMAGE_STATISTICS = (
    "mean",
    "sd",
    "p05",
    "p50",
    "p95",
    "dark_fraction",
    "bright_fraction",
    "gradient",
)

#: Shrinkage of the covariance towards its diagonal (the weight of the diagonal).
SHRINKAGE = 0.1


def image_statistics(images: NDArray[np.floating]) -> NDArray[np.float64]:
    """Return ``(N, 8)`` cheap statistics of ``(N, rows, cols)`` model-grid frames (0-1).

    Mean, standard deviation, 5th/50th/95th percentiles, fraction below 0.05, fraction above
    0.95 and mean absolute gradient (texture), in :data:`IMAGE_STATISTICS` order.
    """
    x = np.asarray(images, np.float32).reshape(len(images), -1)
    flat = np.asarray(images, np.float32)
    p05, p50, p95 = np.percentile(x, [5, 50, 95], axis=1)
    grad = np.abs(np.diff(flat, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(flat, axis=2)).mean(
        axis=(1, 2)
    )
    return np.stack(
        [
            x.mean(axis=1),
            x.std(axis=1),
            p05,
            p50,
            p95,
            (x < 0.05).mean(axis=1),
            (x > 0.95).mean(axis=1),
            grad,
        ],
        axis=1,
    ).astype(np.float64)


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
        cov = np.cov(x, rowvar=False) if len(x) > 1 else np.eye(x.shape[1])
        cov = np.atleast_2d(cov)
        # Shrink towards the diagonal (each feature keeps its own scale), plus a floor.
        diagonal = np.diag(np.diag(cov))
        shrunk = (1 - SHRINKAGE) * cov + SHRINKAGE * diagonal
        return mean, shrunk + 1e-9 * (float(np.mean(np.diag(cov))) + 1e-12) * np.eye(len(mean))

    @classmethod
    def fit(cls, vectors: NDArray[np.floating], folds: int = 5, seed: int = 0) -> Gaussian:
        """Fit on ``(N, d)`` training vectors; the scores are ``folds``-fold out of fold.

        Out-of-fold distances keep the percentiles honest: a frame's in-sample distance is
        smaller than that of a new frame from the same distribution.
        """
        x = np.asarray(vectors, np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"need at least two (N, d) training vectors, got {x.shape}")
        mean, cov = cls._fit(x)
        order = np.random.default_rng(seed).permutation(len(x))
        scores = np.empty(len(x))
        for part in np.array_split(order, min(folds, len(x))):
            rest = np.setdiff1d(order, part)
            m, c = cls._fit(x[rest])
            scores[part] = _mahalanobis(x[part], m, np.linalg.pinv(c))
        return cls(mean, cov, scores)

    def distance(self, vectors: NDArray[np.floating]) -> NDArray[np.float64]:
        """Return the Mahalanobis distance of each ``(N, d)`` vector."""
        return _mahalanobis(np.asarray(vectors, np.float64), self.mean, self._precision)

    def percentile(self, vectors: NDArray[np.floating]) -> NDArray[np.float64]:
        """Return each vector's distance as a percentile (0-100) of the training frames'."""
        d = self.distance(vectors)
        return 100.0 * np.searchsorted(self.scores, d, side="left") / len(self.scores)

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


def _mahalanobis(
    x: NDArray[np.float64], mean: NDArray[np.float64], precision: NDArray[np.float64]
) -> NDArray[np.float64]:
    diff = x - mean
    return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", diff, precision, diff), 0.0))


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
    """The trust table of a manifest: OOD Gaussians and the training latent statistics.

    Attributes
    ----------
    image : Gaussian
        Image statistics of the training frames.
    latent : Gaussian
        Pooled latent features (channel means) of the training frames.
    reference : FeatureStats
        Per-feature latent statistics of the training frames (the alignment reference),
        kept in :data:`REFERENCE_FILE` beside the manifest, whose SHA-256 the table holds.
    scanners : list of str
        The training frames' scanners (Manufacturer + Model Name).
    source : dict
        How the statistics were made (dataset, rows, command).
    """

    image: Gaussian
    latent: Gaussian
    reference: FeatureStats
    scanners: list[str]
    source: dict[str, Any]

    def score(
        self, images: NDArray[np.floating], pooled: NDArray[np.floating]
    ) -> NDArray[np.float64]:
        """Return each frame's OOD score: the larger of its two percentiles (0-100)."""
        return np.maximum(
            self.image.percentile(image_statistics(images)), self.latent.percentile(pooled)
        )

    def save(self, folder: str | Path) -> dict[str, Any]:
        """Write the reference file into ``folder``; return the manifest table (with digest)."""
        path = Path(folder) / REFERENCE_FILE
        ref = self.reference
        with open(path, "wb") as f:
            np.savez(f, count=np.int64(ref.count), mean=ref.mean, m2=ref.m2)
        body = {
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
        return {**body, "sha256": stats_digest(body)}

    @classmethod
    def load(cls, raw: Mapping[str, Any], folder: str | Path) -> TrustStats:
        """Read the manifest table and its reference file; ``ValueError`` on any mismatch."""
        body = {k: v for k, v in raw.items() if k != "sha256"}
        if stats_digest(body) != raw.get("sha256"):
            raise ValueError("trust statistics do not match their SHA-256")
        if tuple(raw.get("image_statistics", ())) != IMAGE_STATISTICS:
            raise ValueError("trust statistics were made with other image statistics")
        ref = raw["reference"]
        path = Path(folder) / str(ref["file"])
        if not path.is_file() or _sha256(path) != ref["sha256"]:
            raise ValueError(f"{path}: missing or does not match its SHA-256")
        with np.load(path) as npz:
            reference = FeatureStats(int(npz["count"]), npz["mean"], npz["m2"])
        return cls(
            Gaussian.from_dict(raw["image"]),
            Gaussian.from_dict(raw["latent"]),
            reference,
            [str(s) for s in raw.get("scanners", [])],
            dict(raw.get("source", {})),
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
