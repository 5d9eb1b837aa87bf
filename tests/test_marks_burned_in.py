"""Burned-in marks and the outside of a sector fan never reach the model input or the labels."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from sswe_node.config import load_settings
from sswe_node.imaging import read_instance
from sswe_node.imaging.grid import to_grid
from sswe_node.model import load_model
from sswe_node.pipeline import process_batch
from tests.test_imaging_captures import make_capture


def _cells(box: tuple[int, int, int, int], shape: tuple[int, int], grid=(96, 64)):
    """Grid cells (a slice pair) covering a (top, left, bottom, right) box of source pixels."""
    fy, fx = grid[0] / shape[0], grid[1] / shape[1]
    top, left, bottom, right = box
    return (
        slice(int(top * fy), int(np.ceil(bottom * fy))),
        slice(int(left * fx), int(np.ceil(right * fx))),
    )


def test_aloka_wedge_and_text_do_not_reach_the_model_input() -> None:
    ds = pydicom.dcmread(get_testdata_file("gdcm-US-ALOKA-16.dcm"))
    (reading,) = read_instance(ds)
    roi = reading.roi
    frame = ds.pixel_array  # palette colour: indices, as drawn
    grey = reading.bmode
    # the grey wedge: its ultrasound region (data type 13), inside the first panel
    wedge = (40 - roi.top, 32 - roi.left, 104 - roi.top, 64 - roi.left)
    # the text "127/128 20Hz" at the top right of the panel
    text = (36 - roi.top, 250 - roi.left, 62 - roi.top, roi.right - roi.left)
    for top, left, bottom, right in (wedge, text):
        drawn = grey[top:bottom, left:right] >= 150
        assert drawn.sum() > 50 and reading.marks[top:bottom, left:right][drawn].all()
    plain = reading.model_input()
    for box in (wedge, text):
        cells = _cells(box, grey.shape)
        assert plain[cells].max() < 0.3, box  # the wedge reached 1.0, the text 0.75
    assert frame is not None
    # the rest of the panel is the image as it was
    untouched = ~(to_grid(reading.marks.astype(np.float32)) > 0.01)
    raw = np.clip(to_grid(grey) / 255.0, 0, 1)
    if reading.outside is not None:
        untouched &= ~(to_grid(reading.outside.astype(np.float32)) > 0.5)
    assert np.allclose(plain[untouched], raw[untouched], atol=1e-6)
    assert untouched.mean() > 0.8


def test_clean_captures_have_few_false_marks() -> None:
    fractions = [
        read_instance(make_capture(seed=s).ds, scale=(0.0, 80.0))[0].marks.mean() for s in range(6)
    ]
    assert max(fractions) < 0.01  # speckle grains are not graphics


@pytest.fixture(scope="module")
def annotated(tmp_path_factory: pytest.TempPathFactory) -> dict[float, Path]:
    """Dual captures with Q-Box rings, calipers, crosses and text, at full and half opacity."""
    from training.simulate import write_archive

    roots = {}
    for opacity in (1.0, 0.5):
        roots[opacity] = tmp_path_factory.mktemp("marks") / f"archive{opacity:g}"
        write_archive(roots[opacity], patients=1, seed=21, images_per_patient=2,
                      opacity=opacity, annotations=True, other_scanner=False)  # fmt: skip
    return roots


def _ring_pixels(mark: dict, origin: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    (row, col), radius = mark["points"][0], mark["size"]
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    distance = np.hypot(yy + origin[0] - row, xx + origin[1] - col)
    return np.abs(distance - radius) <= 0.5


@pytest.mark.parametrize(("opacity", "limit"), [(1.0, 1.0), (0.5, 2.0)])
def test_annotations_are_masked_and_labels_stay_accurate(annotated, opacity, limit) -> None:
    root = annotated[opacity]
    index = json.loads((root / "archive.json").read_text())
    duals = [e for e in index["instances"] if e["kind"] == "dual"]
    assert all(e["annotations"] for e in duals)
    with h5py.File(root / "ground_truth.h5", "r") as gt:
        for entry in duals:
            (reading,) = read_instance(pydicom.dcmread(root / entry["path"]))
            panel = entry["boxes"]["bmode_panel"]
            # ring pixels in ROI coordinates: the panel's origin, shifted by the ROI's
            origin = (reading.roi.top - panel[0], reading.roi.left - panel[1])
            for mark in entry["annotations"]:
                if mark["kind"] != "ring":
                    continue
                ring = _ring_pixels(mark, origin, reading.marks.shape)
                assert reading.marks[ring].mean() > 0.9, mark
            assert np.all(reading.confidence[reading.marks] == 0.0)
            truth = np.clip(gt[entry["sop_uid"]]["swe"][()], *reading.scale)
            used = np.isfinite(truth) & np.isfinite(reading.swe) & (reading.confidence > 0)
            assert np.median(np.abs(reading.swe[used] - truth[used])) <= limit


def _fan_capture(make_us_source) -> tuple[pydicom.Dataset, np.ndarray]:
    """A convex-probe-like B-mode: speckle inside a fan, black outside (apex above the top)."""
    ds = make_us_source(rows=240, cols=320, seed=9)
    pixels = np.frombuffer(ds.PixelData, np.uint8).reshape(240, 320).copy()
    pixels = np.maximum(pixels, 30)  # tissue is never exactly black
    yy, xx = np.mgrid[:240, :320]
    angle = np.degrees(np.arctan2(xx - 160.0, yy + 60.0))
    radius = np.hypot(xx - 160.0, yy + 60.0)
    fan = (np.abs(angle) <= 35.0) & (radius >= 70.0)
    pixels[~fan] = 0
    ds.PixelData = pixels.tobytes()
    return ds, fan


def test_outside_the_fan_is_masked_nan_and_black(make_us_source, tiny_model_dir, dciodvfy_errors,
                                                 tmp_path) -> None:  # fmt: skip
    ds, fan = _fan_capture(make_us_source)
    (reading,) = read_instance(ds)
    roi = reading.roi
    inside = fan[roi.slices]
    assert reading.outside is not None
    assert reading.outside[~inside].mean() > 0.9 and reading.outside[inside].mean() < 0.02
    assert np.all(reading.model_input()[to_grid((~inside).astype(np.float32)) > 0.99] == 0.0)

    model = load_model(tiny_model_dir, device="cpu")
    (result,) = process_batch([ds], model, load_settings())
    assert result.status == "done", result.message
    pm, sc = result.outputs
    values = np.frombuffer(pm.FloatPixelData, "<f4").reshape(-1, pm.Rows, pm.Columns)[0]
    assert np.isnan(values[~inside]).mean() > 0.9 and np.isfinite(values[inside]).mean() > 0.98
    path = tmp_path / "pm.dcm"
    pm.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    rgb = np.frombuffer(sc.PixelData, np.uint8).reshape(sc.Rows, sc.Columns, 3).astype(int)
    coloured = (rgb.max(axis=2) - rgb.min(axis=2)) > 20
    # colour only over the fan (the bar and the text aside): never over the black outside
    rows = np.flatnonzero(coloured.any(axis=1))
    assert coloured.sum() < 1.15 * inside.sum() + 40 * len(rows)
