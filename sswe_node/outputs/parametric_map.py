"""The Parametric Map: float32 sSWE values on the region of interest, in the model's unit."""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.valuerep import DSfloat

from sswe_node.outputs.derived import ModelInfo
from sswe_node.outputs.geometry import COLUMN_DIRECTION, ROW_DIRECTION, Box, roi_position_mm
from sswe_node.outputs.header import Code, code_item, item, new_derived, source_reference
from sswe_node.outputs.labels import UCUM_MEANINGS, WARNING, quantity_name
from sswe_node.outputs.uids import derived_uid, frame_of_reference_uid, source_series_uid

__all__ = ["build_parametric_map", "LUT_LABEL", "UNKNOWN_SPACING_MM", "PARAMETRIC_MAP_STORAGE"]

logger = logging.getLogger(__name__)

#: SOP Class UID of Parametric Map Storage.
PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"

#: LUT Label of the Real World Value Mapping (SH, at most 16 characters).
LUT_LABEL = "SSWE"

#: Spacing recorded when the source states none (no ultrasound region, no Pixel Spacing).
UNKNOWN_SPACING_MM = (1.0, 1.0)

_IMAGE_TYPE = ["DERIVED", "PRIMARY", "STATIC", "QUANTITY"]
_UNSPECIFIED_CALCULATION = Code("112187", "DCM", "Unspecified method of calculation")
_IMAGE_POSITION = (0x0020, 0x0032)
_PLANE_POSITION_SEQUENCE = (0x0020, 0x9113)


def _decimals(values: tuple[float, ...]) -> list[DSfloat]:
    """Return Decimal String values of at most 16 characters (as highdicom writes them)."""
    return [DSfloat(float(v), auto_format=True) for v in values]


def _unit_item(unit: str) -> Dataset:
    if unit not in UCUM_MEANINGS:
        raise ValueError(f"unit {unit!r} is not one of {sorted(UCUM_MEANINGS)}")
    return code_item(Code(unit, "UCUM", UCUM_MEANINGS[unit]))


def _shared_groups(
    model: ModelInfo, spacing: tuple[float, float], value_range: tuple[float, float]
) -> Dataset:
    """Return the functional groups of every frame: plane, spacing, window, value mapping."""
    low, high = (float(v) for v in model.colour_bar)
    mapping = item(
        LUTExplanation=f"synthetic SWE {quantity_name(model.quantity)}"[:64],
        MeasurementUnitsCodeSequence=[_unit_item(model.unit)],
        LUTLabel=LUT_LABEL,
        DoubleFloatRealWorldValueLastValueMapped=value_range[1],
        DoubleFloatRealWorldValueFirstValueMapped=value_range[0],
        RealWorldValueIntercept=0.0,
        RealWorldValueSlope=1.0,
    )
    return item(
        PlaneOrientationSequence=[
            item(ImageOrientationPatient=[*ROW_DIRECTION, *COLUMN_DIRECTION])
        ],
        PixelMeasuresSequence=[
            item(SliceThickness=1.0, SpacingBetweenSlices=1.0, PixelSpacing=_decimals(spacing))
        ],
        FrameVOILUTSequence=[
            item(
                WindowCenter=_decimals(((low + high) / 2,))[0],
                WindowWidth=_decimals((high - low,))[0],
            )
        ],
        PixelValueTransformationSequence=[
            item(RescaleIntercept=0.0, RescaleSlope=1.0, RescaleType="US")
        ],
        ParametricMapFrameTypeSequence=[item(FrameType=_IMAGE_TYPE)],
        RealWorldValueMappingSequence=[mapping],
    )


def _frame_groups(source: Dataset, frame: int, position: tuple[float, float, float]) -> Dataset:
    """Return the functional groups of the one frame: derivation, index, position."""
    reference = source_reference(source, frame)
    reference.SpatialLocationsPreserved = "NO"
    return item(
        DerivationImageSequence=[
            item(
                SourceImageSequence=[reference],
                DerivationCodeSequence=[code_item(_UNSPECIFIED_CALCULATION)],
            )
        ],
        FrameContentSequence=[item(DimensionIndexValues=1)],
        PlanePositionSequence=[item(ImagePositionPatient=_decimals(position))],
    )


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
    pydicom.dataset.Dataset
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
    smallest, largest = float(values.min()), float(values.max())  # NaN or inf show here
    if not (np.isfinite(smallest) and np.isfinite(largest)):
        raise ValueError("values must be finite")
    spacing_known = spacing_mm is not None
    spacing = tuple(float(s) for s in (spacing_mm or UNKNOWN_SPACING_MM))
    low, high = (float(v) for v in model.colour_bar)
    value_range = (min(low, smallest), max(high, largest))
    shared = _shared_groups(model, spacing, value_range)  # checks the unit first

    pm = new_derived(source, model, sop_class_uid=PARAMETRIC_MAP_STORAGE, kind="pm", frame=frame)
    pm.ImageType = _IMAGE_TYPE
    pm.PixelPresentation = "MONOCHROME"
    pm.DeviceSerialNumber = "0"
    pm.ContentQualification = "RESEARCH"
    pm.ContentLabel = "SYNTHETIC_SWE"
    pm.ContentDescription = WARNING
    pm.AcquisitionContextSequence = []
    pm.ReferencedSeriesSequence = [
        item(
            ReferencedInstanceSequence=[
                item(
                    ReferencedSOPClassUID=source.SOPClassUID,
                    ReferencedSOPInstanceUID=source.SOPInstanceUID,
                )
            ],
            SeriesInstanceUID=source_series_uid(source),
        )
    ]
    # Frame of Reference: a plane derived from the source instance (see geometry).
    pm.FrameOfReferenceUID = frame_of_reference_uid(source)
    pm.PositionReferenceIndicator = None
    organisation = derived_uid(pm.SeriesInstanceUID, "dimension-organization")
    pm.DimensionOrganizationSequence = [item(DimensionOrganizationUID=organisation)]
    pm.DimensionIndexSequence = [
        item(
            DimensionOrganizationUID=organisation,
            DimensionIndexPointer=_IMAGE_POSITION,
            FunctionalGroupPointer=_PLANE_POSITION_SEQUENCE,
            DimensionDescriptionLabel="Image Position Patient",
        )
    ]
    pm.SamplesPerPixel = 1
    pm.PhotometricInterpretation = "MONOCHROME2"
    pm.NumberOfFrames = 1
    pm.Rows, pm.Columns = values.shape
    pm.BitsAllocated = 32
    pm.BurnedInAnnotation = "NO"
    pm.RecognizableVisualFeatures = "NO"
    pm.LossyImageCompression = "00"
    pm.PresentationLUTShape = "IDENTITY"
    pm.SharedFunctionalGroupsSequence = [shared]
    pm.PerFrameFunctionalGroupsSequence = [
        _frame_groups(source, frame, roi_position_mm(roi, spacing))
    ]
    pm.FloatPixelData = np.ascontiguousarray(values, dtype="<f4").tobytes()
    if not spacing_known:
        pm.DerivationDescription += " Pixel spacing unknown: 1 mm stored."
        logger.warning("source has no pixel spacing; the parametric map records 1 mm")
    return pm
