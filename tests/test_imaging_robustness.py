"""Captures unlike our phantoms: other panel order, colour bar orientation and colour tables."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from sswe_node.errors import UnsupportedLayoutError
from sswe_node.imaging import Layout, PixelBox, read_instance
from sswe_node.imaging.colormap import render_colour_bar
from sswe_node.imaging.colour_bar import colour_mask, find_colour_bar
from sswe_node.imaging.elastogram import sample_colour_bar
from tests.test_imaging_captures import decoding_errors, make_capture


def _lut(name: str) -> np.ndarray:
    table = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    return np.round(table * 255.0).astype(np.uint8)


@pytest.mark.parametrize("regions", [True, False])
@pytest.mark.parametrize("arrangement", ["left-right", "top-bottom"])
def test_elastogram_in_the_second_panel(arrangement: str, regions: bool) -> None:
    cap = make_capture(arrangement=arrangement, regions=regions, elastogram_first=False, seed=5)
    (reading,) = read_instance(cap.ds, scale=cap.scale)
    assert reading.layout is Layout.DUAL_SWE
    assert reading.overlay_panel is not None
    # the plain panel is now the first one (left or top)
    if arrangement == "left-right":
        assert reading.panel.right <= reading.overlay_panel.left
    else:
        assert reading.panel.bottom <= reading.overlay_panel.top
    true_shift = (cap.plain_box[0] - cap.overlay_box[0], cap.plain_box[1] - cap.overlay_box[1])
    assert (
        reading.roi.top - reading.overlay_roi.top,
        reading.roi.left - reading.overlay_roi.left,
    ) == (true_shift)
    error, agree = decoding_errors(cap)
    assert error <= 1.0 and agree > 0.98


@pytest.mark.parametrize("regions", [True, False])
@pytest.mark.parametrize("arrangement", ["left-right", "top-bottom"])
def test_horizontal_colour_bar(arrangement: str, regions: bool) -> None:
    cap = make_capture(arrangement=arrangement, regions=regions, bar="horizontal", seed=6)
    (reading,) = read_instance(cap.ds, scale=cap.scale)
    bar = reading.colour_bar
    assert bar is not None and bar.width > 10 * bar.height  # lying, not standing
    error, agree = decoding_errors(cap)
    assert error <= 1.0 and agree > 0.98


def test_horizontal_bar_is_sampled_minimum_on_the_left() -> None:
    lying = render_colour_bar(200, 12)[::-1].transpose(1, 0, 2)  # minimum on the left
    bar = sample_colour_bar(lying.astype(np.float32), (0.0, 70.0))
    standing = sample_colour_bar(render_colour_bar(200, 12).astype(np.float32), (0.0, 70.0))
    np.testing.assert_array_equal(bar.colours, standing.colours)


@pytest.mark.parametrize("name", ["rainbow", "turbo", "viridis", "hot"])
def test_other_colour_tables_are_decoded(name: str) -> None:
    cap = make_capture(lut=_lut(name), opacity=0.7, seed=7)
    error, agree = decoding_errors(cap)
    assert error <= 1.0 and agree > 0.98


def test_hot_bar_is_found_whole_and_its_white_end_is_not_void() -> None:
    # values up to 41 on a 0-42 scale: near the white end of "hot", where colour fades out
    cap = make_capture(lut=_lut("hot"), scale=(0.0, 42.0), seed=1)
    (reading,) = read_instance(cap.ds, scale=cap.scale)
    assert reading.colour_bar == PixelBox(120, 742, 350, 756)  # with its black and white ends
    error, agree = decoding_errors(cap)
    assert error <= 0.5 and agree == 1.0


def test_half_a_doppler_bar_is_not_a_heat_bar() -> None:
    # Colour Doppler velocity bar: yellow -> red -> black -> blue -> cyan. Its upper half
    # looks like a "hot" bar without the white end.
    x = np.linspace(1.0, -1.0, 240)
    up, down = np.clip(2 * x, 0, 2), np.clip(-2 * x, 0, 2)
    red = np.stack([np.minimum(up, 1), np.clip(up - 1, 0, 1), 0 * x], axis=1)
    blue = np.stack([0 * x, np.clip(down - 1, 0, 1), np.minimum(down, 1)], axis=1)
    rgb = 255.0 * (red + blue)
    frame = np.zeros((300, 200, 3), dtype=np.float32)
    frame[30:270, 150:164] = np.clip(rgb, 0, 255)[:, None, :]
    assert find_colour_bar(frame, colour_mask(frame)) is None


def test_multiframe_dual_capture_with_the_elastogram_on_the_right() -> None:
    cap = make_capture(frames=5, elastogram_first=False, bar="horizontal", seed=8)
    readings = read_instance(cap.ds, scale=cap.scale, max_frames=3)
    assert [r.frame for r in readings] == [0, 2, 4]
    assert all(r.layout is Layout.DUAL_SWE for r in readings)
    assert len({r.overlay_roi for r in readings}) == 1
    values = [r.label_on_grid()[0] for r in readings]
    np.testing.assert_allclose(values[0], values[2], equal_nan=True)


def test_colour_in_both_panels_is_refused_with_the_bar_inside_the_plain_panel() -> None:
    # A colour flow region declares the box; the bar stands at the left edge *inside* the
    # plain panel's region, and the plain panel carries colour too: colour Doppler.
    cap = make_capture(seed=4)
    ds = cap.ds
    frame = np.frombuffer(ds.PixelData, np.uint8).reshape(ds.Rows, ds.Columns, 3).copy()
    t, l_, b, r = cap.overlay_box
    pt, pl, pb, pr = cap.plain_box
    frame[pt:pb, pl:pr] = frame[t:b, l_:r]
    frame[120:350, 378:392] = frame[120:350, 742:756]
    frame[120:350, 742:756] = 0
    ds.PixelData = frame.tobytes()
    flow = ds.SequenceOfUltrasoundRegions[0].__class__()
    flow.RegionSpatialFormat, flow.RegionDataType = 1, 2
    flow.RegionLocationMinY0, flow.RegionLocationMinX0 = t, l_
    flow.RegionLocationMaxY1, flow.RegionLocationMaxX1 = b - 1, r - 1
    ds.SequenceOfUltrasoundRegions.append(flow)
    with pytest.raises(UnsupportedLayoutError, match="both"):
        read_instance(ds, scale=cap.scale)
