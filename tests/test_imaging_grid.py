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


def _skimage_reference(array: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The first implementation (scikit-image ``resize``), and its valid-weight map."""
    from skimage.transform import resize

    def bilinear(values: np.ndarray) -> np.ndarray:
        return resize(values, shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True)

    valid = np.isfinite(array)
    den = bilinear(valid.astype(np.float32))
    if valid.all():
        return bilinear(array).astype(np.float32), den
    num = bilinear(np.where(valid, array, 0.0))
    out = np.full(shape, np.nan, dtype=np.float32)
    ok = den > 0.5
    out[ok] = num[ok] / den[ok]
    return out, den


SHAPES = [
    ((96, 64), (600, 900)),  # from_grid: a wide SWE box
    ((96, 64), (431, 287)),  # from_grid: odd sizes
    ((600, 400), (96, 64)),  # to_grid: the paper's ROI
    ((517, 733), (96, 64)),
    ((96, 64), (96, 64)),  # identity
    ((1, 1), (5, 7)),
    ((7, 1), (1, 9)),
    ((33, 17), (100, 3)),  # up along one axis, down along the other
    ((3, 200), (50, 50)),
]


@pytest.mark.parametrize(("source", "target"), SHAPES)
def test_matches_the_first_implementation(source: tuple, target: tuple) -> None:
    rng = np.random.default_rng(source[0] * 1000 + target[1])
    values = rng.uniform(0.0, 70.0, source).astype(np.float32)
    expected, _ = _skimage_reference(values, target)
    out = to_grid(values, target)
    assert out.shape == target and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=0, atol=5e-5)
    np.testing.assert_allclose(from_grid(values, target), expected, rtol=0, atol=5e-5)


@pytest.mark.parametrize(("source", "target"), SHAPES)
def test_matches_the_first_implementation_with_voids(source: tuple, target: tuple) -> None:
    rng = np.random.default_rng(7 + source[1] * 1000 + target[0])
    values = rng.uniform(0.0, 10.0, source).astype(np.float32)
    values[rng.random(source) < 0.3] = np.nan
    # Blobs of void as well as scattered pixels, as around real SWE-box voids.
    values[: max(1, source[0] // 3), : max(1, source[1] // 4)] = np.nan
    expected, den = _skimage_reference(values, target)
    out = from_grid(values, target)
    # A cell whose valid weight is within rounding of the 0.5 threshold may fall either way.
    settled = np.abs(den - 0.5) > 1e-5
    np.testing.assert_array_equal(np.isnan(out)[settled], np.isnan(expected)[settled])
    both = np.isfinite(out) & np.isfinite(expected)
    np.testing.assert_allclose(out[both], expected[both], rtol=0, atol=5e-5)
    if min(source) >= 3:  # big enough for both voids and values to reach the output
        assert np.isnan(expected).any() and np.isfinite(expected).any()


def test_infinite_values_are_voids() -> None:
    field = np.full((40, 40), 5.0, dtype=np.float32)
    field[:20] = np.inf
    out = to_grid(field, (8, 8))
    assert np.isnan(out[:3]).all()
    assert np.allclose(out[5:], 5.0)


def test_other_dtypes_and_strided_input() -> None:
    rng = np.random.default_rng(3)
    values = rng.uniform(0.0, 255.0, (120, 90))
    expected, _ = _skimage_reference(values.astype(np.float32), (24, 18))
    np.testing.assert_allclose(to_grid(values, (24, 18)), expected, atol=1e-4)  # float64 in
    wide = np.repeat(values, 2, axis=1)[:, ::2]  # a non-contiguous view
    np.testing.assert_allclose(to_grid(wide, (24, 18)), expected, atol=1e-4)
    grey = values.astype(np.uint8)
    expected_grey, _ = _skimage_reference(grey.astype(np.float32), (240, 180))
    np.testing.assert_allclose(from_grid(grey, (240, 180)), expected_grey, atol=1e-4)


def test_empty_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        from_grid(np.ones((4, 4)), (0, 3))
    with pytest.raises(ValueError, match="non-empty"):
        from_grid(np.ones((0, 4)), (3, 3))
