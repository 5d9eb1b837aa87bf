"""Build a training dataset file from a folder of DICOM files (DICOMDIR too), incrementally."""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.fileset import FileSet

from sswe_node.errors import ConfigError, SsweError
from sswe_node.quantities import QUANTITY_UNITS
from training.datafile import DatasetWriter, Sample
from training.pseudonym import PseudonymKey

logger = logging.getLogger(__name__)

NOTICE = (
    "Research dataset of ultrasound images and SWE labels for training synthetic SWE (sSWE) "
    "models; derived data, not for diagnosis."
)
#: Confidence above which an SWE pixel counts as reliable (the paper's 0.75).
CONFIDENT = 0.75
#: Rejections of files (not of instances), found again by every walk of the folder.
FILE_REASONS = frozenset({"not-dicom", "unreadable-header", "duplicate"})
#: The quantity an organ's elastograms usually show when ``--quantity`` is not given: thyroid
#: SWE is read as shear-wave speed (m/s), prostate and the others as Young's modulus (kPa).
ORGAN_QUANTITY = {"thyroid": "shear-wave-speed"}
DEFAULT_QUANTITY = "youngs-modulus"
#: Options that must stay the same across incremental builds of one file.
_STABLE_OPTIONS = ("grid", "organ", "min_coverage", "scale", "quantity", "opacity", "max_frames")


@dataclass(frozen=True)
class BuildOptions:
    """How instances are turned into dataset rows.

    Attributes
    ----------
    grid : tuple of int
        Model grid ``(rows, cols)``.
    organ : str, optional
        Organ written to every row; default: BodyPartExamined (lower case) of each instance.
    min_coverage : float
        Minimum fraction of SWE-box pixels with confidence > 0.75 for a labelled row.
    scale : tuple of float, optional
        Colour bar range ``(min, max)`` for decoding elastograms (passed to ``read_instance``).
    quantity : str, optional
        ``"youngs-modulus"`` (kPa) or ``"shear-wave-speed"`` (m/s) shown by the elastograms.
        Default: follow the organ (`quantity_for_organ`), at once when ``organ`` is given,
        else per instance from its BodyPartExamined (then ``None`` here).
    opacity : float, optional
        Known elastogram overlay opacity (0-1]; estimated per frame when not given (slower).
    max_frames : int
        At most this many frames per multi-frame instance.
    workers : int
        Processes reading and regridding instances (1: in this process).
    chunk : int
        Rows written per append.
    progress : bool
        Show a progress bar on standard error.
    scheduler : str, optional
        Read and regrid on a Dask cluster at this address (``"local"``: a LocalCluster of
        ``workers`` processes); rows are written in the same order as a local build.
    """

    grid: tuple[int, int] = (96, 64)
    organ: str | None = None
    min_coverage: float = 0.2
    scale: tuple[float, float] | None = None
    quantity: str | None = None
    opacity: float | None = None
    max_frames: int = 16
    workers: int = 2
    chunk: int = 256
    progress: bool = False
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_coverage <= 1.0:
            raise ConfigError(f"--min-coverage must be within 0-1, got {self.min_coverage}")
        if self.workers < 1 or self.max_frames < 1 or self.chunk < 1:
            raise ConfigError("--workers, --max-frames and the chunk size must be at least 1")
        if self.opacity is not None and not 0.0 < self.opacity <= 1.0:
            raise ConfigError(f"--opacity must be within (0, 1], got {self.opacity}")
        if len(self.grid) != 2 or min(self.grid) < 8:
            raise ConfigError(f"--grid must be two sizes >= 8, got {self.grid}")
        if self.quantity is not None and self.quantity not in QUANTITY_UNITS:
            raise ConfigError(
                f"--quantity must be one of {', '.join(QUANTITY_UNITS)}, got {self.quantity!r}"
            )
        if self.quantity is None and self.organ:
            object.__setattr__(self, "quantity", quantity_for_organ(self.organ))

    def stable(self) -> dict[str, Any]:
        """Return the options that define the file's content (kept in the manifest)."""
        values = asdict(self)
        return {
            k: (list(values[k]) if isinstance(values[k], tuple) else values[k])
            for k in _STABLE_OPTIONS
        }


def quantity_for_organ(organ: str | None) -> str:
    """Return the quantity an organ's elastograms show by default.

    Parameters
    ----------
    organ : str, optional
        Organ name or BodyPartExamined, any case.

    Returns
    -------
    str
        ``"shear-wave-speed"`` for the thyroid, else ``"youngs-modulus"``.

    Examples
    --------
    >>> quantity_for_organ("THYROID"), quantity_for_organ("prostate"), quantity_for_organ(None)
    ('shear-wave-speed', 'youngs-modulus', 'youngs-modulus')
    """
    return ORGAN_QUANTITY.get(str(organ or "").strip().lower(), DEFAULT_QUANTITY)


@dataclass
class BuildReport:
    """Counts of one build (added to the manifest)."""

    files: int = 0
    instances_new: int = 0
    instances_skipped: int = 0
    rows: int = 0
    labelled: int = 0
    unlabelled: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    interrupted: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable view."""
        out = asdict(self)
        out["rejections"] = dict(sorted(self.rejections.items()))
        return out


@dataclass
class _Outcome:
    """What one instance gave (returned from worker processes)."""

    sop_uid: str
    samples: list[Sample]
    rejections: list[str]


def find_dicom_files(root: str | Path) -> list[Path]:
    """List candidate DICOM files under ``root``, recursively, including DICOMDIR references.

    Hidden files and folders (name starting with ``.``) and partial downloads (``*.part``) are
    ignored; a DICOMDIR itself is not listed but the files it references are (even where the
    walk would not find them).

    Parameters
    ----------
    root : path-like
        A folder (or a single file).

    Returns
    -------
    list of Path
        Sorted, without repeats.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ConfigError(f"{root}: no such folder")
    found: set[Path] = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith(".") or name.endswith(".part"):
                continue
            path = Path(folder) / name
            if name.upper() == "DICOMDIR":
                found.update(_dicomdir_files(path))
            else:
                found.add(path)
    return sorted(found)


def _dicomdir_files(path: Path) -> list[Path]:
    try:
        fileset = FileSet(dcmread(path))
    except Exception as exc:  # noqa: BLE001 - a broken DICOMDIR must not stop the walk
        logger.warning("%s: unreadable DICOMDIR (%s); walking the folder only", path, exc)
        return []
    return [Path(instance.path) for instance in fileset]


def _scan(path: Path) -> tuple[Path, str | None, str]:
    """Read only the SOP Instance UID; return ``(path, uid or None, reason)``."""
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    except InvalidDicomError:
        return path, None, "not-dicom"
    except Exception:  # noqa: BLE001 - any unreadable header is one rejection, not a crash
        return path, None, "unreadable-header"
    uid = str(ds.get("SOPInstanceUID", "") or "")
    return path, (uid or None), ("" if uid else "unreadable-header")


def _layout_name(layout: Any) -> str:
    return str(getattr(layout, "value", layout))


def _spacing(reading: Any) -> tuple[float, float]:
    if reading.spacing_mm is None:
        return float("nan"), float("nan")
    return float(reading.spacing_mm[0]), float(reading.spacing_mm[1])


def _process(path: Path, sop_uid: str, *, options: BuildOptions, secret: bytes) -> _Outcome:
    """Read one instance and turn its frames into samples (runs in a worker process)."""
    from sswe_node.imaging import Layout, read_instance

    outcome = _Outcome(sop_uid, [], [])
    try:
        ds = dcmread(path)
        organ = options.organ or str(ds.get("BodyPartExamined", "") or "").strip().lower()
        readings = read_instance(
            ds,
            grid=options.grid,
            scale=options.scale,
            max_frames=options.max_frames,
            quantity=options.quantity or quantity_for_organ(organ),
            opacity=options.opacity,
        )
    except SsweError as exc:
        outcome.rejections.append(exc.reason)
        return outcome
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop a long build
        logger.warning("instance %s: unexpected %s: %s", sop_uid, type(exc).__name__, exc)
        outcome.rejections.append("internal")
        return outcome
    if not readings:
        outcome.rejections.append("no-frames")
        return outcome
    key = PseudonymKey(secret, "worker")
    common = {
        "patient_key": key.patient_key(
            str(ds.get("PatientID", "") or ""), str(ds.get("StudyInstanceUID", ""))
        ),
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "sop_uid": sop_uid,
        "manufacturer": str(ds.get("Manufacturer", "") or ""),
        "model_name": str(ds.get("ManufacturerModelName", "") or ""),
        "organ": organ,
    }
    for reading in sorted(readings, key=lambda r: r.frame):
        try:
            sample = _sample(reading, Layout, options, common)
        except SsweError as exc:
            outcome.rejections.append(exc.reason)
            continue
        except Exception as exc:  # noqa: BLE001
            logger.warning("instance %s frame %d: unexpected %s", sop_uid, reading.frame, exc)
            outcome.rejections.append("internal")
            continue
        if isinstance(sample, str):
            outcome.rejections.append(sample)
        else:
            outcome.samples.append(sample)
    return outcome


def _sample(reading: Any, layout_enum: Any, options: BuildOptions, common: dict) -> Sample | str:
    """Return the sample of one frame, or a rejection reason."""
    row, col = _spacing(reading)
    roi = reading.roi
    meta = dict(
        common,
        frame=int(reading.frame),
        layout=_layout_name(reading.layout),
        spacing_row_mm=row,
        spacing_col_mm=col,
        roi_rows=int(roi.bottom - roi.top),
        roi_cols=int(roi.right - roi.left),
    )
    image = np.asarray(reading.model_input(options.grid), dtype=np.float32)
    # the scale the row was decoded at and where it came from (sswe_node.imaging.scale)
    scale = getattr(reading, "scale", None)
    meta.update(
        scale_min=float(scale[0]) if scale is not None else float("nan"),
        scale_max=float(scale[1]) if scale is not None else float("nan"),
        scale_unit=str(reading.unit or "") if scale is not None else "",
        scale_source=str(getattr(reading, "scale_source", None) or ""),
    )
    if reading.layout != layout_enum.DUAL_SWE:
        meta.update(labelled=False, quantity="", unit="", confident_fraction=float("nan"))
        return Sample(image=image, label=None, confidence=None, meta=meta)
    if reading.overlay_roi is None:
        return "no-swe-box"
    if reading.swe is None:  # a box but no values: no colour bar scale was given
        return "no-scale"
    if reading.confidence is not None:
        fraction = float(np.mean(np.asarray(reading.confidence) > CONFIDENT))
    else:  # scanners without a confidence map: every decoded pixel counts
        fraction = float(np.mean(np.isfinite(reading.swe)))
    if fraction < options.min_coverage:
        return "low-confidence-coverage"
    values, confidence = reading.label_on_grid(options.grid)
    if confidence is None:
        confidence = np.isfinite(values).astype(np.float32)
    meta.update(
        labelled=True,
        quantity=str(reading.quantity or ""),
        unit=str(reading.unit or ""),
        confident_fraction=fraction,
    )
    return Sample(
        image=image,
        label=np.asarray(values, dtype=np.float32),
        confidence=np.nan_to_num(np.asarray(confidence, dtype=np.float32), nan=0.0),
        meta=meta,
    )


def _check_manifest(
    old: dict[str, Any], options: BuildOptions, key: PseudonymKey, out: Path
) -> None:
    if not old:
        return
    if old.get("key_fingerprint") and old["key_fingerprint"] != key.fingerprint:
        raise ConfigError(
            f"{out}: was built with another pseudonymisation key (fingerprint "
            f"{old['key_fingerprint']}); use the same key or a new dataset file"
        )
    stable = options.stable()
    previous = old.get("options", {})
    changed = [k for k in stable if k in previous and previous[k] != stable[k]]
    if changed:
        raise ConfigError(
            f"{out}: options {', '.join(changed)} differ from the existing dataset's "
            f"({', '.join(f'{k}={previous[k]}' for k in changed)}); build a new file"
        )


def _outcomes(
    todo: Sequence[tuple[str, Path]], options: BuildOptions, key: PseudonymKey
) -> Iterator[_Outcome]:
    """Process instances in order (in parallel when ``options.workers > 1``)."""
    from threadpoolctl import threadpool_limits

    work = partial(_process, options=options, secret=key.secret)
    uids = [uid for uid, _ in todo]
    paths = [path for _, path in todo]
    # One BLAS thread per process: parallelism comes from the processes, and spinning BLAS
    # threads on a busy machine made builds 2-3 times slower.
    if options.scheduler:
        from sswe_node.distributed import chunks, ordered_map

        tasks = [(list(c), options, key.secret) for c in chunks(list(todo), 8)]
        for outcomes in ordered_map(
            _process_chunk, tasks, scheduler=options.scheduler, workers=options.workers
        ):
            yield from outcomes
        return
    with threadpool_limits(limits=1):
        if options.workers == 1 or len(todo) < 4:
            yield from map(work, paths, uids)
            return
        # The first instance is read here: the reading core's imports and look-up caches are
        # then inherited by the forked workers instead of being built again in each of them.
        yield work(paths[0], uids[0])
        with ProcessPoolExecutor(max_workers=options.workers, initializer=_single_thread) as pool:
            yield from pool.map(work, paths[1:], uids[1:], chunksize=4)


def _process_chunk(
    items: Sequence[tuple[str, Path]], options: BuildOptions, secret: bytes
) -> list[_Outcome]:
    """Process a few ``(uid, path)`` on a Dask worker (one BLAS thread, as the local workers)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return [_process(path, uid, options=options, secret=secret) for uid, path in items]


def _single_thread() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def build_from_folder(
    folder: str | Path | Sequence[str | Path],
    out: str | Path,
    key: PseudonymKey,
    options: BuildOptions | None = None,
    *,
    command: str = "",
    source: str = "",
) -> BuildReport:
    """Build (or grow) a dataset file from every DICOM instance under ``folder``.

    Instances the file has already seen (written or rejected) are skipped, so rebuilding over
    a grown archive only reads the new ones. Rows are written in SOP Instance UID order, then
    frame order, which makes a build deterministic whatever the file names.

    Parameters
    ----------
    folder : path-like or sequence of path-like
        The DICOM folder tree (or several, e.g. the cache folders of retrieved series).
    out : path-like
        The dataset file (created if absent).
    key : PseudonymKey
        The pseudonymisation key for patient IDs.
    options : BuildOptions, optional
        Reading and filtering options.
    command : str
        The command line, recorded in the manifest.
    source : str
        A description of the source, recorded in the manifest (default ``folder:<folder>``).

    Returns
    -------
    BuildReport
    """
    options = options or BuildOptions()
    out = Path(out)
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    report = BuildReport()
    folders = [folder] if isinstance(folder, str | os.PathLike) else list(folder)
    files = sorted({f for one in folders for f in find_dicom_files(one)})
    report.files = len(files)
    with DatasetWriter(out, grid=options.grid) as writer:
        manifest = writer.manifest()
        _check_manifest(manifest, options, key, out)
        done = writer.processed()
        todo: dict[str, Path] = {}
        seen: set[str] = set()
        for path, uid, reason in map(_scan, files):
            if uid is None:
                report.rejections[reason] += 1
            elif uid in seen:
                report.rejections["duplicate"] += 1
            else:
                seen.add(uid)
                if uid in done:
                    report.instances_skipped += 1
                else:
                    todo[uid] = path
        ordered = sorted(todo.items())
        report.instances_new = len(ordered)
        logger.info(
            "%d files: %d new instances, %d already in %s",
            len(files), len(ordered), report.instances_skipped, out.name,
        )  # fmt: skip
        try:
            _write(writer, _outcomes(ordered, options, key), options, report, len(ordered))
        except BaseException:  # Ctrl-C or a crash: what was flushed stays, and is recorded
            report.interrupted = True
            raise
        finally:
            report.seconds = round(time.perf_counter() - t0, 3)
            writer.set_manifest(
                _merged_manifest(manifest, options, key, report, command,
                                 source or f"folder:{folder}", started, writer.counts())
            )  # fmt: skip
    return report


def _write(
    writer: DatasetWriter,
    outcomes: Iterable[_Outcome],
    options: BuildOptions,
    report: BuildReport,
    total: int,
) -> None:
    """Append the outcomes' samples in chunks; the report counts only what was flushed."""
    pending: list[_Outcome] = []
    rows = 0
    bar = None
    if options.progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="inst", desc="dataset", leave=False)

    def flush() -> None:
        samples = [s for o in pending for s in o.samples]
        report.rows += writer.append(samples)
        writer.mark_processed(
            (o.sop_uid, "ok" if o.samples else (o.rejections or ["empty"])[0]) for o in pending
        )
        for o in pending:
            report.rejections.update(o.rejections)
        labelled = sum(1 for s in samples if s.meta["labelled"])
        report.labelled += labelled
        report.unlabelled += len(samples) - labelled
        pending.clear()

    try:
        for outcome in outcomes:
            pending.append(outcome)
            rows += len(outcome.samples)
            if rows >= options.chunk:
                flush()
                rows = 0
            if bar is not None:
                bar.update(1)
        flush()
    finally:
        if bar is not None:
            bar.close()


def _merged_manifest(
    old: dict[str, Any],
    options: BuildOptions,
    key: PseudonymKey,
    report: BuildReport,
    command: str,
    source: str,
    started: dt.datetime,
    totals: dict[str, int],
) -> dict[str, Any]:
    builds = list(old.get("builds", []))
    builds.append(
        {"command": command, "source": source, "started": started.isoformat(timespec="seconds"),
         **report.as_dict()}
    )  # fmt: skip
    # Instance and frame reasons add up over builds (each instance is read once); file-level
    # reasons are seen again by every build's walk, so the latest build's count stands.
    rejections: Counter[str] = Counter()
    for build in builds:
        rejections.update(
            {k: v for k, v in build.get("rejections", {}).items() if k not in FILE_REASONS}
        )
    rejections.update({k: v for k, v in report.rejections.items() if k in FILE_REASONS})
    return {
        "notice": NOTICE,
        "command": command,
        "options": options.stable(),
        "pseudonymisation": "patient_key = HMAC-SHA256(key, PatientID); raw IDs are not stored",
        "key_fingerprint": key.fingerprint,
        "counts": totals,
        "rejections": dict(sorted(rejections.items())),
        "builds": builds,
    }
