"""The compiled output kernels equal the numpy code they replace, bit for bit, on random inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sswe_node.outputs import kernels, render


def _numpy_capture(bmode, values, scale, uncertain=None, **texts) -> np.ndarray:
    """The capture as the numpy passes drew it (render._grey, render._overlay, repeat, frame)."""
    low, high = (float(v) for v in scale)
    lut = render._default_lut()
    grey = render._grey(np.asarray(bmode, dtype=np.float32))
    values = np.asarray(values, dtype=np.float32)
    overlay = render._overlay(grey, values, (low, high), lut, uncertain)
    factor = min(
        math.ceil(render.MIN_PANEL_ROWS / bmode.shape[0]),
        render.MAX_PANEL_COLUMNS // bmode.shape[1],
    )
    factor = max(1, factor)
    if factor > 1:
        grey = grey.repeat(factor, axis=0).repeat(factor, axis=1)
        overlay = overlay.repeat(factor, axis=0).repeat(factor, axis=1)
    rows, cols = grey.shape
    frame = render._frame(rows, cols, low, high, **texts, lut_bytes=lut.tobytes())
    canvas = frame.canvas.copy()
    top, left = frame.top, render._MARGIN
    for channel in range(3):
        canvas[top : top + rows, left : left + cols, channel] = grey
    canvas[top : top + rows, frame.x_overlay : frame.x_overlay + cols] = overlay
    canvas.reshape(-1, 3)[frame.text_index] = frame.text_colour
    return canvas


def _inputs(shape, seed):
    rng = np.random.default_rng(seed)
    bmode = rng.uniform(-20, 280, shape).astype(np.float32)
    bmode[rng.random(shape) < 0.02] = np.nan
    bmode.flat[:7] = [0.5, 1.5, 2.5, 254.5, 255.5, -0.0, np.inf]  # ties round to even
    values = rng.uniform(-10, 90, shape).astype(np.float32)
    values[rng.random(shape) < 0.05] = np.nan
    values.flat[:4] = [np.inf, -np.inf, 0.0, 70.0]
    # Values that land exactly half-way between two colour entries (ties: rint to even).
    step = 70.0 / 255
    halves = (np.arange(1, 30) + 0.5) * step
    values.flat[10 : 10 + halves.size] = halves.astype(np.float32)
    sd = rng.gamma(2.0, 3.0, shape).astype(np.float32)
    sd[rng.random(shape) < 0.02] = np.nan
    sd.flat[20:23] = [6.0, np.nextafter(np.float32(6), np.float32(7)), 5.999999]
    return bmode, values, sd


@pytest.mark.parametrize(
    "shape,seed", [((300, 410), 1), ((120, 160), 2), ((45, 700), 3), ((161, 33), 4), ((7, 5), 5)]
)
def test_the_capture_kernel_equals_the_numpy_passes(shape, seed) -> None:
    bmode, values, sd = _inputs(shape, seed)
    texts = {"title": "sSWE test", "unit": "kPa", "legend": "hatched", "banner": render.OOD_BANNER}
    for threshold in (6.0, 6.000000001, 0.1):
        uncertain = sd > threshold  # numpy compares the float32 sd in float32
        expected = _numpy_capture(bmode, values, (0, 70), uncertain, **texts)
        from_sd = render.render_capture(
            bmode, values, (0, 70), uncertain=sd, threshold=threshold, **texts
        )
        from_mask = render.render_capture(bmode, values, (0, 70), uncertain=uncertain, **texts)
        np.testing.assert_array_equal(from_sd, expected)
        np.testing.assert_array_equal(from_mask, expected)
    # A float64 standard deviation is compared in float64, as numpy does.
    sd64 = sd.astype(np.float64) + 1e-9
    expected = _numpy_capture(bmode, values, (0, 70), sd64 > 6.0, **texts)
    np.testing.assert_array_equal(
        render.render_capture(bmode, values, (0, 70), uncertain=sd64, threshold=6.0, **texts),
        expected,
    )
    plain = {"title": "t", "unit": "m/s", "legend": None, "banner": None}
    for scale in ((0, 70), (-3.5, 12.25), (10, 10.5)):
        np.testing.assert_array_equal(
            render.render_capture(bmode, values, scale, title="t", unit="m/s"),
            _numpy_capture(bmode, values, scale, **plain),
        )


def test_the_capture_kernel_takes_other_layouts() -> None:
    bmode, values, sd = _inputs((200, 150), 7)
    texts = {"title": "t", "unit": "kPa", "legend": None, "banner": None}
    expected = _numpy_capture(bmode, values, (0, 70), sd > 6.0, **texts)
    drawn = render.render_capture(
        np.asfortranarray(bmode), values.astype(np.float64), (0, 70),
        uncertain=np.asfortranarray(sd), threshold=6.0, title="t", unit="kPa",
    )  # fmt: skip
    np.testing.assert_array_equal(drawn, expected)


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 61, 4099])
def test_copy_range_equals_fmin_fmax_and_copies(size) -> None:
    rng = np.random.default_rng(size)
    for nan_share in (0.0, 0.3, 0.97):
        values = rng.normal(10, 30, size).astype(np.float32)
        values[rng.random(size) < nan_share] = np.nan
        out = np.empty(size, np.float32)
        low, high = kernels.copy_range(values, out)
        assert out.tobytes() == values.tobytes()
        if size and not np.isnan(values).all():
            assert low == float(np.fmin.reduce(values))
            assert high == float(np.fmax.reduce(values))
        else:
            assert math.isnan(low) and math.isnan(high)
    if size:
        values = np.full(size, np.nan, np.float32)
        values[-1] = np.inf
        assert kernels.copy_range(values, np.empty(size, np.float32)) == (math.inf, math.inf)
        values[0] = -np.inf
        assert kernels.copy_range(values, np.empty(size, np.float32))[0] == -math.inf
