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

With ``[inference] align_depth = true`` (or ``"rows"``: depth only; off by default) a key's
frames are aligned to a *depth-matched* reference: latent row ``r`` of a key whose grid
cells are ``cell`` mm is compared with the training frames' statistics at the same physical
depth, i.e. the reference's per-position mean and variance resampled along rows (from the
skin line) and columns (about the centre line) by ``cell / spacing_mm``
(:func:`depth_matched`). The key's cell size is the running mean of its frames'
(``infer(spacing=)``, kept in the store under ``"spacing: " + key``); frames without a known
spacing keep the per-position reference. It made the simulated second scanner's latent maps
more separable from the training frames' (5-NN 0.59 -> 0.72 on the development patients)
and is left off (docs/model.md).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from sswe_node.trust import FeatureStats, alignment

__all__ = [
    "MemoryScannerStats",
    "ScannerStatsStore",
    "depth_matched",
    "key_alignment",
    "make_aligner",
    "scanner_key",
]


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
    depth: Sequence[int] | None = None,
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
    depth : sequence of int, optional
        The axes (0 rows, 1 columns) along which frames of a known spacing get the
        depth-matched reference (:func:`depth_matched`); default the manifest's
        ``[inference] align_depth`` (:func:`depth_matching`; none).

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
    if depth is None:
        depth = depth_matching(model)
    return _Aligner(model, scanners, store, min_frames, enabled, depth)


#: Prefix of the key under which a statistics key's output-level change is kept.
LEVEL_PREFIX = "level: "
#: Prefix of the key under which a statistics key's per-pixel output change is kept.
POSITION_LEVEL_PREFIX = "position level: "
#: Prefix of the key under which a statistics key's running grid-cell size (mm) is kept.
SPACING_PREFIX = "spacing: "


#: ``[inference] align_depth`` values and the axes they match (rows, columns).
DEPTH_MATCHING = {"none": (), "rows": (0,), "rows+cols": (0, 1)}


def depth_matching(model: Any) -> tuple[int, ...]:
    """Return the axes the model's manifest asks to match (``[inference] align_depth``).

    ``false`` / ``"none"`` (the default): none; ``"rows"``: depth only; ``true`` /
    ``"rows+cols"``: depth and the lateral position.
    """
    raw = getattr(getattr(model, "manifest", None), "inference", None) or {}
    value = raw.get("align_depth", False)
    if isinstance(value, bool):
        value = "rows+cols" if value else "none"
    if str(value) not in DEPTH_MATCHING:
        raise ValueError(f"[inference] align_depth must be a bool or one of {list(DEPTH_MATCHING)}")
    return DEPTH_MATCHING[str(value)]


def latent_shape(model: Any, features: int) -> tuple[int, int, int]:
    """Return the ``(h, w, C)`` shape of a model's flattened latent map of ``features``."""
    rows, cols = (int(g) for g in model.manifest.grid)
    channels = int(model.latent_channels)
    cell = int(round(np.sqrt(rows * cols * channels / features)))
    shape = (rows // cell, cols // cell, channels)
    if int(np.prod(shape)) != features:
        raise ValueError(f"{features} latent features do not fit the grid {rows}x{cols}")
    return shape


def _matched_positions(size: int, ratio: float, centred: bool) -> NDArray[np.float64]:
    """Return, for each of ``size`` cells, the reference index at the same physical place."""
    centre = size / 2.0 if centred else 0.0
    where = (np.arange(size) + 0.5 - centre) * ratio + centre - 0.5
    return np.clip(where, 0.0, size - 1.0)


def _interpolate(values: NDArray[np.float64], where: NDArray[np.float64], axis: int) -> NDArray:
    """Linear interpolation of ``values`` at fractional indices ``where`` along ``axis``."""
    low = np.floor(where).astype(np.intp)
    high = np.minimum(low + 1, values.shape[axis] - 1)
    weight = (where - low).reshape([-1 if a == axis else 1 for a in range(values.ndim)])
    return np.take(values, low, axis) * (1 - weight) + np.take(values, high, axis) * weight


def depth_matched(
    reference: FeatureStats, shape: Sequence[int], ratio: Sequence[float]
) -> FeatureStats:
    """Return the reference seen at another grid-cell size: the same physical places.

    Parameters
    ----------
    reference : FeatureStats
        Per-position statistics of the training frames' flattened ``(h, w, C)`` latent maps,
        at the model's ``spacing_mm``.
    shape : sequence of int
        ``(h, w, C)``.
    ratio : sequence of float
        ``(row, col)`` grid-cell size of the frames to align divided by ``spacing_mm``.

    Returns
    -------
    FeatureStats
        Row ``r`` holds the reference's mean and variance at depth ``(r + 0.5) * ratio`` of
        its own rows (row 0 is the skin line), linearly interpolated; columns likewise about
        the centre line (the probe's axis). Places beyond the reference's first or last row
        or column take that row's or column's statistics (the nearest depth the training
        frames saw). A ratio of 1 gives the reference itself.
    """
    h, w, c = (int(v) for v in shape)
    mean = np.asarray(reference.mean, np.float64).reshape(h, w, c)
    variance = np.asarray(reference.variance, np.float64).reshape(h, w, c)
    for axis, size, centred in ((0, h, False), (1, w, True)):
        if float(ratio[axis]) == 1.0:
            continue
        where = _matched_positions(size, float(ratio[axis]), centred)
        mean = _interpolate(mean, where, axis)
        variance = _interpolate(variance, where, axis)
    count = max(1, int(reference.count))
    return FeatureStats(count, mean.reshape(-1), variance.reshape(-1) * count)


def key_alignment(
    model: Any,
    target: FeatureStats,
    cell: Sequence[float] | None = None,
    axes: Sequence[int] = (0, 1),
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Return a key's ``(scale, shift)``: to the reference, depth-matched when ``cell`` is given.

    ``cell`` is the key's mean ``(row, col)`` grid-cell size in mm (``None`` or NaN: the
    per-position reference, as without depth matching); ``axes`` those matched (0 rows,
    1 columns).
    """
    reference = model.trust.reference
    if cell is not None and np.all(np.isfinite(cell)) and len(axes):
        ratio = np.asarray(cell, np.float64) / np.asarray(model.manifest.spacing_mm, np.float64)
        ratio = np.where(np.isin([0, 1], list(axes)), ratio, 1.0)
        shape = latent_shape(model, len(reference.mean))
        reference = depth_matched(reference, shape, ratio)
    return alignment(target, reference)


class _Aligner:
    """Aligns frames of their keys' running statistics; keeps each key's output level."""

    def __init__(
        self,
        model: Any,
        scanners: Sequence[str],
        store: ScannerStatsStore,
        min_frames: int,
        enabled: bool,
        depth: Sequence[int] = (),
    ) -> None:
        self.keys = np.asarray(list(scanners), dtype=object)
        self.name = str(model.manifest.name)
        self.model = model
        self.reference = model.trust.reference
        self.store, self.min_frames, self.enabled = store, int(min_frames), bool(enabled)
        #: ``infer`` passes the frames' spacing to aligners that set this (depth matching).
        self.uses_spacing = bool(len(depth))
        self.axes = tuple(depth)

    def __call__(
        self, latent: NDArray[np.float32], spacing: NDArray[np.floating] | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_]]:
        """Add the frames to their keys' statistics; return each frame's alignment.

        ``spacing`` (``(N, 2)`` grid-cell sizes in mm, NaN unknown) is used only with depth
        matching: the frames of a known spacing are added to their key's running cell size
        and aligned to the reference at that cell size; the others get the plain reference.
        """
        n, features = latent.shape
        scale = np.ones((n, features), np.float32)
        shift = np.zeros((n, features), np.float32)
        aligned = np.zeros(n, bool)
        known = np.zeros(n, bool)
        if self.uses_spacing and spacing is not None:
            cells = np.asarray(spacing, np.float64).reshape(n, 2)
            known = np.isfinite(cells).all(axis=1)
        for scanner in dict.fromkeys(self.keys):
            sel = self.keys == scanner
            stats = FeatureStats.from_frames(latent[sel])
            merged = self.store.merge(self.name, str(scanner), stats)
            cell = None
            if (sel & known).any():
                kept = FeatureStats.from_frames(cells[sel & known])
                cell = self.store.merge(self.name, SPACING_PREFIX + str(scanner), kept).mean
            if not self.enabled or merged.count < self.min_frames:
                continue
            if cell is not None:
                part = sel & known
                scale[part], shift[part] = key_alignment(self.model, merged, cell, self.axes)
            part = sel & ~known
            if part.any():
                scale[part], shift[part] = alignment(merged, self.reference)
            aligned[sel] = True
        return scale, shift, aligned

    def level(self, change: NDArray[np.floating]) -> NDArray[np.float64]:
        """Return the running mean of what the alignment takes away from each key's output.

        ``change`` is each frame's unaligned minus aligned output (NaN: not aligned): its
        mean, ``(N,)`` (``align_level = "scanner"``; kept in the store under ``"level: " +
        key``), or each pixel, ``(N, rows, cols)`` (``"position"``; under ``"position level: "
        + key``). It is added to the key's running mean, which is returned, in the same
        shape, for the key's aligned frames (NaN for the others).
        """
        change = np.asarray(change, np.float64)
        flat = change.reshape(len(change), -1)
        prefix = LEVEL_PREFIX if change.ndim == 1 else POSITION_LEVEL_PREFIX
        out = np.full(flat.shape, np.nan)
        done = np.isfinite(flat).all(axis=1)
        for scanner in dict.fromkeys(self.keys[done]):
            sel = done & (self.keys == scanner)
            stats = FeatureStats.from_frames(flat[sel])
            merged = self.store.merge(self.name, prefix + str(scanner), stats)
            out[sel] = merged.mean
        return out.reshape(change.shape)
