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
style, no retraining), and each aligned frame's map is shifted back by the running mean of
the output level the alignment took away from its key's frames: the alignment corrects the
maps' pattern, not the scanner's level (without that it lowered the simulated second
scanner's maps by ~0.7 kPa and made their error worse, docs/model.md). The skip connections
and the input are left as they are: aligning them too made the simulated second scanner's
error much worse (docs/model.md). A training scanner sending images like the training frames
gets an alignment close to the identity.
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
        ``None`` when the model has no trust statistics or there is no store. Its ``level``
        method keeps each key's running mean of the output level its alignment takes away
        (``[inference] align_level = "scanner"``, :class:`~sswe_node.model.InferenceSettings`).
    """
    trust = getattr(model, "trust", None)
    if trust is None or store is None:
        return None
    return _Aligner(model, scanners, store, min_frames, enabled)


#: Prefix of the key under which a statistics key's output-level change is kept.
LEVEL_PREFIX = "level: "


class _Aligner:
    """Aligns frames of their keys' running statistics; keeps each key's output level."""

    def __init__(
        self,
        model: Any,
        scanners: Sequence[str],
        store: ScannerStatsStore,
        min_frames: int,
        enabled: bool,
    ) -> None:
        self.keys = np.asarray(list(scanners), dtype=object)
        self.name = str(model.manifest.name)
        self.reference = model.trust.reference
        self.store, self.min_frames, self.enabled = store, int(min_frames), bool(enabled)

    def __call__(
        self, latent: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_]]:
        """Add the frames to their keys' statistics; return each frame's alignment."""
        n, features = latent.shape
        scale = np.ones((n, features), np.float32)
        shift = np.zeros((n, features), np.float32)
        aligned = np.zeros(n, bool)
        for scanner in dict.fromkeys(self.keys):
            sel = self.keys == scanner
            stats = FeatureStats.from_frames(latent[sel])
            merged = self.store.merge(self.name, str(scanner), stats)
            if not self.enabled or merged.count < self.min_frames:
                continue
            a, b = alignment(merged, self.reference)
            scale[sel], shift[sel], aligned[sel] = a, b, True
        return scale, shift, aligned

    def level(self, change: NDArray[np.floating]) -> NDArray[np.float64]:
        """Return the running mean of each aligned frame's key's output-level change.

        ``change`` is each frame's unaligned minus aligned mean output (NaN: not aligned);
        it is added to the key's running mean (kept in the store under ``"level: " + key``),
        which is returned for the key's aligned frames (NaN for the others).
        """
        change = np.asarray(change, np.float64)
        out = np.full(len(change), np.nan)
        done = np.isfinite(change)
        for scanner in dict.fromkeys(self.keys[done]):
            sel = done & (self.keys == scanner)
            stats = FeatureStats.from_frames(change[sel, None])
            merged = self.store.merge(self.name, LEVEL_PREFIX + str(scanner), stats)
            out[sel] = float(merged.mean[0])
        return out
