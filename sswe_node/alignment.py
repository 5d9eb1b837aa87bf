"""Scanner alignment at inference: per-scanner running latent statistics and the aligner.

Each frame's statistics key is the source's Manufacturer + Manufacturer's Model Name and the
image layout it was read from (``dual-swe``, ``bmode``): a dual display's B-mode panel and a
full-screen B-mode of the same scanner show different fields of view, so their latent
statistics differ as much as two scanners' do, and one running mean over a mixture of both
would pull each of them off the reference (a training scanner's own dual frames included).
Every batch adds its frames' latent maps to that key's running per-feature statistics (in
memory, or in the case store's ``scanner_stats`` table, :mod:`sswe_node.node.scanner_stats`);
frames of any key, once ``trust.align_min_frames`` of its frames have been seen, have each
latent feature mapped onto the training frames' mean and variance before decoding (AdaBN
style, no retraining). The skip connections and the input are left as they are: aligning
them too made the simulated second scanner's error much worse (docs/model.md). A training
scanner sending images like the training frames gets an alignment close to the identity.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from sswe_node.trust import FeatureStats, alignment

__all__ = ["MemoryScannerStats", "ScannerStatsStore", "make_aligner", "scanner_key"]


def scanner_key(ds: Dataset, layout: str | None = None) -> str:
    """Return the statistics key of an instance.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The source instance.
    layout : str, optional
        The layout its B-mode was read from (``"dual-swe"``, ``"bmode"``).

    Returns
    -------
    str
        ``"Manufacturer ManufacturerModelName"``, followed by ``" [layout]"`` when given.
    """
    manufacturer = str(ds.get("Manufacturer", "") or "").strip()
    model = str(ds.get("ManufacturerModelName", "") or "").strip()
    scanner = f"{manufacturer} {model}".strip()
    return f"{scanner} [{layout}]".strip() if layout else scanner


class ScannerStatsStore(Protocol):
    """Where per-scanner running statistics are kept."""

    def merge(self, model_name: str, scanner: str, stats: FeatureStats) -> FeatureStats:
        """Add ``stats`` to the scanner's running statistics and return the result."""
        ...


class MemoryScannerStats:
    """Running statistics in memory (``convert``, tests)."""

    def __init__(self) -> None:
        self._stats: dict[tuple[str, str], FeatureStats] = {}
        self._lock = threading.Lock()

    def merge(self, model_name: str, scanner: str, stats: FeatureStats) -> FeatureStats:
        """Add ``stats`` to the scanner's running statistics and return the result."""
        with self._lock:
            key = (model_name, scanner)
            merged = self._stats[key].merge(stats) if key in self._stats else stats
            self._stats[key] = merged
            return merged

    def get(self, model_name: str, scanner: str) -> FeatureStats | None:
        """Return the scanner's statistics, if any."""
        return self._stats.get((model_name, scanner))

    def all(self) -> dict[tuple[str, str], int]:
        """Return ``{(model_name, scanner): frames}`` of every key (as the stored ones do)."""
        with self._lock:
            return {key: int(stats.count) for key, stats in self._stats.items()}


def make_aligner(
    model: Any,
    scanners: Sequence[str],
    store: ScannerStatsStore | None,
    *,
    min_frames: int = 16,
    enabled: bool = True,
) -> Any:
    """Return an :class:`~sswe_node.model.Aligner` for frames of the given scanners.

    Parameters
    ----------
    model : sswe_node.model.PackagedModel
        The model (its trust statistics give the training scanners and reference).
    scanners : sequence of str
        Each frame's statistics key (:func:`scanner_key`, with the layout), in the order of
        the frames passed to ``model.infer``.
    store : ScannerStatsStore or None
        Running statistics; ``None``: no alignment and nothing recorded.
    min_frames : int
        Frames of a scanner needed before its frames are aligned.
    enabled : bool
        Whether to align (statistics are recorded either way).

    Returns
    -------
    callable or None
        ``None`` when the model has no trust statistics or there is no store.
    """
    trust = getattr(model, "trust", None)
    if trust is None or store is None:
        return None
    keys = np.asarray(list(scanners), dtype=object)
    name = str(model.manifest.name)

    def aligner(
        latent: NDArray[np.float32],
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_]]:
        n, features = latent.shape
        scale = np.ones((n, features), np.float32)
        shift = np.zeros((n, features), np.float32)
        aligned = np.zeros(n, bool)
        for scanner in dict.fromkeys(keys):
            sel = keys == scanner
            merged = store.merge(name, str(scanner), FeatureStats.from_frames(latent[sel]))
            if not enabled or merged.count < min_frames:
                continue
            a, b = alignment(merged, trust.reference)
            scale[sel], shift[sel], aligned[sel] = a, b, True
        return scale, shift, aligned

    return aligner
