"""Secondary Capture builder: valid RGB capture with overlay, colour bar and burned-in warning."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from sswe_node.imaging.colormap import jet_lut
from sswe_node.outputs import WARNING, build_secondary_capture
from sswe_node.outputs.render import render_capture
from sswe_node.outputs.secondary_capture import capture_title

MODEL = SimpleNamespace(
    name="prostate-sim", version="1.2.0", quantity="youngs-modulus", unit="kPa",
    colour_bar=(0.0, 70.0),
)  # fmt: skip


def _arrays(shape: tuple[int, int] = (120, 160)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    bmode = (rng.random(shape) * 255).astype(np.float32)
    values = np.tile(np.linspace(0, 70, shape[1], dtype=np.float32), (shape[0], 1))
    return bmode, values


@pytest.mark.parametrize(
    "source_name",
    ["full", "minimal-deidentified", "multi-frame", "US1_UNCR.dcm", "gdcm-US-ALOKA-16.dcm"],
)
def test_valid_derived_capture(
    make_us_source, dciodvfy_errors, tmp_path: Path, source_name: str
) -> None:
    if source_name == "full":
        source = make_us_source()
    elif source_name == "minimal-deidentified":
        source = make_us_source(patient=False, regions=False)
    elif source_name == "multi-frame":
        source = make_us_source(frames=4)
    else:
        source = pydicom.dcmread(get_testdata_file(source_name))
    frame = 3 if source_name == "multi-frame" else 0
    bmode, values = _arrays()
    sc = build_secondary_capture(source, values, bmode, model=MODEL, frame=frame)
    path = tmp_path / "sc.dcm"
    sc.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []

    back = pydicom.dcmread(path)
    assert back.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    picture = render_capture(
        bmode, values, MODEL.colour_bar, title=capture_title(MODEL), unit="kPa"
    )
    np.testing.assert_array_equal(hd.Image.from_dataset(back).get_frame(1), picture)
    assert back.PhotometricInterpretation == "RGB" and back.SamplesPerPixel == 3
    assert back.BurnedInAnnotation == "YES"
    assert list(back.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert back.ImageComments == WARNING
    assert "not for diagnosis" in back.DerivationDescription.lower()
    assert back.StudyInstanceUID == source.StudyInstanceUID
    assert back.PatientID == source.get("PatientID", "")
    ref = back.SourceImageSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (
        source.SOPClassUID,
        source.SOPInstanceUID,
    )
    assert ref.get("ReferencedFrameNumber") == (4 if source_name == "multi-frame" else None)
    equipment = back.ContributingEquipmentSequence[-1]
    assert (equipment.Manufacturer, equipment.ManufacturerModelName) == (
        "sswe-node",
        "prostate-sim",
    )
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    purposes = [
        e.PurposeOfReferenceCodeSequence[0].CodeValue for e in back.ContributingEquipmentSequence
    ]
    assert purposes == (["109101", "109102"] if source.get("Manufacturer") else ["109102"])


def test_picture_has_panels_bar_and_warning() -> None:
    bmode, values = _arrays((120, 160))
    picture = render_capture(bmode, values, (0.0, 70.0), title="sSWE test", unit="kPa")
    assert picture.dtype == np.uint8 and picture.ndim == 3
    # The warning is burned in yellow into the header, above the panels.
    yellow = np.all(picture == (255, 255, 0), axis=2)
    rows = np.nonzero(yellow.any(axis=1))[0]
    assert rows.size and rows.max() < 20
    # Small regions are enlarged; the plain B-mode panel is grey, the overlay is coloured.
    factor = 2  # 120 rows -> at least 160
    top = picture.shape[0] - 6 - 120 * factor
    left_panel = picture[top : top + 240, 6 : 6 + 320].astype(int)
    assert np.all(left_panel[..., 0] == left_panel[..., 1])
    overlay = picture[top : top + 240, 6 + 320 + 6 : 6 + 640 + 6].astype(int)
    assert np.abs(overlay[..., 0] - overlay[..., 2]).mean() > 30
    # The colour bar runs from the table's last colour (top) to its first (bottom).
    bar = picture[top : top + 240, 6 + 640 + 12 + 5]
    lut = jet_lut()
    assert np.abs(bar[0].astype(int) - lut[-1]).max() <= 2
    assert np.abs(bar[-1].astype(int) - lut[0]).max() <= 2


def test_nan_values_leave_the_bmode_visible() -> None:
    bmode, values = _arrays((200, 100))
    values[:] = np.nan
    picture = render_capture(bmode, values, (0.0, 70.0), title="t", unit="kPa")
    top = picture.shape[0] - 6 - 200
    overlay = picture[top : top + 200, 6 + 100 + 6 : 6 + 200 + 6]
    np.testing.assert_array_equal(overlay[..., 0], np.round(bmode).astype(np.uint8))


def test_uids_are_deterministic_and_distinct_from_the_map(make_us_source) -> None:
    from sswe_node.outputs import Box, build_parametric_map

    source = make_us_source()
    bmode, values = _arrays()
    first = build_secondary_capture(source, values, bmode, model=MODEL)
    again = build_secondary_capture(source, values, bmode, model=MODEL)
    assert first.SOPInstanceUID == again.SOPInstanceUID
    pm = build_parametric_map(source, values, roi=Box(0, 0, 120, 160), model=MODEL)
    assert pm.SOPInstanceUID != first.SOPInstanceUID
    assert pm.SeriesInstanceUID != first.SeriesInstanceUID


@pytest.mark.parametrize(
    ("body_part", "laterality", "expected"),
    [(None, None, ""), ("PROSTATE", None, "absent"), ("BREAST", None, ""), ("BREAST", "L", "L")],
)
def test_laterality_follows_body_part(
    make_us_source, dciodvfy_errors, tmp_path: Path, body_part, laterality, expected
) -> None:
    from sswe_node.outputs import Box, build_parametric_map

    source = make_us_source()
    if body_part:
        source.BodyPartExamined = body_part
    if laterality:
        source.Laterality = laterality
    bmode, values = _arrays((40, 50))
    outputs = [
        build_secondary_capture(source, values, bmode, model=MODEL),
        build_parametric_map(source, values, roi=Box(0, 0, 40, 50), model=MODEL),
    ]
    for i, derived in enumerate(outputs):
        if expected == "absent":
            assert "Laterality" not in derived
        else:
            assert (derived["Laterality"].value or "") == expected
        path = tmp_path / f"{i}.dcm"
        derived.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == []


@pytest.mark.parametrize("shape", [(4, 900), (3, 3), (600, 20)])
def test_odd_region_shapes_give_bounded_pictures(shape) -> None:
    bmode, values = _arrays(shape)
    picture = render_capture(bmode, values, (0.0, 70.0), title="t", unit="kPa")
    assert picture.shape[1] <= 2 * 1024 + 200 and picture.shape[0] <= 800
    assert picture.shape[0] >= shape[0]
