"""The Parametric Map: float32 sSWE values on the region of interest, in the model's unit."""

from __future__ import annotations

import logging
import math
import sys
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.valuerep import DSfloat

from sswe_node.outputs import encoded
from sswe_node.outputs.derived import ModelInfo, derivation_description, scale_description
from sswe_node.outputs.encoded import filled_buffer
from sswe_node.outputs.geometry import (
    COLUMN_DIRECTION,
    ROW_DIRECTION,
    Box,
    roi_position_mm,
)
from sswe_node.outputs.header import (
    Code,
    ModelKey,
    code_item,
    item,
    model_key,
    new_derived,
    reference_item,
    reference_placeholder,
)
from sswe_node.outputs.labels import UCUM_MEANINGS, WARNING, quantity_name
from sswe_node.outputs.lossy import lossy_elements
from sswe_node.outputs.uids import (
    derived_series_uid,
    derived_uid,
    frame_of_reference_uid,
    source_series_uid,
)

__all__ = [
    "MapPixels",
    "build_parametric_map",
    "map_pixels",
    "LUT_LABEL",
    "SD_LUT_LABEL",
    "UNKNOWN_SPACING_MM",
    "PARAMETRIC_MAP_STORAGE",
]

logger = logging.getLogger(__name__)

#: SOP Class UID of Parametric Map Storage.
PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"

#: LUT Label of the Real World Value Mapping (SH, at most 16 characters).
LUT_LABEL = "SSWE"
#: LUT Label of the uncertainty frame (per-pixel MC dropout standard deviation).
SD_LUT_LABEL = "SSWE-SD"

#: Spacing recorded when the source states none (no ultrasound region, no Pixel Spacing).
UNKNOWN_SPACING_MM = (1.0, 1.0)

_IMAGE_TYPE = ["DERIVED", "PRIMARY", "STATIC", "QUANTITY"]
_UNSPECIFIED_CALCULATION = Code("112187", "DCM", "Unspecified method of calculation")
_IMAGE_POSITION = (0x0020, 0x0032)
_PLANE_POSITION_SEQUENCE = (0x0020, 0x9113)
_LUT_LABEL_TAG = (0x0040, 0x9210)
_REAL_WORLD_VALUE_MAPPING_SEQUENCE = (0x0040, 0x9096)


def _nan_range(array: NDArray[np.float32]) -> tuple[float, float]:
    """Return the least and greatest value ignoring NaN (NaN when all are; -inf/inf kept)."""
    return float(np.fmin.reduce(array, axis=None)), float(np.fmax.reduce(array, axis=None))


def _pixel_data(
    frames: NDArray[np.float32] | tuple[NDArray[np.float32], ...],
) -> tuple[bytes | bytearray, list[tuple[float, float]]]:
    """Return the Float Pixel Data of C-contiguous float32 frames and each one's value range.

    Each frame is copied straight into the buffer (a ``bytearray``) and its range found in the
    same pass (:func:`sswe_node.outputs.kernels.copy_range`, equal to :func:`_nan_range`).
    """
    frames = (frames,) if isinstance(frames, np.ndarray) else frames
    if sys.byteorder != "little":  # the data is little endian: numpy converts
        data = b"".join(np.ascontiguousarray(f, dtype="<f4").data for f in frames)
        return data, [_nan_range(f) for f in frames]
    from sswe_node.outputs.kernels import copy_range  # numba: imported when first needed

    ranges = []

    def fill(view: NDArray[np.uint8]) -> None:
        out = view.view(np.float32)
        start = 0
        for frame in frames:
            ranges.append(copy_range(frame.reshape(-1), out[start : start + frame.size]))
            start += frame.size

    return filled_buffer(sum(f.nbytes for f in frames), fill), ranges


class MapPixels(NamedTuple):
    """Float Pixel Data written in place by its producer: the buffer and its frames."""

    #: The whole Float Pixel Data (little endian float32), frame after frame.
    buffer: bytearray
    #: Writable float32 views of ``buffer``, one per frame: the values, then the sd.
    frames: tuple[NDArray[np.float32], ...]
    #: Each frame's ``(least, greatest)`` value ignoring NaN, when its producer found them
    #: (``np.fmin.reduce``, ``np.fmax.reduce``); None: the map finds them.
    ranges: tuple[tuple[float, float], ...] | None = None


def map_pixels(shape: tuple[int, int], frames: int) -> MapPixels | None:
    """Return a new Float Pixel Data buffer of ``frames`` frames of ``shape`` to write into.

    Whoever makes the values (e.g. :func:`sswe_node.imaging.grid.from_grid_masked`) writes
    them into ``frames`` (and may give their ranges: ``pixels._replace(ranges=...)``), and
    :func:`build_parametric_map` given ``pixels=`` takes the buffer as the map's pixel data
    as it is, without a copy: the map then holds that memory (the
    frames must not be changed afterwards). None on a big-endian machine (the data is little
    endian): write into arrays of your own.
    """
    if sys.byteorder != "little":
        return None
    rows, cols = (int(v) for v in shape)
    size = rows * cols
    buffer = bytearray(4 * size * frames)
    flat = np.frombuffer(buffer, dtype=np.float32)
    return MapPixels(
        buffer, tuple(flat[k * size : (k + 1) * size].reshape(rows, cols) for k in range(frames))
    )


def _given_pixel_data(
    pixels: MapPixels, frames: tuple[NDArray[np.float32], ...]
) -> tuple[bytearray, list[tuple[float, float]]]:
    """Return ``pixels``' buffer, which must hold ``frames``, and each frame's value range."""
    if len(frames) != len(pixels.frames) or any(
        f.shape != p.shape or f.ctypes.data != p.ctypes.data
        for f, p in zip(frames, pixels.frames, strict=False)
    ):  # fmt: skip
        raise ValueError("pixels= must hold the values (and the sd) themselves")
    if pixels.ranges is not None:
        if len(pixels.ranges) != len(frames):
            raise ValueError("pixels= must give one range per frame")
        return pixels.buffer, list(pixels.ranges)
    return pixels.buffer, [_nan_range(f) for f in frames]


def _decimals(values: tuple[float, ...]) -> list[DSfloat]:
    """Return Decimal String values of at most 16 characters (as highdicom writes them)."""
    return [DSfloat(float(v), auto_format=True) for v in values]


def _unit_item(unit: str) -> Dataset:
    if unit not in UCUM_MEANINGS:
        raise ValueError(f"unit {unit!r} is not one of {sorted(UCUM_MEANINGS)}")
    return code_item(Code(unit, "UCUM", UCUM_MEANINGS[unit]))


def _value_mapping(
    model: ModelInfo, value_range: tuple[float, float], *, sd: bool = False
) -> Dataset:
    """Return the Real World Value Mapping item of the values (or of their uncertainty)."""
    name = f"synthetic SWE {quantity_name(model.quantity)}"
    return item(
        LUTExplanation=(f"standard deviation of {name} (MC dropout)" if sd else name)[:64],
        MeasurementUnitsCodeSequence=[_unit_item(model.unit)],
        LUTLabel=SD_LUT_LABEL if sd else LUT_LABEL,
        DoubleFloatRealWorldValueLastValueMapped=value_range[1],
        DoubleFloatRealWorldValueFirstValueMapped=value_range[0],
        RealWorldValueIntercept=0.0,
        RealWorldValueSlope=1.0,
    )


def _shared_groups(
    model: ModelInfo,
    spacing: tuple[float, float],
    value_range: tuple[float, float],
    *,
    per_frame_mapping: bool = False,
    scale: tuple[float, float] | None = None,
) -> Dataset:
    """Return the functional groups of every frame: plane, spacing, window, value mapping.

    With ``per_frame_mapping`` (a map with an uncertainty frame), the value mapping is left
    to each frame's groups.
    """
    low, high = (float(v) for v in (model.colour_bar if scale is None else scale))
    mapping = _value_mapping(model, value_range)
    shared = item(
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
    )
    if not per_frame_mapping:
        shared.RealWorldValueMappingSequence = [mapping]
    return shared


def _frame_groups(
    reference: Dataset,
    position: tuple[float, float, float],
    *,
    index: tuple[int, ...] = (1,),
    mapping: Dataset | None = None,
) -> Dataset:
    """Return the functional groups of one frame: derivation, index, position (, mapping)."""
    reference.SpatialLocationsPreserved = "NO"
    groups = item(
        DerivationImageSequence=[
            item(
                SourceImageSequence=[reference],
                DerivationCodeSequence=[code_item(_UNSPECIFIED_CALCULATION)],
            )
        ],
        FrameContentSequence=[
            item(DimensionIndexValues=list(index) if len(index) > 1 else index[0])
        ],
        PlanePositionSequence=[item(ImagePositionPatient=_decimals(position))],
    )
    if mapping is not None:
        groups.RealWorldValueMappingSequence = [mapping]
    return groups


def _structure(pm: Dataset, model: ModelKey, with_sd: bool) -> None:
    """Write the sequences of a map with placeholder values, filled in per map (:func:`_fill`).

    Creating the items is most of a map's build time; their layout depends on the model and
    on whether there is an uncertainty frame only, so it is written once and copied.
    """
    _fixed_attributes(pm, model)
    placeholder = "1.2"
    pm.ReferencedSeriesSequence = [
        item(
            ReferencedInstanceSequence=[
                item(ReferencedSOPClassUID=placeholder, ReferencedSOPInstanceUID=placeholder)
            ],
            SeriesInstanceUID=placeholder,
        )
    ]
    pm.DimensionOrganizationSequence = [item(DimensionOrganizationUID=placeholder)]
    pm.DimensionIndexSequence = [
        item(
            DimensionOrganizationUID=placeholder,
            DimensionIndexPointer=_IMAGE_POSITION,
            FunctionalGroupPointer=_PLANE_POSITION_SEQUENCE,
            DimensionDescriptionLabel="Image Position Patient",
        )
    ]
    if with_sd:
        pm.DimensionIndexSequence.append(
            item(
                DimensionOrganizationUID=placeholder,
                DimensionIndexPointer=_LUT_LABEL_TAG,
                FunctionalGroupPointer=_REAL_WORLD_VALUE_MAPPING_SEQUENCE,
                DimensionDescriptionLabel="LUT Label",
            )
        )
    unit_range = (0.0, 1.0)
    pm.SharedFunctionalGroupsSequence = [
        _shared_groups(model, (1.0, 1.0), unit_range, per_frame_mapping=with_sd, scale=unit_range)
    ]

    origin = (0.0, 0.0, 0.0)
    if not with_sd:
        pm.PerFrameFunctionalGroupsSequence = [_frame_groups(reference_placeholder(), origin)]
    else:
        pm.PerFrameFunctionalGroupsSequence = [
            _frame_groups(
                reference_placeholder(),
                origin,
                index=(1, 1),
                mapping=_value_mapping(model, unit_range),
            ),
            _frame_groups(
                reference_placeholder(),
                origin,
                index=(1, 2),
                mapping=_value_mapping(model, unit_range, sd=True),
            ),
        ]


def _single_frame(pm: Dataset, model: ModelKey) -> None:
    """Write the cached part of a map without an uncertainty frame."""
    _structure(pm, model, with_sd=False)


def _with_sd_frame(pm: Dataset, model: ModelKey) -> None:
    """Write the cached part of a map with an uncertainty frame."""
    _structure(pm, model, with_sd=True)


def _set_range(mapping: Dataset, value_range: tuple[float, float]) -> None:
    mapping.DoubleFloatRealWorldValueLastValueMapped = value_range[1]
    mapping.DoubleFloatRealWorldValueFirstValueMapped = value_range[0]


_LAST_MAPPED = 0x00409213
_FIRST_MAPPED = 0x00409214
_ORGANISATION = 0x00209164
_DERIVATION_IMAGE_SEQUENCE = 0x00089124
_SOURCE_IMAGE_SEQUENCE = 0x00082112
_DERIVATION_CODE_SEQUENCE = 0x00089215
_PIXEL_MEASURES_SEQUENCE = 0x00289110
_FRAME_VOI_LUT_SEQUENCE = 0x00289132
_PLANE_POSITION = 0x00209113
_MAPPING = 0x00409096


class _Parts(NamedTuple):
    """The encoded elements of a map's sequences that do not change from one map to the next."""

    shared: dict[int, bytes]
    pixel_measures: dict[int, bytes]
    mappings: tuple[dict[int, bytes], dict[int, bytes]]
    dimensions: tuple[dict[int, bytes], ...]
    frames: tuple[dict[int, bytes], ...]
    derivation_code: bytes


@lru_cache(maxsize=16)
def _parts(model: ModelKey, with_sd: bool) -> _Parts:
    """Encode the fixed parts of the sequences :func:`_structure` lays out (once per model)."""
    pm = Dataset()
    _structure(pm, model, with_sd)
    shared = pm.SharedFunctionalGroupsSequence[0]
    frames = pm.PerFrameFunctionalGroupsSequence
    derivation = frames[0].DerivationImageSequence[0]
    return _Parts(
        shared=encoded.encoded_elements(shared),
        pixel_measures=encoded.encoded_elements(shared.PixelMeasuresSequence[0]),
        mappings=(
            encoded.encoded_elements(_value_mapping(model, (0.0, 1.0))),
            encoded.encoded_elements(_value_mapping(model, (0.0, 1.0), sd=True)),
        ),
        dimensions=tuple(encoded.encoded_elements(d) for d in pm.DimensionIndexSequence),
        frames=tuple(encoded.encoded_elements(groups) for groups in frames),
        derivation_code=encoded.encoded_elements(derivation)[_DERIVATION_CODE_SEQUENCE],
    )


def _mapping(parts: dict[int, bytes], value_range: tuple[float, float]) -> bytes:
    """Return the encoded Real World Value Mapping Sequence of one range."""
    values = {
        **parts,
        _LAST_MAPPED: encoded.encode(_LAST_MAPPED, "FD", float(value_range[1])),
        _FIRST_MAPPED: encoded.encode(_FIRST_MAPPED, "FD", float(value_range[0])),
    }
    return encoded.sequence(_MAPPING, [encoded.item(values)])


def _decimal_string(tag: int, values: tuple[float, ...]) -> bytes:
    return encoded.encode(tag, "DS", [encoded.decimal(v) for v in values])


def _sequences(
    pm_series_uid: str,
    source: Dataset,
    frame: int,
    model: ModelKey,
    *,
    spacing: tuple[float, float],
    scale: tuple[float, float],
    position: tuple[float, float, float],
    ranges: tuple[tuple[float, float], ...],
) -> dict:
    """Return the map's sequences for one source frame, as raw elements (see :func:`_structure`)."""
    parts = _parts(model, len(ranges) > 1)
    sop_class, sop_instance = str(source.SOPClassUID), str(source.SOPInstanceUID)
    instance = encoded.item(
        {
            0x00081150: encoded.encode(0x00081150, "UI", sop_class),
            0x00081155: encoded.encode(0x00081155, "UI", sop_instance),
        }
    )
    series = encoded.item(
        {
            0x0008114A: encoded.sequence(0x0008114A, [instance]),
            0x0020000E: encoded.encode(0x0020000E, "UI", source_series_uid(source)),
        }
    )
    organisation = derived_uid(pm_series_uid, "dimension-organization")
    organised = encoded.encode(_ORGANISATION, "UI", organisation)
    low, high = scale
    shared = {
        **parts.shared,
        _PIXEL_MEASURES_SEQUENCE: encoded.sequence(
            _PIXEL_MEASURES_SEQUENCE,
            [
                encoded.item(
                    {**parts.pixel_measures, 0x00280030: _decimal_string(0x00280030, spacing)}
                )
            ],
        ),
        _FRAME_VOI_LUT_SEQUENCE: encoded.sequence(
            _FRAME_VOI_LUT_SEQUENCE,
            [
                encoded.item(
                    {
                        0x00281050: _decimal_string(0x00281050, ((low + high) / 2,)),
                        0x00281051: _decimal_string(0x00281051, (high - low,)),
                    }
                )
            ],
        ),
    }
    if len(ranges) == 1:
        shared[_MAPPING] = _mapping(parts.mappings[0], ranges[0])
    reference = encoded.sequence(
        _SOURCE_IMAGE_SEQUENCE, [reference_item(source, frame, spatial=True)]
    )
    derivation = encoded.sequence(
        _DERIVATION_IMAGE_SEQUENCE,
        [
            encoded.item(
                {
                    _SOURCE_IMAGE_SEQUENCE: reference,
                    _DERIVATION_CODE_SEQUENCE: parts.derivation_code,
                }
            )
        ],
    )
    plane = encoded.sequence(
        _PLANE_POSITION, [encoded.item({0x00200032: _decimal_string(0x00200032, position)})]
    )
    frames = []
    for k, groups in enumerate(parts.frames):
        values = {**groups, _DERIVATION_IMAGE_SEQUENCE: derivation, _PLANE_POSITION: plane}
        if len(ranges) > 1:
            values[_MAPPING] = _mapping(parts.mappings[k], ranges[k])
        frames.append(encoded.item(values))
    sequences = {
        0x00081115: [series],
        0x00209221: [encoded.item({_ORGANISATION: organised})],
        0x00209222: [encoded.item({**d, _ORGANISATION: organised}) for d in parts.dimensions],
        0x52009229: [encoded.item(shared)],
        0x52009230: frames,
    }
    return {
        BaseTag(tag): encoded.raw(tag, "SQ", b"".join(items)) for tag, items in sequences.items()
    }


def _fixed_attributes(pm: Dataset, model: ModelKey) -> None:
    """Write the Parametric Map attributes that depend on nothing (once per model, cached)."""
    pm.ImageType = _IMAGE_TYPE
    pm.PixelPresentation = "MONOCHROME"
    pm.DeviceSerialNumber = "0"
    pm.ContentQualification = "RESEARCH"
    pm.ContentLabel = "SYNTHETIC_SWE"
    pm.ContentDescription = WARNING
    pm.AcquisitionContextSequence = []
    pm.PositionReferenceIndicator = None
    pm.SamplesPerPixel = 1
    pm.PhotometricInterpretation = "MONOCHROME2"
    pm.BitsAllocated = 32
    pm.BurnedInAnnotation = "NO"
    pm.RecognizableVisualFeatures = "NO"
    pm.PresentationLUTShape = "IDENTITY"


def build_parametric_map(
    source: Dataset,
    values: NDArray[np.floating],
    *,
    roi: Box | tuple[int, int, int, int],
    model: ModelInfo,
    frame: int = 0,
    spacing_mm: tuple[float, float] | None = None,
    sd: NDArray[np.floating] | None = None,
    scale: tuple[float, float] | None = None,
    scale_source: str | None = None,
    pixels: MapPixels | None = None,
) -> Dataset:
    """Build the Parametric Map of one processed source frame.

    Parameters
    ----------
    source : pydicom.dataset.Dataset
        The source instance (only its header is read; it is not changed).
    values : numpy.ndarray
        ``(rows, columns)`` predicted values in ``model.unit`` on the region of interest, in
        source pixels (the model output regridded back). Stored as float32 unchanged; NaN
        marks pixels that are not tissue (outside a sector probe's fan).
    roi : Box or tuple of int
        ``(top, left, bottom, right)`` of ``values`` in the source frame, end exclusive.
    model : ModelInfo
        Name, version, quantity, unit and colour-bar range of the model.
    frame : int
        0-based index of the frame in the source instance.
    spacing_mm : tuple of float, optional
        ``(row, column)`` spacing of source pixels; 1 mm (and a note) when unknown.
    sd : numpy.ndarray, optional
        ``(rows, columns)`` per-pixel standard deviation (MC dropout) in ``model.unit``: written
        as a second frame with its own value mapping (LUT label ``SSWE-SD``); the frames are
        told apart by a second dimension, the LUT label.
    scale : tuple of float, optional
        The colour-bar range of the source capture (:mod:`sswe_node.imaging.scale`): the
        window and the Real World Value Mapping's range; default ``model.colour_bar``.
    scale_source : str, optional
        Where ``scale`` came from, said in the Derivation Description.
    pixels : MapPixels, optional
        The buffer (:func:`map_pixels`) that ``values`` and ``sd`` were written into: taken
        as the Float Pixel Data without a copy.

    Returns
    -------
    pydicom.dataset.Dataset
        A Parametric Map (one frame, or two with ``sd``) in the source's study, positioned
        on the ROI in a Frame of Reference derived from the source.

    Raises
    ------
    ValueError
        When ``values`` and ``roi`` disagree, values are infinite or all NaN, or the unit is
        unknown.
    """
    roi = Box(*(int(v) for v in roi))
    values = np.ascontiguousarray(values, dtype=np.float32)
    if values.ndim != 2 or values.shape != roi.shape:
        raise ValueError(f"values of shape {values.shape} do not fill the ROI {roi.shape}")
    if sd is not None:
        sd = np.ascontiguousarray(sd, dtype=np.float32)
        if sd.shape != values.shape:
            raise ValueError(f"sd of shape {sd.shape} does not match the values {values.shape}")
    # Float Pixel Data (both frames) and the value ranges, in one pass over each frame.
    frames = (values,) if sd is None else (values, sd)
    if pixels is None:
        data, ranges = _pixel_data(frames)
    else:
        data, ranges = _given_pixel_data(pixels, frames)
    smallest, largest = ranges[0]
    if not (math.isfinite(smallest) and math.isfinite(largest)):  # an infinity, or all NaN
        raise ValueError("values must be finite (NaN only outside the tissue)")
    spacing_known = spacing_mm is not None
    spacing = tuple(float(s) for s in (spacing_mm or UNKNOWN_SPACING_MM))
    low, high = (float(v) for v in (model.colour_bar if scale is None else scale))
    if not high > low:
        raise ValueError(f"scale must be (min, max) with max > min, got {(low, high)}")
    value_range = (min(low, smallest), max(high, largest))
    if sd is not None:
        sd_low, sd_high = ranges[1]
        if not (math.isfinite(sd_low) and math.isfinite(sd_high)) or sd_low < 0:
            raise ValueError("sd must be finite and non-negative (NaN only outside the tissue)")
        sd_range = (0.0, max(sd_high, 1e-6))
    key = model_key(model)
    # Frame of Reference: a plane derived from the source instance (see geometry).
    elements = {
        BaseTag(tag): encoded.raw(tag, vr, encoded.value_bytes(vr, value))
        for tag, vr, value in (
            (0x00200052, "UI", frame_of_reference_uid(source)),
            (0x00280008, "IS", "1" if sd is None else "2"),
            (0x00280010, "US", values.shape[0]),
            (0x00280011, "US", values.shape[1]),
        )
    }
    elements.update(lossy_elements(source))
    elements.update(
        _sequences(
            derived_series_uid(source, model.name, model.version, "pm"),
            source,
            frame,
            key,
            spacing=spacing,
            scale=(low, high),
            position=roi_position_mm(roi, spacing),
            ranges=(value_range,) if sd is None else (value_range, sd_range),
        )
    )
    if scale_source is not None or not spacing_known:
        text = derivation_description(key)  # what the header's template says
        if scale_source is not None:
            described = scale_description((low, high), model.unit, scale_source)
            text = f"{text} {described}"[:1024]
        if not spacing_known:
            text += " Pixel spacing unknown: 1 mm stored."
            logger.warning("source has no pixel spacing; the parametric map records 1 mm")
        elements[BaseTag(0x00082111)] = encoded.text(0x00082111, "ST", text, source)
    elements[BaseTag(0x7FE00008)] = encoded.buffer_element(0x7FE00008, "OF", data)
    return new_derived(
        source,
        model,
        sop_class_uid=PARAMETRIC_MAP_STORAGE,
        kind="pm",
        frame=frame,
        fixed=_single_frame if sd is None else _with_sd_frame,
        elements=elements,
    )
