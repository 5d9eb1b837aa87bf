"""The processing pipeline: read instances, predict in batches, build the derived DICOM.

MONAI Deploy style: :func:`pre_process` (reading core -> frame readings and model inputs),
batched model calls across the frames of a few instances at a time (overlapped with reading
and building, :func:`process_batch`), :func:`post_process`
(prediction back onto the region of interest, then the Parametric Map and Secondary
Capture). Errors are caught per instance, so one bad instance never breaks a batch.
The reading core and the output builders are imported on first use, so importing this module
is cheap.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import logging
import os
import platform
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from sswe_node.alignment import scanner_key
from sswe_node.config import Settings
from sswe_node.errors import (
    NotUltrasoundError,
    ScaleMismatchError,
    SsweError,
    UnsupportedLayoutError,
)
from sswe_node.model import SsweModel

__all__ = [
    "CHUNK_INSTANCES",
    "chunk_plan",
    "InstanceResult",
    "keep_freed_memory",
    "OUT_OF_DISTRIBUTION",
    "infer",
    "OwnOutputError",
    "process_batch",
    "process_instance",
    "pre_process",
    "post_process",
    "SKIPPED_ERRORS",
]

logger = logging.getLogger(__name__)

#: Warning of a case whose image is unlike the model's training data (issue 12).
OUT_OF_DISTRIBUTION = "out-of-distribution"


class OwnOutputError(NotUltrasoundError):
    """The instance is an sSWE output of this software (never processed again)."""

    reason = "own-output"


#: Errors meaning "not for us" rather than "something is wrong": the instance is skipped.
#: A colour bar labelled with another range than the one configured is skipped too: the
#: configuration was meant for other captures.
SKIPPED_ERRORS: tuple[type[SsweError], ...] = (
    NotUltrasoundError,
    UnsupportedLayoutError,
    ScaleMismatchError,
)


@dataclass
class InstanceResult:
    """What happened to one source instance.

    Attributes
    ----------
    sop_instance_uid : str
        The source's SOP Instance UID (``""`` when unreadable).
    status : str
        ``"done"``, ``"skipped"`` or ``"failed"``.
    reason : str
        ``""`` when done, else a reason code (``SsweError.reason``, ``"internal"``,
        ``"predict"``).
    message : str
        One line for people: ``"reason: detail"`` (no patient identifiers).
    layout : str or None
        ``"dual-swe"`` or ``"bmode"`` when read.
    frames : int
        Frames processed.
    outputs : list of pydicom.dataset.Dataset
        Per processed frame, the Parametric Map then the Secondary Capture (as enabled).
    timings : dict of str to float
        Seconds spent in ``"read"``, ``"predict"`` (this instance's share) and ``"build"``.
    scale_min, scale_max : float or None
        The colour-bar range the outputs show (that of the first frame read).
    scale_unit : str or None
        Its unit.
    scale_source : str or None
        Where it came from (``"private-data"``, ``"image-labels"``, ``"config"``,
        ``"manifest"``; see :mod:`sswe_node.imaging.scale`).
    warnings : list of str
        Warning codes of a done instance (:data:`OUT_OF_DISTRIBUTION`).
    ood_score : float or None
        Largest out-of-distribution score of its frames (percentile of the training frames').
    model_name, model_version : str
        The model that processed it.
    """

    sop_instance_uid: str
    status: str = "pending"
    reason: str = ""
    message: str = ""
    layout: str | None = None
    frames: int = 0
    outputs: list[Dataset] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    scale_min: float | None = None
    scale_max: float | None = None
    scale_unit: str | None = None
    scale_source: str | None = None
    warnings: list[str] = field(default_factory=list)
    ood_score: float | None = None
    model_name: str = ""
    model_version: str = ""

    def fail(self, exc: BaseException) -> None:
        """Record ``exc`` as the reason this instance was skipped or failed."""
        self.outputs = []
        if isinstance(exc, SKIPPED_ERRORS):
            self.status, self.reason = "skipped", exc.reason
        elif isinstance(exc, SsweError):
            self.status, self.reason = "failed", exc.reason
        else:
            self.status, self.reason = "failed", "internal"
        detail = str(exc) if isinstance(exc, SsweError) else f"{type(exc).__name__}: {exc}"
        self.message = f"{self.reason}: {detail}"


#: glibc ``mallopt`` parameters (``malloc.h``) and the values :func:`keep_freed_memory` sets:
#: blocks up to 32 MiB (glibc's ceiling) come from the heap, and up to 128 MiB of freed heap
#: stays mapped for reuse.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_THRESHOLD, _MMAP_THRESHOLD = 128 << 20, 32 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Let the C allocator keep freed memory for reuse rather than return it to the system.

    The outputs of a 600 x 900 capture are about 10 MB of new arrays and bytes. By default
    glibc maps each block of more than a few MB afresh and unmaps it when freed, so every
    page is faulted in and zeroed again: some 2,500 page faults, about a quarter of that
    instance's build time. Raising the mmap and trim thresholds lets freed blocks be reused
    (the process keeps up to 128 MiB of freed memory). Run once per process, on glibc only,
    and not when ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` are set.

    Returns
    -------
    bool
        Whether the thresholds were set.
    """
    if any(f"MALLOC_{name}_THRESHOLD_" in os.environ for name in ("MMAP", "TRIM")):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - no glibc symbols
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )


def _uid(ds: Dataset) -> str:
    try:
        return str(ds.get("SOPInstanceUID", "") or "")
    except Exception:  # a broken element must not stop the batch
        return ""


def scale_setting(model: SsweModel, settings: Settings) -> Any:
    """Return the scale the node was given: the configured one (explicit), else the model's.

    ``reading.colour_bar_min/max`` set (max > min) is an explicit configuration: captures
    whose bar is labelled otherwise are refused (``scale-mismatch``). Left at 0/0 (the
    default), the model manifest's colour bar is a fallback that the labels override.
    """
    from sswe_node.imaging.scale import ScaleSetting

    low, high = settings.reading.colour_bar_min, settings.reading.colour_bar_max
    if high > low:
        return ScaleSetting(float(low), float(high), source="config", explicit=True)
    low, high = (float(v) for v in model.manifest.colour_bar)
    return ScaleSetting(low, high, source="manifest", explicit=False)


def frame_scale(reading: Any, setting: Any) -> tuple[tuple[float, float], str]:
    """Return the colour-bar range shown for a frame's outputs and where it came from."""
    if getattr(reading, "scale", None) is not None and reading.scale_source:
        return tuple(reading.scale), str(reading.scale_source)
    return setting.scale, setting.source


def _layout_name(layout: Any) -> str:
    return str(getattr(layout, "value", layout))


#: BodyPartExamined values (upper case) that fit a model's organ; others are warned about.
ORGAN_BODY_PARTS: dict[str, frozenset[str]] = {
    "prostate": frozenset({"PROSTATE", "PELVIS", "ABDOMENPELVIS", "RECTUM"}),
    "thyroid": frozenset({"THYROID", "NECK", "HEADNECK"}),
}


def warn_if_other_organ(ds: Dataset, organ: str) -> bool:
    """Log a warning when the source's Body Part Examined does not fit the model's organ.

    sSWE networks are organ specific (the paper's prostate network fails on the thyroid), so a
    mismatch is worth an operator's attention; the image is still processed, since Body Part
    Examined is often missing or generic.

    Returns
    -------
    bool
        Whether the body part was known and did not fit.
    """
    body_part = str(ds.get("BodyPartExamined", "") or "").strip().upper().replace(" ", "")
    fitting = ORGAN_BODY_PARTS.get(organ.lower())
    if not body_part or fitting is None or body_part in fitting:
        return False
    logger.warning(
        "event=organ-mismatch body_part=%s model_organ=%s: the model was not trained for this "
        "organ; its synthetic SWE is unvalidated here",
        body_part, organ,
    )  # fmt: skip
    return True


def pre_process(ds: Dataset, model: SsweModel, settings: Settings) -> tuple[list[Any], NDArray]:
    """Read one instance into frame readings and model inputs.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The source instance with pixel data.
    model : sswe_node.model.PackagedModel
        The model (its manifest's ``grid``).
    settings : Settings
        Reading settings.

    Returns
    -------
    tuple
        The ``FrameReading`` list and the ``(frames, rows, cols)`` float32 model inputs.

    Raises
    ------
    DicomInputError
        Typed reading errors, and :class:`OwnOutputError` for this software's outputs.
    """
    from sswe_node.imaging import read_instance
    from sswe_node.outputs.derived import MANUFACTURER

    if str(ds.get("Manufacturer", "")) == MANUFACTURER:
        raise OwnOutputError("the instance is a synthetic SWE output of sswe-node")
    warn_if_other_organ(ds, str(getattr(model.manifest, "organ", "")))
    grid = tuple(model.manifest.grid)
    # No colour-bar scale: inference needs the B-mode only, not the decoded elastogram.
    # The scale is chosen (and a mismatch refused) but the elastogram is not decoded.
    readings = read_instance(
        ds,
        grid=grid,
        scale=scale_setting(model, settings),
        decode=False,
        max_frames=settings.reading.max_frames,
        quantity=model.manifest.quantity,
        max_pixels=settings.node.max_image_pixels,
    )
    if not readings:
        raise UnsupportedLayoutError("no frame of the instance could be read")
    inputs = np.stack([np.asarray(r.model_input(grid), dtype=np.float32) for r in readings])
    return readings, inputs


def post_process(
    ds: Dataset,
    readings: Sequence[Any],
    predictions: NDArray[np.floating],
    model: SsweModel,
    settings: Settings,
    *,
    sd: NDArray[np.floating] | None = None,
    out_of_distribution: bool = False,
) -> list[Dataset]:
    """Map predictions back onto each frame's region of interest and build the outputs.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The source instance.
    readings : sequence of FrameReading
        Its frame readings, in the order of ``predictions``.
    predictions : numpy.ndarray
        ``(frames, rows, cols)`` model output in the model's unit.
    model : sswe_node.model.PackagedModel
        The model (its manifest describes the outputs).
    settings : Settings
        ``processing.parametric_map`` and ``processing.secondary_capture`` choose the outputs.
    sd : numpy.ndarray, optional
        ``(frames, rows, cols)`` per-pixel standard deviation (MC dropout): the map's second
        frame, and the capture hatches pixels above the threshold.
    out_of_distribution : bool
        The capture carries the banner "OUTSIDE THE MODEL'S TRAINING DATA".

    Returns
    -------
    list of pydicom.dataset.Dataset
        Per frame, the Parametric Map then the Secondary Capture.
    """
    from sswe_node.imaging.grid import from_grid_masked
    from sswe_node.outputs import (
        Box,
        build_parametric_map,
        build_secondary_capture,
        map_pixels,
        source_spacing_mm,
    )

    keep_freed_memory()
    manifest = model.manifest
    setting = scale_setting(model, settings)
    outputs: list[Dataset] = []
    threshold = sd_threshold(model, settings)
    for k, (reading, prediction) in enumerate(zip(readings, predictions, strict=True)):
        scale, source = frame_scale(reading, setting)
        roi = Box(reading.roi.top, reading.roi.left, reading.roi.bottom, reading.roi.right)
        outside = getattr(reading, "outside", None)
        if outside is not None and (outside.shape != roi.shape or outside.all()):
            outside = None
        # Values (NaN outside a fan: not tissue, black in the capture) and sd (clamped at 0,
        # NaN where there is no value) in one pass, written straight into the map's pixels.
        pixels = None
        if settings.processing.parametric_map:
            pixels = map_pixels(roi.shape, 1 if sd is None else 2)
        values, sd_map, value_range, sd_range = from_grid_masked(
            prediction,
            None if sd is None else sd[k],
            roi.shape,
            outside=outside,
            out=None if pixels is None else pixels.frames,
        )
        if pixels is not None:  # the pass found the ranges: the map need not read its frames
            ranges = (value_range,) if sd is None else (value_range, sd_range)
            pixels = pixels._replace(ranges=ranges)
        spacing = reading.spacing_mm or source_spacing_mm(ds, roi)
        if settings.processing.parametric_map:
            outputs.append(
                build_parametric_map(
                    ds,
                    values,
                    roi=roi,
                    model=manifest,
                    frame=reading.frame,
                    spacing_mm=spacing,
                    sd=sd_map,
                    scale=scale,
                    scale_source=source,
                    pixels=pixels,
                )
            )
        if settings.processing.secondary_capture:
            outputs.append(
                build_secondary_capture(
                    ds,
                    values,
                    reading.bmode,
                    model=manifest,
                    frame=reading.frame,
                    scale=scale,
                    sd=sd_map,
                    sd_threshold=threshold,
                    out_of_distribution=out_of_distribution,
                    scale_source=source,
                )
            )
    return outputs


def infer(
    model: SsweModel,
    images: NDArray[np.float32],
    settings: Settings,
    scanners: Sequence[str] = (),
    scanner_stats: Any = None,
    spacing: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.float32] | None, NDArray[np.float64] | None]:
    """Run the model on a batch of frames: values, per-pixel sd (or None), OOD scores (or None).

    A model with ``infer`` (:class:`sswe_node.model.PackagedModel`) runs ``trust.mc_passes``
    MC dropout passes (0: the manifest's) in one tiled call, with scanner alignment from
    ``scanner_stats``; a model with only ``predict`` gives values alone. ``spacing`` (each
    frame's grid-cell size in mm, :func:`grid_cells`) adds the OOD gate's field-of-view score.
    """
    if not hasattr(model, "infer"):
        return np.asarray(model.predict(images), dtype=np.float32), None, None
    from sswe_node.alignment import make_aligner

    aligner = make_aligner(
        model,
        scanners,
        scanner_stats,
        min_frames=settings.trust.align_min_frames,
        enabled=settings.trust.align_scanners,
    )
    result = model.infer(
        images, passes=settings.trust.mc_passes or None, aligner=aligner, spacing=spacing
    )
    return result.values, result.sd, result.ood_score


def grid_cells(model: SsweModel, readings: Sequence[Any]) -> NDArray[np.float64]:
    """Return each frame's ``(row, column)`` grid-cell size in mm (NaN where unknown)."""
    grid = tuple(model.manifest.grid)
    return np.asarray(
        [r.grid_spacing_mm(grid) or (np.nan, np.nan) for r in readings], dtype=np.float64
    ).reshape(len(readings), 2)


def sd_threshold(model: SsweModel, settings: Settings) -> float | None:
    """Return the standard deviation above which captures withhold colour."""
    if settings.trust.sd_threshold > 0:
        return float(settings.trust.sd_threshold)
    inference = getattr(model, "inference", None)
    return None if inference is None else float(inference.sd_threshold) or None


#: Instances per model call of a batch of several chunks (see :func:`process_batch`).
CHUNK_INSTANCES = 4
#: A batch is cut into about this many chunks of :data:`CHUNK_INSTANCES` or more.
MAX_CHUNKS = 4


def chunk_plan(instances: int) -> list[int]:
    """Return the instances of each model call for a batch of ``instances``.

    A batch is cut into chunks so that reading the next chunk and building the previous one
    run while the model predicts this one (the model releases the GIL and, on a small CPU
    batch, keeps about one core busy). The first chunk is half size, so the model starts
    early. Frames are independent of the batch they come in (the same dropout masks for
    every frame), so the values are those of one call.

    Examples
    --------
    >>> chunk_plan(16), chunk_plan(4), chunk_plan(6)
    ([2, 4, 4, 4, 2], [4], [2, 4])
    """
    size = max(CHUNK_INSTANCES, -(-instances // MAX_CHUNKS))
    if instances <= size:
        return [instances] if instances else []
    plan = [-(-size // 2)]
    while sum(plan) < instances:
        plan.append(min(size, instances - sum(plan)))
    return plan


class _PredictThread:
    """One long-lived thread that runs the model calls of every batch of this process.

    Kept per process (a fork inherits the object, not the thread: the child makes its own)
    and per process shared by concurrent batches, whose calls then queue.
    """

    _lock = threading.Lock()
    _executor: ThreadPoolExecutor | None = None
    _pid = 0

    @classmethod
    def submit(cls, fn: Any, *args: Any) -> Future[Any]:
        with cls._lock:
            if cls._executor is None or cls._pid != os.getpid():
                cls._executor = ThreadPoolExecutor(1, thread_name_prefix="sswe-predict")
                cls._pid = os.getpid()
            return cls._executor.submit(fn, *args)


def _read(
    i: int, ds: Dataset, model: SsweModel, settings: Settings, result: InstanceResult
) -> tuple[list[Any], NDArray] | None:
    """Read one instance of a batch into ``result``; None when it was skipped or failed."""
    start = time.perf_counter()
    prepared = None
    try:
        readings, inputs = pre_process(ds, model, settings)
    except Exception as exc:  # noqa: BLE001 - one bad instance must not break the batch
        result.fail(exc)
        logger.info("instance %d of the batch %s (%s)", i, result.status, result.reason)
        if not isinstance(exc, SsweError):
            logger.exception("unexpected error reading instance %d of the batch", i)
    else:
        prepared = (readings, inputs)
        result.layout = _layout_name(readings[0].layout)
        result.frames = len(readings)
        scale, source = frame_scale(readings[0], scale_setting(model, settings))
        result.scale_min, result.scale_max = scale
        result.scale_unit = str(model.manifest.unit)
        result.scale_source = source
    result.timings["read"] = time.perf_counter() - start
    return prepared


def _timed_infer(
    model: SsweModel,
    stacked: NDArray[np.float32],
    settings: Settings,
    scanners: Sequence[str],
    scanner_stats: Any,
    spacing: NDArray[np.float64] | None = None,
) -> tuple[Any, float]:
    start = time.perf_counter()
    answer = infer(model, stacked, settings, scanners, scanner_stats, spacing)
    if answer[0].shape != stacked.shape:
        raise ValueError(f"model returned {answer[0].shape} for inputs {stacked.shape}")
    return answer, time.perf_counter() - start


def _finish_chunk(
    chunk: list[int],
    future: Future[Any],
    prepared: dict[int, tuple[list[Any], NDArray]],
    datasets: Sequence[Dataset],
    model: SsweModel,
    settings: Settings,
    results: list[InstanceResult],
) -> None:
    """Take a chunk's predictions and build its instances' outputs."""
    frames = sum(len(prepared[i][0]) for i in chunk)
    try:
        (values, sd, ood), elapsed = future.result()
    except Exception as exc:  # noqa: BLE001
        logger.error(
            "model prediction failed for a batch of %d frames",
            frames,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        for i in chunk:
            results[i].status, results[i].reason = "failed", "predict"
            results[i].message = f"predict: {type(exc).__name__}: {exc}"
        return
    offset = 0
    for i in chunk:
        n = len(prepared[i][0])
        result = results[i]
        result.model_name = str(model.manifest.name)
        result.model_version = str(model.manifest.version)
        if ood is not None:
            result.ood_score = float(np.max(ood[offset : offset + n]))
            if result.ood_score > settings.trust.ood_percentile:
                result.warnings.append(OUT_OF_DISTRIBUTION)
        result.timings["predict"] = elapsed * n / frames
        start = time.perf_counter()
        try:
            result.outputs = post_process(
                datasets[i],
                prepared[i][0],
                values[offset : offset + n],
                model,
                settings,
                sd=None if sd is None else sd[offset : offset + n],
                out_of_distribution=OUT_OF_DISTRIBUTION in result.warnings,
            )
            result.status = "done"
        except Exception as exc:  # noqa: BLE001
            result.fail(exc)
            logger.exception("building the outputs of instance %d of the batch failed", i)
        result.timings["build"] = time.perf_counter() - start
        offset += n


def process_batch(
    datasets: Sequence[Dataset],
    model: SsweModel,
    settings: Settings,
    *,
    scanner_stats: Any = None,
    overlap: bool = True,
) -> list[InstanceResult]:
    """Run the whole pipeline on a batch of instances.

    The batch is cut into chunks (:func:`chunk_plan`), each predicted with one
    model call on a long-lived thread; while the model predicts one chunk, this thread
    reads the next and builds the previous one. A batch of one chunk is one model call.

    Parameters
    ----------
    datasets : sequence of pydicom.dataset.Dataset
        Source instances with pixel data.
    model : sswe_node.model.PackagedModel
        A loaded model (``manifest`` and ``predict`` are used).
    settings : Settings
        Node settings (``reading``, ``processing`` and ``trust`` sections).
    scanner_stats : sswe_node.alignment.ScannerStatsStore, optional
        Per-scanner running latent statistics for scanner alignment (none: no alignment);
        each chunk's frames are added to them in order, as for batches of the chunk's size.
    overlap : bool
        Cut the batch into chunks (the default); False: one model call for the whole batch,
        after every instance is read (for comparisons).

    Returns
    -------
    list of InstanceResult
        One per dataset, in order. Never raises for a bad instance.
    """
    keep_freed_memory()
    results = [InstanceResult(_uid(ds)) for ds in datasets]
    plan = chunk_plan(len(datasets)) if overlap else [len(datasets)]
    threaded = len(plan) > 1  # several chunks: predict on the model thread
    ends = set(itertools.accumulate(plan))
    prepared: dict[int, tuple[list[Any], NDArray]] = {}
    in_flight: deque[tuple[list[int], Future[Any]]] = deque()
    chunk: list[int] = []

    def submit() -> None:
        stacked = np.concatenate([prepared[i][1] for i in chunk], axis=0)
        scanners = [
            scanner_key(datasets[i], results[i].layout) for i in chunk for _ in prepared[i][0]
        ]
        cells = grid_cells(model, [r for i in chunk for r in prepared[i][0]])
        args = (model, stacked, settings, scanners, scanner_stats, cells)
        if threaded:
            future = _PredictThread.submit(_timed_infer, *args)
        else:
            future = Future()
            try:
                future.set_result(_timed_infer(*args))
            except Exception as exc:  # noqa: BLE001 - reported by _finish_chunk
                future.set_exception(exc)
        in_flight.append((chunk.copy(), future))
        chunk.clear()

    for i, ds in enumerate(datasets):
        reading = _read(i, ds, model, settings, results[i])
        if reading is not None:
            prepared[i] = reading
            chunk.append(i)
        if chunk and i + 1 in ends:
            submit()
        # Build the chunk before the one the model is now predicting.
        while len(in_flight) > 1 or (in_flight and i == len(datasets) - 1):
            _finish_chunk(*in_flight.popleft(), prepared, datasets, model, settings, results)
    return results


def process_instance(ds: Dataset, model: SsweModel, settings: Settings) -> InstanceResult:
    """Run the pipeline on one instance (``process_batch([ds], ...)[0]``)."""
    return process_batch([ds], model, settings)[0]
