"""The uncertainty frame of the Parametric Map and the greyed-out capture (issue 12)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pydicom

from sswe_node.outputs import Box, build_parametric_map, build_secondary_capture
from sswe_node.outputs.parametric_map import LUT_LABEL, SD_LUT_LABEL
from sswe_node.outputs.render import render_capture

MODEL = SimpleNamespace(
    name="prostate-sim", version="1.2.0", quantity="youngs-modulus", unit="kPa",
    colour_bar=(0.0, 70.0),
)  # fmt: skip


def test_parametric_map_has_an_sd_frame(make_us_source, dciodvfy_errors, tmp_path: Path) -> None:
    source = make_us_source()
    roi = Box(30, 40, 190, 260)
    rng = np.random.default_rng(2)
    values = (rng.random(roi.shape) * 70).astype(np.float32)
    sd = (rng.random(roi.shape) * 9).astype(np.float32)
    pm = build_parametric_map(source, values, roi=roi, model=MODEL, spacing_mm=(0.2, 0.2), sd=sd)
    path = tmp_path / "pm.dcm"
    pm.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    back = pydicom.dcmread(path)
    assert back.NumberOfFrames == 2
    frames = back.PerFrameFunctionalGroupsSequence
    labels = [f.RealWorldValueMappingSequence[0].LUTLabel for f in frames]
    assert labels == [LUT_LABEL, SD_LUT_LABEL]
    for f in frames:
        unit = f.RealWorldValueMappingSequence[0].MeasurementUnitsCodeSequence[0]
        assert unit.CodeValue == "kPa"
    assert [list(f.FrameContentSequence[0].DimensionIndexValues) for f in frames] == [
        [1, 1],
        [1, 2],
    ]
    read = hd.pm.ParametricMap.from_dataset(back)
    np.testing.assert_array_equal(read.pixel_array[0], values)
    np.testing.assert_array_equal(read.pixel_array[1], sd)


def test_capture_greys_out_uncertain_pixels_and_shows_the_legend() -> None:
    rng = np.random.default_rng(0)
    bmode = rng.random((200, 150)).astype(np.float32) * 255
    values = np.full((200, 150), 40.0, np.float32)
    sd = np.zeros((200, 150), np.float32)
    sd[:, 75:] = 20.0  # the right half is uncertain
    plain = render_capture(bmode, values, (0, 70), title="t", unit="kPa")
    hatched = render_capture(
        bmode, values, (0, 70), title="t", unit="kPa", uncertain=sd > 10, legend="sd > 10 kPa"
    )
    assert hatched.shape[0] > plain.shape[0]  # one more text line: the legend
    # The overlay panel: left half identical colours, right half changed (hatched, greyed).
    top = hatched.shape[0] - plain.shape[0]
    diff = np.any(hatched[top:] != plain, axis=2)
    panel = diff[:, 150 + 12 : 300]
    assert panel[:, 80:].mean() > 0.3 and panel[:, :60].mean() < 0.01


def test_capture_banner_for_out_of_distribution(make_us_source) -> None:
    source = make_us_source()
    values = np.full((160, 220), 30.0, np.float32)
    bmode = np.full((160, 220), 100.0, np.float32)
    normal = build_secondary_capture(source, values, bmode, model=MODEL)
    flagged = build_secondary_capture(source, values, bmode, model=MODEL, out_of_distribution=True)
    assert flagged.Rows > normal.Rows
    assert "OUTSIDE THE MODEL'S TRAINING DATA" in flagged.ImageComments
    pixels = flagged.pixel_array
    assert np.any(np.all(pixels[:40] == (255, 64, 64), axis=-1))
    assert not np.any(np.all(normal.pixel_array == (255, 64, 64), axis=-1))
