"""The Parametric Map: float32 sSWE values on the region of interest, in the model's unit."""

from __future__ import annotations

import logging

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from sswe_node.outputs.derived import (
    MANUFACTURER,
    ModelInfo,
    contributing_equipment,
    mark_derived,
    reference_source_frame,
)
from sswe_node.outputs.geometry import (
    COLUMN_DIRECTION,
    ROW_DIRECTION,
    Box,
    roi_position_mm,
    source_with_geometry,
)
from sswe_node.outputs.labels import UCUM_MEANINGS, WARNING, quantity_name
from sswe_node.outputs.numbering import derived_instance_number, derived_series_number
from sswe_node.outputs.uids import derived_instance_uid, derived_series_uid

__all__ = ["build_parametric_map", "LUT_LABEL", "UNKNOWN_SPACING_MM"]

logger = logging.getLogger(__name__)

#: LUT Label of the Real World Value Mapping (SH, at most 16 characters).
LUT_LABEL = "SSWE"

#: Spacing recorded when the source states none (no ultrasound region, no Pixel Spacing).
UNKNOWN_SPACING_MM = (1.0, 1.0)


def _unit_concept(unit: str) -> hd.sr.CodedConcept:
    if unit not in UCUM_MEANINGS:
        raise ValueError(f"unit {unit!r} is not one of {sorted(UCUM_MEANINGS)}")
    return hd.sr.CodedConcept(value=unit, scheme_designator="UCUM", meaning=UCUM_MEANINGS[unit])


def build_parametric_map(
    source: Dataset,
    values: NDArray[np.floating],
    *,
    roi: Box | tuple[int, int, int, int],
    model: ModelInfo,
    frame: int = 0,
    spacing_mm: tuple[float, float] | None = None,
) -> Dataset:
    """Build the Parametric Map of one processed source frame.

    Parameters
    ----------
    source : pydicom.dataset.Dataset
        The source instance (only its header is read; it is not changed).
    values : numpy.ndarray
        ``(rows, columns)`` predicted values in ``model.unit`` on the region of interest, in
        source pixels (the model output regridded back). Stored as float32 unchanged.
    roi : Box or tuple of int
        ``(top, left, bottom, right)`` of ``values`` in the source frame, end exclusive.
    model : ModelInfo
        Name, version, quantity, unit and colour-bar range of the model.
    frame : int
        0-based index of the frame in the source instance.
    spacing_mm : tuple of float, optional
        ``(row, column)`` spacing of source pixels; 1 mm (and a note) when unknown.

    Returns
    -------
    highdicom.pm.ParametricMap
        A single-frame Parametric Map in the source's study, positioned on the ROI in a
        Frame of Reference derived from the source.

    Raises
    ------
    ValueError
        When ``values`` and ``roi`` disagree, values are not finite or the unit is unknown.
    """
    roi = Box(*(int(v) for v in roi))
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or values.shape != roi.shape:
        raise ValueError(f"values of shape {values.shape} do not fill the ROI {roi.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("values must be finite")
    spacing_known = spacing_mm is not None
    spacing = tuple(float(s) for s in (spacing_mm or UNKNOWN_SPACING_MM))

    low, high = (float(v) for v in model.colour_bar)
    value_range = (min(low, float(values.min())), max(high, float(values.max())))
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=LUT_LABEL,
        lut_explanation=f"synthetic SWE {quantity_name(model.quantity)}"[:64],
        unit=_unit_concept(model.unit),
        value_range=value_range,
        slope=1.0,
        intercept=0.0,
    )
    pm = hd.pm.ParametricMap(
        source_images=[source_with_geometry(source, spacing)],
        pixel_array=values,
        series_instance_uid=derived_series_uid(source, model.name, model.version, "pm"),
        series_number=derived_series_number(source, "pm"),
        sop_instance_uid=derived_instance_uid(source, frame, model.name, model.version, "pm"),
        instance_number=derived_instance_number(source, frame),
        manufacturer=MANUFACTURER,
        manufacturer_model_name=model.name[:64],
        software_versions=str(model.version)[:64],
        device_serial_number="0",
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[
            hd.VOILUTTransformation(window_center=(low + high) / 2, window_width=high - low)
        ],
        pixel_measures=hd.PixelMeasuresSequence(pixel_spacing=spacing, slice_thickness=1.0),
        plane_orientation=hd.PlaneOrientationSequence(
            "PATIENT", [*ROW_DIRECTION, *COLUMN_DIRECTION]
        ),
        plane_positions=[
            hd.PlanePositionSequence("PATIENT", roi_position_mm(roi, spacing), (1, 1))
        ],
        content_label="SYNTHETIC_SWE",
        content_description=WARNING,
        content_qualification="RESEARCH",
        image_flavor="STATIC",  # one 2D ultrasound plane, not a volume
        contributing_equipment=contributing_equipment(model),
    )
    mark_derived(pm, source, model, "PM")
    reference_source_frame(pm, source, frame)
    if not spacing_known:
        pm.DerivationDescription += " Pixel spacing unknown: 1 mm stored."
        logger.warning("source has no pixel spacing; the parametric map records 1 mm")
    return pm
