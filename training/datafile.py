"""The training dataset file: one HDF5 file of model-grid images, labels, masks and metadata.

Layout (format ``sswe-dataset``, version 1)::

    /images        float32 (N, rows, cols)  B-mode on the model grid, scaled 0-1
    /labels        float32 (N, rows, cols)  SWE values in ``unit`` (kPa or m/s); NaN = no label
    /confidence    float32 (N, rows, cols)  SWE confidence 0-1 (0 where there is no label)
    /meta/<column> 1-D arrays, one entry per image (see ``META_COLUMNS``)
    /processed/sop_uid, /processed/outcome
                   every instance a build has looked at, with its outcome ("ok" or a
                   rejection reason), so an incremental rebuild skips them
    attributes: format, version, grid, manifest (JSON: build command, counts, rejections)

Unlabelled images (full-screen B-mode, scanners without SWE) have ``labelled == False`` and
all-NaN labels. Rows are appended in chunks, so a file can grow incrementally.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

FORMAT_NAME = "sswe-dataset"
FORMAT_VERSION = 1

#: Per-image metadata columns and their kinds ("str", "int", "float", "bool").
META_COLUMNS: dict[str, str] = {
    "patient_key": "str",  # pseudonymised patient identifier (keyed hash)
    "study_uid": "str",
    "series_uid": "str",
    "sop_uid": "str",
    "frame": "int",
    "manufacturer": "str",
    "model_name": "str",
    "organ": "str",
    "quantity": "str",  # "youngs-modulus" or "shear-wave-speed"
    "unit": "str",  # "kPa" or "m/s"
    "layout": "str",  # "dual-swe" or "bmode"
    "labelled": "bool",
    "spacing_row_mm": "float",  # physical spacing of the source ROI pixels
    "spacing_col_mm": "float",
    "roi_rows": "int",  # size of the source ROI in pixels
    "roi_cols": "int",
    "confident_fraction": "float",  # fraction of ROI pixels with confidence > 0.75
    # the colour-bar scale a labelled row was decoded at, and where it came from
    # ("private-data", "image-labels", "option"; sswe_node.imaging.scale); NaN / "" else
    "scale_min": "float",
    "scale_max": "float",
    "scale_unit": "str",
    "scale_source": "str",
}
#: Columns added after format version 1 was first written: files without them read (and
#: grow) with the default value in the rows written before.
_LATER_COLUMNS = ("scale_min", "scale_max", "scale_unit", "scale_source")
_DEFAULTS = {"str": "", "int": -1, "float": np.nan, "bool": False}

_STR = h5py.string_dtype("utf-8")


@dataclass
class Sample:
    """One image of a dataset, on the model grid."""

    image: NDArray[np.float32]
    label: NDArray[np.float32] | None
    confidence: NDArray[np.float32] | None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetArrays:
    """A dataset file read into memory."""

    images: NDArray[np.float32]
    labels: NDArray[np.float32]
    confidence: NDArray[np.float32]
    meta: dict[str, NDArray[Any]]
    manifest: dict[str, Any]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: NDArray[np.intp] | NDArray[np.bool_]) -> DatasetArrays:
        """Return the rows selected by an index or mask."""
        return DatasetArrays(
            images=self.images[index],
            labels=self.labels[index],
            confidence=self.confidence[index],
            meta={k: v[index] for k, v in self.meta.items()},
            manifest=self.manifest,
        )


#: HDF5 dtype of each kind of metadata column.
_DTYPES: dict[str, Any] = {"str": _STR, "int": np.int64, "float": np.float64, "bool": bool}


class DatasetWriter:
    """Append samples to a dataset file (created if absent).

    Parameters
    ----------
    path : path-like
        The HDF5 file.
    grid : tuple of int
        Model grid ``(rows, cols)``; must match an existing file's grid.

    Examples
    --------
    >>> with DatasetWriter("train.h5", grid=(96, 64)) as writer:  # doctest: +SKIP
    ...     writer.append([sample])
    ...     writer.set_manifest({"command": "sswe-node dataset build ..."})
    """

    def __init__(self, path: str | Path, grid: tuple[int, int] = (96, 64)) -> None:
        self.path = Path(path)
        self.grid = tuple(int(g) for g in grid)
        self._file = h5py.File(self.path, "a")
        f = self._file
        if "images" not in f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["version"] = FORMAT_VERSION
            f.attrs["grid"] = np.asarray(self.grid)
            f.attrs["manifest"] = "{}"
            rows, cols = self.grid
            for name in ("images", "labels", "confidence"):
                f.create_dataset(
                    name,
                    shape=(0, rows, cols),
                    maxshape=(None, rows, cols),
                    dtype=np.float32,
                    chunks=(64, rows, cols),
                    compression="lzf",
                )
            meta = f.create_group("meta")
            for column, kind in META_COLUMNS.items():
                meta.create_dataset(
                    column, shape=(0,), maxshape=(None,), dtype=_DTYPES[kind], chunks=True
                )
            _create_processed(f)
        else:
            try:
                _check_format(f, self.path)
                stored = tuple(int(g) for g in f.attrs["grid"])
                if stored != self.grid:
                    raise ValueError(f"{self.path}: grid {stored} != {self.grid}")
            except ValueError:
                f.close()  # refused: do not keep the file open (and locked) for writing
                raise
            n = int(f["images"].shape[0])
            for column in _LATER_COLUMNS:
                if column not in f["meta"]:
                    kind = META_COLUMNS[column]
                    ds = f["meta"].create_dataset(
                        column, shape=(n,), maxshape=(None,), dtype=_DTYPES[kind], chunks=True
                    )
                    if n:
                        ds[:] = _default_column(kind, n)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()

    def __len__(self) -> int:
        return int(self._file["images"].shape[0])

    def sop_uids(self) -> set[str]:
        """Return the SOP Instance UIDs already in the file (for incremental builds)."""
        return {s.decode() if isinstance(s, bytes) else s for s in self._file["meta/sop_uid"][:]}

    def counts(self) -> dict[str, int]:
        """Return ``rows``, ``labelled``, ``unlabelled`` and ``instances`` (looked at) so far."""
        labelled = int(np.count_nonzero(self._file["meta/labelled"][:]))
        instances = (
            int(self._file["processed/sop_uid"].shape[0])
            if "processed" in self._file
            else len(self.sop_uids())
        )
        return {
            "rows": len(self),
            "labelled": labelled,
            "unlabelled": len(self) - labelled,
            "instances": instances,
        }

    def processed(self) -> dict[str, str]:
        """Return ``{sop_uid: outcome}`` of every instance already looked at by a build."""
        if "processed" not in self._file:
            return {uid: "ok" for uid in self.sop_uids()}
        group = self._file["processed"]
        uids = group["sop_uid"].asstr()[:]
        outcomes = group["outcome"].asstr()[:]
        return dict(zip(uids, outcomes, strict=True))

    def mark_processed(self, outcomes: Iterable[tuple[str, str]]) -> None:
        """Record ``(sop_uid, outcome)`` pairs; outcome is ``"ok"`` or a rejection reason."""
        outcomes = list(outcomes)
        if not outcomes:
            return
        if "processed" not in self._file:
            _create_processed(self._file)
            self.mark_processed((uid, "ok") for uid in sorted(self.sop_uids()))
        group = self._file["processed"]
        n0 = group["sop_uid"].shape[0]
        n1 = n0 + len(outcomes)
        for column, values in zip(("sop_uid", "outcome"), zip(*outcomes, strict=True), strict=True):
            group[column].resize(n1, axis=0)
            group[column][n0:n1] = np.asarray(values, dtype=object)

    def append(self, samples: Iterable[Sample]) -> int:
        """Append samples; return how many were written."""
        samples = list(samples)
        if not samples:
            return 0
        f = self._file
        n0 = len(self)
        n1 = n0 + len(samples)
        rows, cols = self.grid
        nan = np.full((rows, cols), np.nan, np.float32)
        zero = np.zeros((rows, cols), np.float32)
        arrays = {
            "images": np.stack([s.image for s in samples]),
            "labels": np.stack([nan if s.label is None else s.label for s in samples]),
            "confidence": np.stack(
                [zero if s.confidence is None else s.confidence for s in samples]
            ),
        }
        for name, values in arrays.items():
            if values.shape[1:] != (rows, cols):
                raise ValueError(f"{name} shape {values.shape[1:]} != grid {(rows, cols)}")
            f[name].resize(n1, axis=0)
            f[name][n0:n1] = values.astype(np.float32)
        for column, kind in META_COLUMNS.items():
            default = {"str": "", "int": -1, "float": np.nan, "bool": False}[kind]
            values = [s.meta.get(column, default) for s in samples]
            ds = f["meta"][column]
            ds.resize(n1, axis=0)
            ds[n0:n1] = np.asarray(values, dtype=object if kind == "str" else ds.dtype)
        return len(samples)

    def set_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Store the build manifest (JSON-serialisable mapping)."""
        self._file.attrs["manifest"] = json.dumps(manifest, indent=2, sort_keys=True, default=str)

    def manifest(self) -> dict[str, Any]:
        """Return the stored build manifest."""
        return json.loads(self._file.attrs["manifest"])


def _create_processed(f: h5py.File) -> None:
    group = f.create_group("processed")
    for column in ("sop_uid", "outcome"):
        group.create_dataset(column, shape=(0,), maxshape=(None,), dtype=_STR, chunks=(4096,))


def dataset_summary(path: str | Path) -> dict[str, Any]:
    """Summarise a dataset file without reading its image arrays.

    Parameters
    ----------
    path : path-like
        The HDF5 file written by :class:`DatasetWriter`.

    Returns
    -------
    dict
        ``rows``, ``labelled``, ``unlabelled``, ``patients``, ``grid``, ``format``,
        ``version``, ``by_layout``, ``by_manufacturer``, ``by_organ``, ``by_quantity``
        (counts of rows) and ``manifest``.
    """
    path = Path(path)
    with h5py.File(path, "r") as f:
        _check_format(f, path)
        meta = f["meta"]
        labelled = meta["labelled"][:]

        def counts(column: str) -> dict[str, int]:
            values, n = np.unique(meta[column].asstr()[:], return_counts=True)
            return {str(v): int(c) for v, c in zip(values, n, strict=True)}

        return {
            "file": str(path),
            "format": str(f.attrs["format"]),
            "version": int(f.attrs["version"]),
            "grid": [int(g) for g in f.attrs["grid"]],
            "rows": int(f["images"].shape[0]),
            "labelled": int(np.count_nonzero(labelled)),
            "unlabelled": int(labelled.size - np.count_nonzero(labelled)),
            "patients": len(np.unique(meta["patient_key"].asstr()[:])),
            "by_layout": counts("layout"),
            "by_manufacturer": counts("manufacturer"),
            "by_organ": counts("organ"),
            "by_quantity": counts("quantity"),
            "manifest": json.loads(f.attrs["manifest"]),
        }


def _check_format(f: h5py.File, path: Path) -> None:
    if f.attrs.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: not an sswe-dataset file")
    if int(f.attrs.get("version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path}: dataset format version {f.attrs['version']} is too new")


def _default_column(kind: str, n: int) -> NDArray[Any]:
    """Return ``n`` default values of a metadata column of ``kind``."""
    if kind == "str":
        return np.asarray([""] * n, dtype=object)
    return np.full(n, _DEFAULTS[kind], dtype=_DTYPES[kind])


def read_dataset(path: str | Path) -> DatasetArrays:
    """Read a whole dataset file into memory.

    Parameters
    ----------
    path : path-like
        The HDF5 file written by :class:`DatasetWriter`.

    Returns
    -------
    DatasetArrays
    """
    path = Path(path)
    with h5py.File(path, "r") as f:
        _check_format(f, path)
        meta = {}
        rows = int(f["images"].shape[0])
        for column, kind in META_COLUMNS.items():
            if column not in f["meta"] and column in _LATER_COLUMNS:
                meta[column] = _default_column(kind, rows)
                continue
            values = f["meta"][column][:]
            if kind == "str":
                values = np.asarray([v.decode() if isinstance(v, bytes) else v for v in values])
            meta[column] = values
        return DatasetArrays(
            images=f["images"][:],
            labels=f["labels"][:],
            confidence=f["confidence"][:],
            meta=meta,
            manifest=json.loads(f.attrs["manifest"]),
        )


def split_by_patient(
    patient_keys: NDArray[Any], fractions: tuple[float, ...], seed: int
) -> list[NDArray[np.intp]]:
    """Split row indices into groups by patient, never splitting a patient.

    Parameters
    ----------
    patient_keys : numpy.ndarray
        One patient key per row.
    fractions : tuple of float
        Fractions of patients per split (e.g. ``(0.7, 0.1, 0.2)``); normalised to sum 1.
    seed : int
        Seed of the patient shuffle.

    Returns
    -------
    list of numpy.ndarray
        Row indices of each split.
    """
    patients = np.unique(np.asarray(patient_keys))
    rng = np.random.default_rng(seed)
    rng.shuffle(patients)
    weights = np.asarray(fractions, dtype=float) / float(np.sum(fractions))
    bounds = np.round(np.cumsum(weights) * len(patients)).astype(int)
    groups = np.split(patients, bounds[:-1])
    return [np.flatnonzero(np.isin(patient_keys, g)) for g in groups]


def split_rows(
    meta: Mapping[str, NDArray[Any]], quantity: str, fractions: Iterable[float], seed: int
) -> list[NDArray[np.intp]]:
    """Split the labelled rows of one quantity into train/validation/test by patient.

    Only patients with labelled images of ``quantity`` take part, so that unlabelled
    images (other scanners, full-screen B-mode) never shrink the labelled splits.

    Parameters
    ----------
    meta : mapping
        The dataset's metadata columns (``labelled``, ``quantity``, ``patient_key``).
    quantity : str
        The quantity whose labelled rows are split.
    fractions : iterable of float
        Fractions of patients per split (train, validation, test).
    seed : int
        Seed of the patient shuffle.

    Returns
    -------
    list of numpy.ndarray
        Row indices (into the whole dataset) of the train, validation and test splits.
    """
    rows = np.flatnonzero(meta["labelled"].astype(bool) & (meta["quantity"] == quantity))
    parts = split_by_patient(meta["patient_key"][rows], tuple(fractions), int(seed))
    return [rows[part] for part in parts]


def patients_digest(keys: Iterable[Any]) -> str:
    """Return a SHA-256 over the sorted patient keys of a split (to check splits later)."""
    text = "\n".join(sorted({str(k) for k in keys}))
    return hashlib.sha256(text.encode()).hexdigest()
