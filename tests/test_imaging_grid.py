"""Regridding between source pixels and the model grid."""

from __future__ import annotations

import doctest
import zlib

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


def _masked_reference(
    values: np.ndarray, sd: np.ndarray | None, shape: tuple, outside: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """What ``pipeline.post_process`` did with numpy before ``from_grid_masked``."""
    out = from_grid(values, shape)
    void = None if np.isfinite(values).all() else np.isnan(out)
    if outside is not None:
        out[outside] = np.nan
        void = outside if void is None else void | outside
    sd_map = None
    if sd is not None:
        sd_map = from_grid(sd, shape)
        np.maximum(sd_map, np.float32(0), out=sd_map)
        if void is not None:
            sd_map[void] = np.nan
    return out, sd_map


def _bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)  # NaN payloads too


MASKED_SHAPES = [
    ((96, 64), (600, 900)),  # columns first, then the compiled pass along the rows
    ((96, 64), (313, 349)),
    ((96, 64), (100, 900)),  # rows first, then the compiled pass along the columns
    ((96, 64), (37, 1000)),
    ((96, 64), (160, 7)),
    ((96, 64), (1, 1)),
    ((96, 64), (1, 333)),
    ((96, 64), (517, 1)),
    ((1, 1), (5, 7)),
    ((7, 1), (1, 9)),
    ((24, 16), (96, 64)),
    ((600, 400), (96, 64)),  # downsampling as well
]
CASES = ["finite", "voids", "all-void", "infinities", "signed-zeros", "no-sd", "sd-voids"]


@pytest.mark.parametrize(("source", "target"), MASKED_SHAPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mask", ["none", "random", "fan", "all"])
def test_masked_regridding_equals_the_numpy_passes(source, target, case, mask) -> None:
    rng = np.random.default_rng(zlib.crc32(repr((source, target, case, mask)).encode()))
    values = rng.uniform(-5.0, 90.0, source).astype(np.float32)
    sd = rng.normal(2.0, 3.0, source).astype(np.float32)  # negatives: clamped at 0
    if case == "voids":
        values[rng.random(source) < 0.2] = np.nan
        values[: max(1, source[0] // 4), : max(1, source[1] // 3)] = np.nan
    elif case == "all-void":
        values[:] = np.nan
    elif case == "infinities":
        values[rng.random(source) < 0.1] = np.inf
        values[rng.random(source) < 0.1] = -np.inf
        sd[rng.random(source) < 0.1] = np.inf
    elif case == "signed-zeros":
        values[rng.random(source) < 0.5] = -0.0
        sd[rng.random(source) < 0.3] = -0.0
        sd[rng.random(source) < 0.3] = 0.0
    elif case == "sd-voids":
        sd[rng.random(source) < 0.3] = np.nan
    if case == "no-sd":
        sd = None
    outside = {
        "none": None,
        "random": rng.random(target) < 0.3,
        "fan": np.add.outer(np.arange(target[0]), -np.arange(target[1])) < 0,
        "all": np.ones(target, dtype=bool),
    }[mask]
    expected = _masked_reference(values, sd, target, outside)
    got = grid_module.from_grid_masked(values, sd, target, outside=outside)
    assert got[0].shape == target and got[0].dtype == np.float32
    np.testing.assert_array_equal(_bits(got[0]), _bits(expected[0]))
    _assert_range(got.value_range, expected[0])
    if sd is None:
        assert got.sd is None and got.sd_range is None
    else:
        np.testing.assert_array_equal(_bits(got.sd), _bits(expected[1]))
        _assert_range(got.sd_range, expected[1])


def _assert_range(found: tuple, array: np.ndarray) -> None:
    """``found`` is the NaN-ignoring range of ``array``, as numpy's fmin/fmax give it."""
    expected = (float(np.fmin.reduce(array, axis=None)), float(np.fmax.reduce(array, axis=None)))
    assert all(isinstance(v, float) for v in found)
    np.testing.assert_array_equal(np.array(found), np.array(expected))  # NaN equal to NaN


def test_masked_regridding_of_extreme_values_equals_the_numpy_passes() -> None:
    # Near the float32 limit, hi - lo overflows: inf and NaN arise in the arithmetic itself.
    rng = np.random.default_rng(11)
    for _ in range(20):
        values = (rng.choice([-1, 1], (9, 6)) * 3.3e38).astype(np.float32)
        values[rng.random((9, 6)) < 0.2] = np.nan
        sd = (rng.uniform(-3e38, 3.4e38, (9, 6))).astype(np.float32)
        outside = rng.random((40, 50)) < 0.2
        with np.errstate(over="ignore", invalid="ignore"):
            expected = _masked_reference(values, sd, (40, 50), outside)
        got = grid_module.from_grid_masked(values, sd, (40, 50), outside=outside)
        for a, b in zip(got[:2], expected, strict=True):
            np.testing.assert_array_equal(_bits(a), _bits(b))
        _assert_range(got.value_range, expected[0])
        _assert_range(got.sd_range, expected[1])


def test_masked_regridding_writes_into_the_given_arrays() -> None:
    rng = np.random.default_rng(2)
    values = rng.uniform(0, 70, (96, 64)).astype(np.float32)
    sd = rng.gamma(2.0, 3.0, (96, 64))  # float64 in: converted
    buffer = np.full(2 * 300 * 200, 7.0, dtype=np.float32)
    out = [buffer[: 300 * 200].reshape(300, 200), buffer[300 * 200 :].reshape(300, 200)]
    got = grid_module.from_grid_masked(values, sd, (300, 200), out=out)
    assert got[0] is out[0] and got[1] is out[1]
    expected = _masked_reference(values, sd.astype(np.float32), (300, 200), None)
    np.testing.assert_array_equal(_bits(out[0]), _bits(expected[0]))
    np.testing.assert_array_equal(_bits(out[1]), _bits(expected[1]))
    strided = np.linspace(0, 1, 6 * 4 * 2, dtype=np.float32).reshape(6, 8)[:, ::2]
    np.testing.assert_array_equal(
        _bits(grid_module.from_grid_masked(strided, None, (30, 20))[0]),
        _bits(from_grid(strided, (30, 20))),
    )


def test_masked_regridding_refuses_bad_shapes() -> None:
    values = np.ones((4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="positive"):
        grid_module.from_grid_masked(values, None, (0, 3))
    with pytest.raises(ValueError, match="non-empty"):
        grid_module.from_grid_masked(np.ones((0, 4)), None, (3, 3))
    with pytest.raises(ValueError, match="differ"):
        grid_module.from_grid_masked(values, np.ones((4, 5)), (3, 3))
    with pytest.raises(ValueError, match="outside"):
        grid_module.from_grid_masked(values, None, (3, 3), outside=np.ones((3, 4), dtype=bool))
    with pytest.raises(ValueError, match="out must be"):
        grid_module.from_grid_masked(values, values, (3, 3), out=[np.empty((3, 3), np.float32)])
    with pytest.raises(ValueError, match="out must be"):
        grid_module.from_grid_masked(values, None, (3, 3), out=[np.empty((3, 3))])


def test_compiled_passes_check_their_indices() -> None:
    # An index out of bounds in a compiled loop is not caught there: the kernels check first.
    from sswe_node.imaging import grid_kernels

    array = np.ones((4, 6), dtype=np.float32)
    lower, upper, weight = grid_module._taps(4, 5)
    out = np.empty((5, 6), dtype=np.float32)
    bad = upper.copy()
    bad[-1] = 4
    with pytest.raises(ValueError, match="tap outside"):
        grid_kernels.first_pass(array, lower, bad, weight, True, out)
    with pytest.raises(ValueError, match="columns differ"):
        grid_kernels.first_pass(array, lower, upper, weight, True, np.empty((5, 7), np.float32))
    with pytest.raises(ValueError, match="taps"):
        grid_kernels.first_pass(array, lower[:-1], upper, weight, True, out)
    with pytest.raises(ValueError, match="tap outside"):
        grid_kernels.second_pass(array, None, None, None, lower, bad, weight, True, None, out, None)
    with pytest.raises(ValueError, match="outside and output"):
        grid_kernels.second_pass(
            array, None, None, None, lower, upper, weight, True, np.ones((5, 5), bool), out, None
        )
    with pytest.raises(ValueError, match="sd and values"):
        grid_kernels.second_pass(
            array, None, np.ones((4, 5), np.float32), None, lower, upper, weight, True, None,
            out, np.empty((5, 6), np.float32),
        )  # fmt: skip
