"""The read_instance contract (docs/architecture.md, "Reading core")."""

from __future__ import annotations

import doctest
import subprocess
import sys

import numpy as np
import pytest

import sswe_node.imaging.reader as reader_module
from sswe_node.imaging import FrameReading, Layout, PixelBox, read_instance
from tests.test_imaging_captures import make_capture


def test_dual_reading_has_every_contract_field() -> None:
    cap = make_capture(seed=8, opacity=0.5)
    readings = read_instance(cap.ds, grid=(96, 64), scale=cap.scale, max_frames=16)
    assert isinstance(readings, list) and len(readings) == 1
    r = readings[0]
    assert isinstance(r, FrameReading)
    assert r.frame == 0 and r.layout is Layout.DUAL_SWE
    assert r.bmode.dtype == np.float32 and r.bmode.ndim == 2
    assert 0.0 <= r.bmode.min() and r.bmode.max() <= 255.0
    assert isinstance(r.roi, PixelBox) and r.bmode.shape == (r.roi.height, r.roi.width)
    assert r.roi == PixelBox(*cap.plain_box)
    assert r.panel.top <= r.roi.top and r.roi.bottom <= r.panel.bottom
    assert r.overlay_roi == PixelBox(*cap.overlay_box)
    assert r.spacing_mm == pytest.approx((0.16, 0.16))
    assert r.swe.shape == r.confidence.shape == r.bmode.shape
    assert r.swe.dtype == r.confidence.dtype == np.float32
    assert (r.quantity, r.unit, r.scale) == ("youngs-modulus", "kPa", (0.0, 80.0))
    # the plain panel's B-mode is the same tissue as under the overlay
    model = r.model_input((96, 64))
    assert model.shape == (96, 64) and model.dtype == np.float32
    assert 0.0 <= model.min() and model.max() <= 1.0
    values, confidence = r.label_on_grid((48, 32))
    assert values.shape == confidence.shape == (48, 32)
    assert r.grid_spacing_mm((96, 64)) == pytest.approx((170 * 0.16 / 96, 200 * 0.16 / 64))
    back = r.to_source(values)
    assert back.shape == r.bmode.shape
    # the grid given to read_instance is the default of the regridding methods
    (small,) = read_instance(cap.ds, grid=(48, 32), scale=cap.scale)
    assert small.model_input().shape == small.label_on_grid()[0].shape == (48, 32)


def test_multiframe_capture_yields_one_reading_per_selected_frame() -> None:
    cap = make_capture(seed=9, frames=5)
    readings = read_instance(cap.ds, scale=cap.scale, max_frames=3)
    assert [r.frame for r in readings] == [0, 2, 4]
    assert all(r.layout is Layout.DUAL_SWE for r in readings)


def test_bad_arguments() -> None:
    cap = make_capture(seed=10)
    with pytest.raises(ValueError, match="quantity"):
        read_instance(cap.ds, quantity="strain")
    with pytest.raises(ValueError, match="max > min"):
        read_instance(cap.ds, scale=(70.0, 0.0))


def test_docstring_example_runs() -> None:
    assert doctest.testmod(reader_module).failed == 0


def test_importing_the_reading_core_does_not_import_tensorflow() -> None:
    code = "import sys, sswe_node.imaging; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
