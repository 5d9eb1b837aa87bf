"""The processing pipeline: read instances, predict in one batch, build the derived DICOM.

MONAI Deploy style: :func:`pre_process` (reading core -> frame readings and model inputs),
one batched ``model.predict`` across every frame of every instance, :func:`post_process`
(prediction back onto the region of interest, then the Parametric Map and Secondary
Capture). Errors are caught per instance, so one bad instance never breaks a batch.
The reading core and the output builders are imported on first use, so importing this module
is cheap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from sswe_node.config import Settings
from sswe_node.errors import NotUltrasoundError, SsweError, UnsupportedLayoutError

__all__ = [
    "InstanceResult",
    "OwnOutputError",
    "process_batch",
    "process_instance",
    "pre_process",
    "post_process",
    "SKIPPED_ERRORS",
]

logger = logging.getLogger(__name__)


class OwnOutputError(NotUltrasoundError):
    """The instance is an sSWE output of this software (never processed again)."""

    reason = "own-output"


#: Errors meaning "not for us" rather than "something is wrong": the instance is skipped.
SKIPPED_ERRORS: tuple[type[SsweError], ...] = (NotUltrasoundError, UnsupportedLayoutError)


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
    """

    sop_instance_uid: str
    status: str = "pending"
    reason: str = ""
    message: str = ""
    layout: str | None = None
    frames: int = 0
    outputs: list[Dataset] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

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


def _uid(ds: Dataset) -> str:
    try:
        return str(ds.get("SOPInstanceUID", "") or "")
    except Exception:  # a broken element must not stop the batch
        return ""


def _display_range(model: Any, settings: Settings) -> tuple[float, float]:
    """Return the colour-bar range of the captures: the configured one, else the model's."""
    low, high = settings.reading.colour_bar_min, settings.reading.colour_bar_max
    return (low, high) if high > low else tuple(model.manifest.colour_bar)


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


def pre_process(ds: Dataset, model: Any, settings: Settings) -> tuple[list[Any], NDArray]:
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
    readings = read_instance(
        ds,
        grid=grid,
        scale=None,
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
    model: Any,
    settings: Settings,
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

    Returns
    -------
    list of pydicom.dataset.Dataset
        Per frame, the Parametric Map then the Secondary Capture.
    """
    from sswe_node.imaging.grid import from_grid
    from sswe_node.outputs import (
        Box,
        build_parametric_map,
        build_secondary_capture,
        source_spacing_mm,
    )

    manifest = model.manifest
    scale = _display_range(model, settings)
    outputs: list[Dataset] = []
    for reading, prediction in zip(readings, predictions, strict=True):
        roi = Box(reading.roi.top, reading.roi.left, reading.roi.bottom, reading.roi.right)
        values = np.asarray(from_grid(prediction, roi.shape), dtype=np.float32)
        spacing = reading.spacing_mm or source_spacing_mm(ds, roi)
        if settings.processing.parametric_map:
            outputs.append(
                build_parametric_map(
                    ds, values, roi=roi, model=manifest, frame=reading.frame, spacing_mm=spacing
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
                )
            )
    return outputs


def process_batch(
    datasets: Sequence[Dataset], model: Any, settings: Settings
) -> list[InstanceResult]:
    """Run the whole pipeline on a batch of instances with one model call.

    Parameters
    ----------
    datasets : sequence of pydicom.dataset.Dataset
        Source instances with pixel data.
    model : sswe_node.model.PackagedModel
        A loaded model (``manifest`` and ``predict`` are used).
    settings : Settings
        Node settings (``reading`` and ``processing`` sections).

    Returns
    -------
    list of InstanceResult
        One per dataset, in order. Never raises for a bad instance.
    """
    results = [InstanceResult(_uid(ds)) for ds in datasets]
    prepared: dict[int, tuple[list[Any], NDArray]] = {}
    for i, ds in enumerate(datasets):
        start = time.perf_counter()
        try:
            readings, inputs = pre_process(ds, model, settings)
        except Exception as exc:  # noqa: BLE001 - one bad instance must not break the batch
            results[i].fail(exc)
            logger.info("instance %d of the batch %s (%s)", i, results[i].status, results[i].reason)
            if not isinstance(exc, SsweError):
                logger.exception("unexpected error reading instance %d of the batch", i)
        else:
            prepared[i] = (readings, inputs)
            results[i].layout = _layout_name(readings[0].layout)
            results[i].frames = len(readings)
        results[i].timings["read"] = time.perf_counter() - start

    predictions: dict[int, NDArray] = {}
    if prepared:
        order = sorted(prepared)
        stacked = np.concatenate([prepared[i][1] for i in order], axis=0)
        start = time.perf_counter()
        try:
            values = np.asarray(model.predict(stacked), dtype=np.float32)
            if values.shape != stacked.shape:
                raise ValueError(f"model returned {values.shape} for inputs {stacked.shape}")
        except Exception as exc:  # noqa: BLE001
            logger.exception("model prediction failed for a batch of %d frames", len(stacked))
            for i in order:
                results[i].status, results[i].reason = "failed", "predict"
                results[i].message = f"predict: {type(exc).__name__}: {exc}"
        else:
            elapsed = time.perf_counter() - start
            offset = 0
            for i in order:
                n = len(prepared[i][0])
                predictions[i] = values[offset : offset + n]
                results[i].timings["predict"] = elapsed * n / len(stacked)
                offset += n

    for i, prediction in predictions.items():
        start = time.perf_counter()
        try:
            results[i].outputs = post_process(
                datasets[i], prepared[i][0], prediction, model, settings
            )
            results[i].status = "done"
        except Exception as exc:  # noqa: BLE001
            results[i].fail(exc)
            logger.exception("building the outputs of instance %d of the batch failed", i)
        results[i].timings["build"] = time.perf_counter() - start
    return results


def process_instance(ds: Dataset, model: Any, settings: Settings) -> InstanceResult:
    """Run the pipeline on one instance (``process_batch([ds], ...)[0]``)."""
    return process_batch([ds], model, settings)[0]
