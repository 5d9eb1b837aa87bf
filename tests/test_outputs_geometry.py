"""Spacing from ultrasound regions, the derived map geometry, deterministic UIDs."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID

from sswe_node.outputs.geometry import (
    Box,
    is_multiframe,
    region_spacing_mm,
    source_spacing_mm,
)
from sswe_node.outputs.uids import derived_instance_uid, derived_uid, source_study_uid


def _region(x0, y0, x1, y1, delta_cm, units=3, spatial=1) -> Dataset:
    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType = spatial, 1
    region.RegionLocationMinX0, region.RegionLocationMinY0 = x0, y0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = x1, y1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = units
    region.PhysicalDeltaX, region.PhysicalDeltaY = delta_cm, delta_cm * 1.5
    return region


def test_the_region_overlapping_the_box_most_gives_the_spacing() -> None:
    ds = Dataset()
    ds.SequenceOfUltrasoundRegions = [
        _region(0, 0, 299, 399, 0.01),  # left panel
        _region(300, 0, 599, 399, 0.02),  # right panel
        _region(10, 10, 50, 50, 0.5, units=0),  # no physical units: ignored
        _region(0, 0, 599, 399, 0.9, spatial=3),  # spectral: ignored
    ]
    assert region_spacing_mm(ds, Box(50, 350, 200, 550)) == pytest.approx((0.3, 0.2))
    assert region_spacing_mm(ds, Box(50, 20, 200, 250)) == pytest.approx((0.15, 0.1))
    assert region_spacing_mm(ds, Box(500, 700, 510, 710)) is None  # outside every region
    assert region_spacing_mm(ds) == pytest.approx((0.15, 0.1))  # the largest region


def test_spacing_falls_back_to_pixel_spacing() -> None:
    ds = Dataset()
    assert source_spacing_mm(ds) is None
    ds.PixelSpacing = [0.25, 0.3]
    assert source_spacing_mm(ds) == (0.25, 0.3)
    ds.SequenceOfUltrasoundRegions = [_region(0, 0, 99, 99, 0.02)]
    assert source_spacing_mm(ds, Box(0, 0, 10, 10)) == pytest.approx((0.3, 0.2))


def test_map_geometry_is_derived_without_touching_the_source(make_us_source) -> None:
    from types import SimpleNamespace

    from sswe_node.outputs import build_parametric_map

    model = SimpleNamespace(
        name="m", version="1", quantity="youngs-modulus", unit="kPa", colour_bar=(0.0, 70.0)
    )
    source = make_us_source(frames=2, patient=False)
    del source.StudyInstanceUID
    before = source.to_json_dict()
    values = np.ones((20, 30), np.float32)
    pm = build_parametric_map(source, values, roi=Box(10, 20, 30, 50), model=model, frame=1,
                              spacing_mm=(0.2, 0.3))  # fmt: skip
    assert source.to_json_dict() == before
    assert "FrameOfReferenceUID" not in source and "ImagePositionPatient" not in source
    again = build_parametric_map(source, values, roi=Box(0, 0, 20, 30), model=model)
    assert pm.FrameOfReferenceUID == again.FrameOfReferenceUID  # one per source instance
    assert pm.StudyInstanceUID == source_study_uid(source)  # derived, stable
    assert "PatientID" in pm and not pm.PatientID and not pm.PatientName  # Type 2: empty
    groups = pm.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in groups.PixelMeasuresSequence[0].PixelSpacing] == [0.2, 0.3]
    position = pm.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    assert [float(v) for v in position.ImagePositionPatient] == [6.0, 2.0, 0.0]
    assert is_multiframe(source) and pm.NumberOfFrames == 1
    derivation = pm.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    reference = derivation.SourceImageSequence[0]
    assert reference.ReferencedSOPClassUID == source.SOPClassUID  # the real class, not a stand-in
    assert reference.ReferencedFrameNumber == 2
    listed = pm.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert listed.ReferencedSOPClassUID == source.SOPClassUID


def test_uids_are_valid_stable_and_distinct(make_us_source) -> None:
    uid = derived_uid("1.2.3", "model", "1.0", "pm")
    assert UID(uid).is_valid and len(uid) <= 64 and uid.startswith("2.25.")
    assert uid == derived_uid("1.2.3", "model", "1.0", "pm")
    assert uid != derived_uid("1.2.3", "model", "1.0", "sc")
    assert derived_uid("1.2.3", "ab") != derived_uid("1.2.3a", "b")  # parts are separated
    source = make_us_source(frames=3)
    frames = {derived_instance_uid(source, f, "m", "1", "pm") for f in range(3)}
    assert len(frames) == 3
    with pytest.raises(TypeError):
        derived_uid()


def test_real_file_without_regions_has_no_spacing() -> None:
    from pydicom.data import get_testdata_file

    assert source_spacing_mm(pydicom.dcmread(get_testdata_file("US1_UNCR.dcm"))) is None
