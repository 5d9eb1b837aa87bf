"""The colour Secondary Capture: B-mode with the sSWE overlay, colour bar and burned-in warning."""

from __future__ import annotations

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from sswe_node.outputs.derived import (
    MANUFACTURER,
    ModelInfo,
    contributing_equipment,
    mark_derived,
)
from sswe_node.outputs.geometry import is_multiframe
from sswe_node.outputs.labels import quantity_name
from sswe_node.outputs.numbering import derived_instance_number, derived_series_number
from sswe_node.outputs.render import render_capture
from sswe_node.outputs.uids import (
    derived_instance_uid,
    derived_series_uid,
    source_study_uid,
)

__all__ = ["build_secondary_capture", "capture_title"]

_PATIENT_ORIENTATION_VALUES = {"A", "P", "L", "R", "H", "F"}


def capture_title(model: ModelInfo) -> str:
    """Return the second header line burned into the capture."""
    return (
        f"sSWE {quantity_name(model.quantity)} ({model.unit}) - model {model.name} {model.version}"
    )


def _text(source: Dataset, keyword: str) -> str | None:
    value = source.get(keyword, None)
    return None if value is None or str(value) == "" else str(value)


def _source_reference(source: Dataset, frame: int) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if is_multiframe(source):
        item.ReferencedFrameNumber = frame + 1
    item.PurposeOfReferenceCodeSequence = [
        hd.sr.CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)
    ]
    return item


def _patient_orientation(source: Dataset) -> tuple[str, str] | None:
    value = source.get("PatientOrientation", None)
    if value is None or isinstance(value, str) or len(value) != 2:
        return None
    row, col = (str(v) for v in value)
    if set(row) <= _PATIENT_ORIENTATION_VALUES and set(col) <= _PATIENT_ORIENTATION_VALUES:
        if row and col and len(row) == 1 and len(col) == 1:
            return (row, col)
    return None


def build_secondary_capture(
    source: Dataset,
    values: NDArray[np.floating],
    bmode: NDArray[np.floating],
    *,
    model: ModelInfo,
    frame: int = 0,
    scale: tuple[float, float] | None = None,
) -> Dataset:
    """Build the colour Secondary Capture of one processed source frame.

    Parameters
    ----------
    source : pydicom.dataset.Dataset
        The source instance (only its header is read; it is not changed).
    values : numpy.ndarray
        ``(rows, columns)`` predicted values in ``model.unit`` on the region of interest.
    bmode : numpy.ndarray
        ``(rows, columns)`` grey B-mode of the same region, 0-255.
    model : ModelInfo
        Name, version, quantity, unit and colour-bar range of the model.
    frame : int
        0-based index of the frame in the source instance.
    scale : tuple of float, optional
        Colour-bar range; default ``model.colour_bar``.

    Returns
    -------
    highdicom.sc.SCImage
        An RGB, derived Secondary Capture in the source's study with the warning burned in
        (Burned In Annotation YES) and written in Image Comments and Derivation Description.
    """
    scale = tuple(model.colour_bar) if scale is None else scale
    pixels = render_capture(bmode, values, scale, title=capture_title(model), unit=model.unit)
    orientation = _patient_orientation(source)
    sc = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=source_study_uid(source),
        series_instance_uid=derived_series_uid(source, model.name, model.version, "sc"),
        series_number=derived_series_number(source, "sc"),
        sop_instance_uid=derived_instance_uid(source, frame, model.name, model.version, "sc"),
        instance_number=derived_instance_number(source, frame),
        manufacturer=MANUFACTURER,
        patient_id=_text(source, "PatientID"),
        patient_name=_text(source, "PatientName"),
        patient_birth_date=_text(source, "PatientBirthDate"),
        patient_sex=_text(source, "PatientSex"),
        accession_number=_text(source, "AccessionNumber"),
        study_id=_text(source, "StudyID"),
        study_date=_text(source, "StudyDate"),
        study_time=_text(source, "StudyTime"),
        referring_physician_name=_text(source, "ReferringPhysicianName"),
        # Required by highdicom for a patient image; replaced below when the source has none.
        patient_orientation=orientation or ("L", "F"),
        contributing_equipment=contributing_equipment(model),
    )
    if orientation is None:
        sc.PatientOrientation = None  # Type 2: unknown for ultrasound
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.BurnedInAnnotation = "YES"
    sc.ManufacturerModelName = model.name[:64]
    sc.SoftwareVersions = str(model.version)[:64]
    sc.ConversionType = "WSD"
    sc.SourceImageSequence = [_source_reference(source, frame)]
    sc.DerivationCodeSequence = [hd.sr.CodedConcept.from_code(codes.DCM.ImageProcessing)]
    mark_derived(sc, source, model, "SC")
    return sc
