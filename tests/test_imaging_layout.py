"""Layout classification on real scanner files and synthetic captures."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from sswe_node.errors import UnsupportedLayoutError
from sswe_node.imaging import Layout, PixelBox, read_instance
from sswe_node.imaging.colormap import render_colour_bar
from sswe_node.imaging.colour_bar import colour_mask, find_colour_bar
from sswe_node.imaging.regions import read_regions
from tests.test_imaging_captures import make_capture


def _read(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file(name))


@pytest.mark.parametrize("name", ["gdcm-US-ALOKA-16.dcm", "gdcm-US-ALOKA-16_big.dcm"])
def test_aloka_dual_bmode_view_reads_as_its_left_panel(name: str) -> None:
    # Two side-by-side B-mode panels, no SWE: documented as a B-mode reading of the first panel.
    (reading,) = read_instance(_read(name))
    assert reading.layout is Layout.BMODE
    assert reading.layout_source == "regions"
    assert reading.roi == PixelBox(24, 32, 416, 336) == reading.panel
    assert reading.spacing_mm == pytest.approx((0.3826530, 0.3826530))
    assert reading.bmode.shape == (392, 304)
    assert reading.swe is None and reading.overlay_roi is None
    model_input = reading.model_input()
    assert model_input.shape == (96, 64) and model_input.dtype == np.float32
    assert 0.0 <= model_input.min() and model_input.max() <= 1.0 and model_input.std() > 0.02


def test_regions_are_read_with_spacing_in_mm() -> None:
    regions = read_regions(_read("OBXXXX1A.dcm"))
    assert [(r.spatial_format, r.data_type) for r in regions] == [(1, 1), (4, 10)]
    assert regions[0].box == PixelBox(60, 120, 519, 801)
    assert regions[0].spacing_mm == pytest.approx((0.2622879, 0.2622879))
    assert "ECG" in regions[1].description


def test_bmode_with_ecg_trace_is_a_bmode() -> None:
    (reading,) = read_instance(_read("OBXXXX1A.dcm"))
    assert reading.layout is Layout.BMODE
    assert reading.roi == PixelBox(60, 120, 519, 800)  # region clipped to the 800 columns


def test_fullscreen_bmode_without_regions_finds_the_sector() -> None:
    ds = _read("JPGLosslessP14SV1_1s_1f_8b.dcm")
    del ds.SequenceOfUltrasoundRegions
    (reading,) = read_instance(ds)
    assert reading.layout is Layout.BMODE and reading.layout_source == "pixels"
    roi = reading.roi
    # the sector spans rows ~165-660 and columns ~135-910 of the 768 x 1024 frame
    assert 120 <= roi.top <= 200 and 600 <= roi.bottom <= 720
    assert 100 <= roi.left <= 180 and 860 <= roi.right <= 960
    assert reading.spacing_mm is None


@pytest.mark.parametrize("name", ["US1_UNCR.dcm", "US1_J2KI.dcm", "color-pl.dcm"])
def test_colour_doppler_frames_are_unsupported(name: str) -> None:
    with pytest.raises(UnsupportedLayoutError, match="colour Doppler"):
        read_instance(_read(name))


def _add_region(ds: Dataset, box: tuple[int, int, int, int], fmt: int, data_type: int) -> None:
    item = Dataset()
    item.RegionSpatialFormat = fmt
    item.RegionDataType = data_type
    item.RegionLocationMinY0, item.RegionLocationMinX0 = box[0], box[1]
    item.RegionLocationMaxY1, item.RegionLocationMaxX1 = box[2] - 1, box[3] - 1
    if "SequenceOfUltrasoundRegions" not in ds:
        ds.SequenceOfUltrasoundRegions = Sequence()
    ds.SequenceOfUltrasoundRegions.append(item)


def test_spectral_doppler_region_is_unsupported_with_its_name() -> None:
    ds = make_capture(seed=1).ds
    _add_region(ds, (300, 30, 430, 700), 3, 3)
    with pytest.raises(UnsupportedLayoutError, match="PW spectral Doppler") as info:
        read_instance(ds, scale=(0, 80))
    assert info.value.reason == "unsupported-layout"


def test_m_mode_region_is_unsupported() -> None:
    ds = _read("JPGLosslessP14SV1_1s_1f_8b.dcm")
    _add_region(ds, (400, 14, 700, 1010), 2, 1)
    with pytest.raises(UnsupportedLayoutError, match="M-mode"):
        read_instance(ds)


def test_colour_flow_region_as_swe_box_of_a_dual_capture() -> None:
    cap = make_capture(seed=2)
    _add_region(cap.ds, cap.overlay_box, 1, 2)  # how SWE scanners declare the SWE box
    (reading,) = read_instance(cap.ds, scale=cap.scale)
    assert reading.layout is Layout.DUAL_SWE
    assert reading.overlay_roi == PixelBox(*cap.overlay_box)
    assert reading.roi == PixelBox(*cap.plain_box)


def test_colour_flow_region_without_plain_panel_is_doppler() -> None:
    ds = _read("US1_UNCR.dcm")
    _add_region(ds, (100, 10, 340, 630), 1, 1)
    _add_region(ds, (150, 88, 295, 547), 1, 2)
    with pytest.raises(UnsupportedLayoutError, match="colour Doppler"):
        read_instance(ds)


def test_colour_in_both_panels_is_unsupported() -> None:
    cap = make_capture(seed=4)
    frame = np.frombuffer(cap.ds.PixelData, np.uint8).reshape(cap.ds.Rows, cap.ds.Columns, 3)
    frame = frame.copy()
    t, l_, b, r = cap.overlay_box
    pt, pl, pb, pr = cap.plain_box
    frame[pt:pb, pl:pr] = frame[t:b, l_:r]
    cap.ds.PixelData = frame.tobytes()
    with pytest.raises(UnsupportedLayoutError, match="both|more than one"):
        read_instance(cap.ds, scale=cap.scale)


def test_colour_bar_is_found_by_shape_and_hue_not_position() -> None:
    frame = np.zeros((300, 400, 3), dtype=np.float32)
    frame[40:240, 333:345] = render_colour_bar(200, 12)
    frame[20:60, 20:140] = (255, 200, 0)  # an orange label: not a bar
    frame[100:260, 200:206] = (0, 255, 0)  # a tall green line: no hue sweep
    bar = find_colour_bar(frame, colour_mask(frame))
    assert bar == PixelBox(40, 333, 240, 345)
    grey_bar = np.repeat(np.linspace(255, 0, 200)[:, None, None], 3, axis=2)
    frame[40:240, 333:345] = np.repeat(grey_bar, 12, axis=1)
    assert find_colour_bar(frame, colour_mask(frame)) is None


def test_coloured_interface_band_is_not_an_overlay() -> None:
    # Philips' blue header band and logo: a B-mode, not colour Doppler, even without regions
    ds = _read("OBXXXX1A.dcm")
    del ds.SequenceOfUltrasoundRegions
    (reading,) = read_instance(ds)
    assert reading.layout is Layout.BMODE
    # the visible tissue is the bright top of the sector, below the 60-row header band
    assert reading.roi.top >= 60 and reading.roi.bottom <= 200
    assert 300 <= reading.roi.left and reading.roi.right <= 620


def test_aloka_without_regions_reads_its_left_panel() -> None:
    ds = _read("gdcm-US-ALOKA-16.dcm")
    del ds.SequenceOfUltrasoundRegions
    (reading,) = read_instance(ds)
    assert reading.layout is Layout.BMODE and reading.layout_source == "pixels"
    region = PixelBox(24, 32, 416, 336)
    assert abs(reading.roi.top - region.top) <= 8 and abs(reading.roi.bottom - region.bottom) <= 8
    assert abs(reading.roi.left - region.left) <= 8 and abs(reading.roi.right - region.right) <= 16
