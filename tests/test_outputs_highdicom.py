"""The plain-pydicom outputs carry every attribute highdicom's own classes would write."""

from __future__ import annotations

from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pydicom

from sswe_node.outputs import WARNING, Box, build_parametric_map, build_secondary_capture
from sswe_node.outputs import source_spacing_mm

MODEL = SimpleNamespace(
    name="prostate-sim", version="1.2.0", quantity="youngs-modulus", unit="kPa",
    colour_bar=(0.0, 70.0),
)  # fmt: skip


def _paths(dataset: pydicom.Dataset, prefix: str = "") -> set[str]:
    """Return every attribute path of a dataset (sequence items merged)."""
    found = set()
    for element in dataset:
        path = f"{prefix}{element.keyword}"
        found.add(path)
        if element.VR == "SQ":
            for child in element.value:
                found |= _paths(child, path + "/")
    return found


# Set on highdicom's own Contributing Equipment item, or chosen at random by highdicom.
_HIGHDICOM_ONLY = {"ContributingEquipmentSequence/ContributionDateTime"}
_VOLATILE = {
    "InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime",
    "DimensionOrganizationSequence", "DimensionIndexSequence", "ContributingEquipmentSequence",
    "ReferringPhysicianName", "ReferencedSeriesSequence",
}  # fmt: skip


def test_parametric_map_has_what_highdicom_writes(make_us_source) -> None:
    """The plain-pydicom map carries every attribute highdicom's ParametricMap would write."""
    source = make_us_source(frames=3)
    roi = Box(30, 40, 90, 120)
    values, spacing = _values(roi), source_spacing_mm(source, roi)
    ours = build_parametric_map(source, values, roi=roi, model=MODEL, frame=1, spacing_mm=spacing)

    view = pydicom.Dataset()  # what highdicom needs of the source: one frame with plane geometry
    for element in source:
        if element.keyword not in ("PixelData", "NumberOfFrames", "SequenceOfUltrasoundRegions"):
            view.add(element)
    view.SOPClassUID = pydicom.uid.UltrasoundImageStorage
    view.FrameOfReferenceUID = ours.FrameOfReferenceUID
    view.ImagePositionPatient, view.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    view.PixelSpacing, view.SliceThickness = list(spacing), 1.0
    position = ours.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    theirs = hd.pm.ParametricMap(
        source_images=[view],
        pixel_array=values,
        series_instance_uid=ours.SeriesInstanceUID,
        series_number=ours.SeriesNumber,
        sop_instance_uid=ours.SOPInstanceUID,
        instance_number=ours.InstanceNumber,
        manufacturer="sswe-node",
        manufacturer_model_name=MODEL.name,
        software_versions=MODEL.version,
        device_serial_number="0",
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[
            hd.pm.RealWorldValueMapping(
                lut_label="SSWE",
                lut_explanation="synthetic SWE Young's modulus",
                unit=hd.sr.CodedConcept("kPa", "UCUM", "kilopascal"),
                value_range=(0.0, float(values.max())),
            )
        ],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=35, window_width=70)],
        pixel_measures=hd.PixelMeasuresSequence(pixel_spacing=spacing, slice_thickness=1.0),
        plane_orientation=hd.PlaneOrientationSequence("PATIENT", [1, 0, 0, 0, 1, 0]),
        plane_positions=[
            hd.PlanePositionSequence("PATIENT", position.ImagePositionPatient, (1, 1))
        ],
        content_label="SYNTHETIC_SWE",
        content_description=WARNING,
        content_qualification="RESEARCH",
        image_flavor="STATIC",
    )
    assert _paths(theirs) - _HIGHDICOM_ONLY <= _paths(ours)
    for element in theirs:
        if element.VR != "SQ" and element.keyword not in _VOLATILE | {"PixelData"}:
            assert ours[element.tag].value == element.value, element.keyword
    mapping = ours.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    expected = theirs.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping == expected


def test_secondary_capture_has_what_highdicom_writes(make_us_source) -> None:
    """The plain-pydicom capture carries every attribute highdicom's SCImage would write."""
    source = make_us_source()
    bmode, values = _arrays()
    ours = build_secondary_capture(source, values, bmode, model=MODEL)
    theirs = hd.sc.SCImage(
        pixel_array=np.zeros((ours.Rows, ours.Columns, 3), np.uint8),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=source.StudyInstanceUID,
        series_instance_uid=ours.SeriesInstanceUID,
        series_number=ours.SeriesNumber,
        sop_instance_uid=ours.SOPInstanceUID,
        instance_number=ours.InstanceNumber,
        manufacturer="sswe-node",
        patient_id=source.PatientID,
        patient_name=source.PatientName,
        patient_birth_date=source.PatientBirthDate,
        patient_sex=source.PatientSex,
        accession_number=source.AccessionNumber,
        study_id=source.StudyID,
        study_date=source.StudyDate,
        study_time=source.StudyTime,
        patient_orientation=("L", "F"),
    )
    missing = _paths(theirs) - _paths(ours) - {"ContributingEquipmentSequence/ContributionDateTime"}
    assert missing == set()
    # Times, and what the builder sets on purpose (DERIVED\\SECONDARY, WSD, Type 2 empties).
    volatile = {"ImageType", "ConversionType", "InstanceCreationTime", "ContentTime",
                "DateOfSecondaryCapture", "TimeOfSecondaryCapture", "InstanceCreationDate",
                "ContentDate", "PatientOrientation", "ReferringPhysicianName", "PixelData"}  # fmt: skip
    for element in theirs:
        if element.VR != "SQ" and element.keyword not in volatile:
            assert str(ours[element.tag].value) == str(element.value), element.keyword
