"""The plain-pydicom outputs carry every attribute highdicom's own classes would write."""

from __future__ import annotations

from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pydicom

from sswe_node.outputs import (
    WARNING,
    Box,
    build_parametric_map,
    build_secondary_capture,
    source_spacing_mm,
)

MODEL = SimpleNamespace(
    name="prostate-sim", version="1.2.0", quantity="youngs-modulus", unit="kPa",
    colour_bar=(0.0, 70.0),
)  # fmt: skip

# Set on highdicom's own Contributing Equipment item only.
_HIGHDICOM_ONLY = {"ContributingEquipmentSequence/ContributionDateTime"}
# Times, random UIDs in highdicom, and what the builders set on purpose (the capture's
# DERIVED\SECONDARY and WSD, Type 2 attributes left empty, the pixels).
_NOT_COMPARED = {
    "InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime",
    "DateOfSecondaryCapture", "TimeOfSecondaryCapture", "ImageType", "ConversionType",
    "PatientOrientation", "ReferringPhysicianName", "PixelData",
}  # fmt: skip


def _paths(dataset: pydicom.Dataset, prefix: str = "") -> set[str]:
    """Return every attribute path of a dataset (sequence items merged)."""
    found = set()
    for element in dataset:
        found.add(prefix + element.keyword)
        if element.VR == "SQ":
            for child in element.value:
                found |= _paths(child, f"{prefix}{element.keyword}/")
    return found


def _same_identity(ours: pydicom.Dataset) -> dict:
    """highdicom arguments that give the same series, instance and manufacturer as ours."""
    return {
        "series_instance_uid": ours.SeriesInstanceUID,
        "series_number": ours.SeriesNumber,
        "sop_instance_uid": ours.SOPInstanceUID,
        "instance_number": ours.InstanceNumber,
        "manufacturer": "sswe-node",
    }


def _assert_covers(ours: pydicom.Dataset, theirs: pydicom.Dataset) -> None:
    assert _paths(theirs) - _HIGHDICOM_ONLY - _paths(ours) == set()
    for element in theirs:
        if element.VR != "SQ" and element.keyword not in _NOT_COMPARED:
            # An empty value reads back as '' from our (pre-encoded) elements, None from theirs;
            # our pixel data is a bytearray (written once, in place), theirs bytes.
            mine = ours[element.tag].value
            mine = bytes(mine) if isinstance(mine, bytearray) else mine
            assert str(mine or "") == str(element.value or ""), element.keyword


def test_parametric_map_has_what_highdicom_writes(make_us_source) -> None:
    source = make_us_source(frames=3)
    roi = Box(30, 40, 90, 120)
    values = np.random.default_rng(0).random(roi.shape).astype(np.float32) * 90
    spacing = source_spacing_mm(source, roi)
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
        **_same_identity(ours),
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
    _assert_covers(ours, theirs)
    shared, expected = (
        ds.SharedFunctionalGroupsSequence[0] for ds in (ours, theirs)
    )  # fmt: skip
    assert shared.RealWorldValueMappingSequence == expected.RealWorldValueMappingSequence
    assert shared.PixelMeasuresSequence == expected.PixelMeasuresSequence


def test_secondary_capture_has_what_highdicom_writes(make_us_source) -> None:
    source = make_us_source()
    rng = np.random.default_rng(0)
    bmode, values = rng.random((120, 160)) * 255, rng.random((120, 160)) * 90
    ours = build_secondary_capture(source, values, bmode, model=MODEL)
    patient = {
        name: source.get(keyword)
        for name, keyword in [
            ("patient_id", "PatientID"), ("patient_name", "PatientName"),
            ("patient_birth_date", "PatientBirthDate"), ("patient_sex", "PatientSex"),
            ("accession_number", "AccessionNumber"), ("study_id", "StudyID"),
            ("study_date", "StudyDate"), ("study_time", "StudyTime"),
        ]
    }  # fmt: skip
    theirs = hd.sc.SCImage(
        pixel_array=np.zeros((ours.Rows, ours.Columns, 3), np.uint8),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=source.StudyInstanceUID,
        **_same_identity(ours),
        **patient,
        patient_orientation=("L", "F"),
    )
    _assert_covers(ours, theirs)
