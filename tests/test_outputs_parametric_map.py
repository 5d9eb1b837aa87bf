"""Parametric Map builder: valid DICOM (dciodvfy), values read back by highdicom, geometry, UIDs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from sswe_node.outputs import WARNING, Box, build_parametric_map, source_spacing_mm

MODEL = SimpleNamespace(
    name="prostate-sim", version="1.2.0", quantity="youngs-modulus", unit="kPa",
    colour_bar=(0.0, 70.0),
)  # fmt: skip
SPEED_MODEL = SimpleNamespace(
    name="thyroid-sim", version="0.3.0", quantity="shear-wave-speed", unit="m/s",
    colour_bar=(0.0, 7.0),
)  # fmt: skip


def _values(roi: Box, high: float = 90.0, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).random(roi.shape) * high).astype(np.float32)


def _save_and_read(ds: pydicom.Dataset, path: Path) -> pydicom.Dataset:
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


@pytest.mark.parametrize(
    ("kwargs", "frame"),
    [({}, 0), ({"patient": False, "regions": False}, 0), ({"frames": 3}, 2)],
    ids=["full", "minimal-deidentified", "multi-frame"],
)
def test_valid_and_values_read_back(
    make_us_source, dciodvfy_errors, tmp_path: Path, kwargs: dict, frame: int
) -> None:
    source = make_us_source(**kwargs)
    before = source.to_json_dict()
    roi = Box(30, 40, 190, 260)
    values = _values(roi)
    pm = build_parametric_map(
        source, values, roi=roi, model=MODEL, frame=frame, spacing_mm=source_spacing_mm(source, roi)
    )
    path = tmp_path / "pm.dcm"
    back = _save_and_read(pm, path)
    assert dciodvfy_errors(path) == []
    assert source.to_json_dict() == before  # the source is never changed

    read = hd.pm.ParametricMap.from_dataset(back)
    np.testing.assert_array_equal(read.pixel_array, values)
    assert back.FloatPixelData is not None and back.Rows == roi.shape[0]
    mapping = back.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "kPa"
    assert mapping.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
    assert "synthetic SWE" in mapping.LUTExplanation
    assert mapping.DoubleFloatRealWorldValueLastValueMapped >= values.max()

    assert back.StudyInstanceUID == source.StudyInstanceUID
    assert back.SeriesInstanceUID != source.SeriesInstanceUID
    assert "DERIVED" in back.ImageType
    assert back.ImageComments == WARNING and "SYNTHETIC SWE" in back.SeriesDescription
    assert "not for diagnosis" in back.DerivationDescription.lower()
    assert back.ContentQualification == "RESEARCH"
    ref = back.SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
    if kwargs.get("frames"):
        assert ref.ReferencedFrameNumber == frame + 1
    else:
        assert "ReferencedFrameNumber" not in ref
    equipment = [e for e in back.ContributingEquipmentSequence if e.Manufacturer == "sswe-node"]
    assert equipment[0].ManufacturerModelName == "prostate-sim"
    assert "1.2.0" in equipment[0].SoftwareVersions
    assert equipment[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    if kwargs.get("patient", True):
        assert back.PatientID == source.PatientID


def test_geometry_from_ultrasound_regions(make_us_source, tmp_path: Path) -> None:
    source = make_us_source()  # regions of 0.02 cm
    roi = Box(30, 40, 130, 240)
    pm = build_parametric_map(
        source, _values(roi), roi=roi, model=MODEL, spacing_mm=source_spacing_mm(source, roi)
    )
    back = _save_and_read(pm, tmp_path / "pm.dcm")
    shared = back.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [0.2, 0.2]
    position = back.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    np.testing.assert_allclose([float(v) for v in position.ImagePositionPatient], [8, 6, 0])
    assert back.FrameOfReferenceUID
    assert "FrameOfReferenceUID" not in source


def test_real_aloka_region_spacing(dciodvfy_errors, tmp_path: Path) -> None:
    source = pydicom.dcmread(get_testdata_file("gdcm-US-ALOKA-16.dcm"))
    roi = Box(100, 100, 300, 300)
    spacing = source_spacing_mm(source, roi)
    assert spacing == pytest.approx((0.3826530650258064, 0.3826530650258064))
    pm = build_parametric_map(source, _values(roi), roi=roi, model=MODEL, spacing_mm=spacing)
    path = tmp_path / "pm.dcm"
    pm.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []


def test_unknown_spacing_is_said(make_us_source) -> None:
    source = make_us_source(regions=False)
    roi = Box(0, 0, 50, 60)
    pm = build_parametric_map(source, _values(roi), roi=roi, model=MODEL, spacing_mm=None)
    assert "spacing unknown" in pm.DerivationDescription


def test_shear_wave_speed_unit(make_us_source) -> None:
    source = make_us_source()
    roi = Box(0, 0, 40, 40)
    pm = build_parametric_map(source, _values(roi, 8.0), roi=roi, model=SPEED_MODEL)
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "m/s"
    assert "shear-wave speed" in mapping.LUTExplanation


def test_uids_are_deterministic(make_us_source) -> None:
    source = make_us_source()
    roi = Box(0, 0, 40, 50)
    first = build_parametric_map(source, _values(roi), roi=roi, model=MODEL)
    again = build_parametric_map(source, _values(roi, seed=2), roi=roi, model=MODEL)
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (
        again.SOPInstanceUID,
        again.SeriesInstanceUID,
    )
    newer = SimpleNamespace(**{**vars(MODEL), "version": "1.3.0"})
    other = build_parametric_map(source, _values(roi), roi=roi, model=newer)
    assert other.SOPInstanceUID != first.SOPInstanceUID
    assert other.SeriesInstanceUID != first.SeriesInstanceUID
    sibling = make_us_source()
    sibling.SeriesInstanceUID = source.SeriesInstanceUID
    same_series = build_parametric_map(sibling, _values(roi), roi=roi, model=MODEL)
    assert same_series.SeriesInstanceUID == first.SeriesInstanceUID
    assert same_series.SOPInstanceUID != first.SOPInstanceUID


@pytest.mark.parametrize(
    ("shape", "fill", "unit"),
    [((10, 10), 1.0, "kPa"), ((40, 50), np.nan, "kPa"), ((40, 50), 1.0, "Pa")],
    ids=["wrong-shape", "not-finite", "unknown-unit"],
)
def test_bad_arguments_are_refused(make_us_source, shape, fill, unit) -> None:
    model = SimpleNamespace(**{**vars(MODEL), "unit": unit})
    with pytest.raises(ValueError):
        build_parametric_map(
            make_us_source(), np.full(shape, fill, np.float32), roi=Box(0, 0, 40, 50), model=model
        )


@pytest.mark.parametrize("with_sd", [False, True])
def test_pixels_written_in_place_are_the_map_unchanged(make_us_source, with_sd) -> None:
    from sswe_node.imaging.grid import from_grid_masked
    from sswe_node.outputs import map_pixels

    source = make_us_source()
    roi = Box(10, 20, 50, 70)
    rng = np.random.default_rng(4)
    grid, sd_grid = rng.uniform(0, 80, (12, 8)), rng.gamma(2.0, 3.0, (12, 8))
    outside = np.zeros(roi.shape, dtype=bool)
    outside[:, :9] = True
    pixels = map_pixels(roi.shape, 2 if with_sd else 1)
    values, sd, value_range, sd_range = from_grid_masked(
        grid, sd_grid if with_sd else None, roi.shape, outside=outside, out=pixels.frames
    )
    copied = build_parametric_map(
        source, values.copy(), roi=roi, model=MODEL, sd=None if sd is None else sd.copy()
    )
    given = {"pixels": pixels}
    ranges = (value_range,) if sd is None else (value_range, sd_range)
    for kwargs in (given, {"pixels": pixels._replace(ranges=ranges)}):
        ds = build_parametric_map(source, values, roi=roi, model=MODEL, sd=sd, **kwargs)
        assert ds.FloatPixelData is pixels.buffer  # taken, not copied
        for a, b in zip(ds, copied, strict=True):
            clock = a.keyword in ("InstanceCreationTime", "ContentTime")
            assert a.tag == b.tag and (a.value == b.value or clock), a.keyword
    with pytest.raises(ValueError, match="themselves"):
        build_parametric_map(source, values.copy(), roi=roi, model=MODEL, sd=sd, pixels=pixels)
    with pytest.raises(ValueError, match="one range per frame"):
        build_parametric_map(
            source, values, roi=roi, model=MODEL, sd=sd, pixels=pixels._replace(ranges=())
        )
