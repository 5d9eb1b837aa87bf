"""Regridding between source pixels and the model grid."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import sswe_node.imaging.grid as grid_module
from sswe_node.imaging.grid import from_grid, grid_spacing_mm, to_grid


def test_linear_ramp_is_preserved_in_physical_units() -> None:
    # A ramp in physical position: bilinear regridding must reproduce it at the cell centres.
    h, w = 600, 400
    rows = (np.arange(h) + 0.5) / h
    cols = (np.arange(w) + 0.5) / w
    ramp = 10.0 * rows[:, None] + 3.0 * cols[None, :]
    out = to_grid(ramp, (96, 64))
    gr = (np.arange(96) + 0.5) / 96
    gc = (np.arange(64) + 0.5) / 64
    expected = 10.0 * gr[:, None] + 3.0 * gc[None, :]
    np.testing.assert_allclose(out[1:-1, 1:-1], expected[1:-1, 1:-1], atol=1e-4)
    assert out.dtype == np.float32


def test_round_trip_of_a_smooth_field() -> None:
    yy, xx = np.mgrid[0:170, 0:200]
    smooth = 30.0 + 10.0 * np.sin(yy / 40.0) * np.cos(xx / 50.0)
    back = from_grid(to_grid(smooth, (96, 64)), smooth.shape)
    assert back.shape == smooth.shape
    assert np.abs(back - smooth)[5:-5, 5:-5].max() < 0.5


def test_voids_stay_void_and_do_not_bleed() -> None:
    field = np.full((120, 80), 50.0)
    field[:60] = np.nan
    out = to_grid(field, (24, 16))
    assert np.isnan(out[:10]).all()
    assert np.allclose(out[14:], 50.0)  # no NaN or shrinkage from the void neighbours


def test_spacing_of_the_grid_cells() -> None:
    assert grid_spacing_mm((600, 400), (0.16, 0.16), (96, 64)) == pytest.approx((1.0, 1.0))
    assert grid_spacing_mm((600, 400), None) is None


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="2-D"):
        to_grid(np.zeros((4, 4, 3)), (2, 2))


def test_docstring_examples() -> None:
    assert doctest.testmod(grid_module).failed == 0
