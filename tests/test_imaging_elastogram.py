"""Elastogram decoding: colour bar inversion, unmixing, voids, the SSI private data."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import hsv2rgb, rgb2lab

from sswe_node.errors import ElastogramDecodeError
from sswe_node.imaging import Layout, read_instance
from sswe_node.imaging.colormap import render_colour_bar
from sswe_node.imaging.elastogram import (
    SSI_PRIVATE_CREATOR,
    _lookup,
    decode_elastogram,
    sample_colour_bar,
)
from tests.test_imaging_captures import decoding_errors, make_capture


@pytest.mark.parametrize("regions", [True, False])
@pytest.mark.parametrize("arrangement", ["left-right", "top-bottom"])
def test_decoding_accuracy_at_full_and_half_opacity(arrangement: str, regions: bool) -> None:
    full, agree_full = decoding_errors(make_capture(arrangement=arrangement, regions=regions))
    half, agree_half = decoding_errors(
        make_capture(arrangement=arrangement, regions=regions, opacity=0.5, seed=1)
    )
    assert full <= 1.0 and half <= 2.0
    assert agree_full > 0.98 and agree_half > 0.98


def test_opacity_is_estimated() -> None:
    for opacity in (1.0, 0.7, 0.4):
        cap = make_capture(opacity=opacity, seed=2)
        (reading,) = read_instance(cap.ds, scale=cap.scale)
        assert reading.opacity == pytest.approx(opacity, abs=0.02)


def test_decoding_follows_the_bar_in_the_image_not_a_fixed_table() -> None:
    hue = np.linspace(0.72, 0.0, 256)  # a bright rainbow, unlike jet's dark ends
    lut = (hsv2rgb(np.stack([hue, np.ones(256), np.ones(256)], axis=1)[None])[0] * 255).round()
    cap = make_capture(lut=lut.astype(np.uint8), seed=3, opacity=0.6)
    error, agree = decoding_errors(cap)
    assert error <= 1.0 and agree > 0.98


def test_lookup_table_matches_brute_force_nearest_colour() -> None:
    bar = sample_colour_bar(render_colour_bar(230, 10).astype(np.float32), (0.0, 70.0))
    rng = np.random.default_rng(0)
    # colours near the bar (a little noise), as in compressed captures
    rows = rng.integers(0, 230, 2000)
    pixels = np.clip(bar.colours[rows] + rng.normal(0, 3, (2000, 3)), 0, 255)
    index, _ = _lookup(bar, pixels.astype(np.float32))
    lab_bar = rgb2lab(bar.colours[None] / 255.0)[0]
    lab_px = rgb2lab(pixels[None] / 255.0)[0]
    brute = np.argmin(((lab_px[:, None, :] - lab_bar[None]) ** 2).sum(axis=2), axis=1)
    values = bar.values
    assert np.median(np.abs(values[index] - values[brute])) <= 0.31  # one bar row
    assert np.percentile(np.abs(values[index] - values[brute]), 95) <= 1.0


def test_voids_are_nan_with_zero_confidence() -> None:
    cap = make_capture(seed=4)
    (reading,) = read_instance(cap.ds, scale=cap.scale)
    void = np.isnan(reading.swe)
    assert np.array_equal(void, np.isnan(cap.truth))
    assert np.all(reading.confidence[void] == 0.0)
    assert reading.confidence[~void].mean() > 0.8
    values, confidence = reading.label_on_grid((96, 64))
    assert values.shape == confidence.shape == (96, 64)
    assert np.isnan(values).any() and np.all(confidence[np.isnan(values)] == 0.0)


def test_colours_off_the_bar_are_refused() -> None:
    bar = sample_colour_bar(render_colour_bar(200, 10).astype(np.float32), (0.0, 70.0))
    box = np.zeros((50, 60, 3), dtype=np.float32)
    box[...] = (255, 0, 255)  # magenta: not on a jet bar
    with pytest.raises(ElastogramDecodeError, match="do not match the colour bar"):
        decode_elastogram(box, None, bar)
    with pytest.raises(ElastogramDecodeError, match="no colour-coded pixels"):
        decode_elastogram(np.full((50, 60, 3), 90.0, np.float32), None, bar)


def test_without_a_scale_the_elastogram_is_not_decoded() -> None:
    (reading,) = read_instance(make_capture(seed=5).ds)
    assert reading.layout is Layout.DUAL_SWE and reading.swe is None
    assert reading.notes and "scale" in reading.notes[0]
    with pytest.raises(ElastogramDecodeError):
        reading.label_on_grid()


def test_ssi_private_quantification_is_preferred() -> None:
    cap = make_capture(seed=6)
    h, w = cap.truth.shape
    raw = np.full((h, w), 42.0, dtype=np.float32)
    quality = np.full((h, w), 0.25, dtype=np.float32)
    block = cap.ds.private_block(0x8FF1, SSI_PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "OB", raw.astype("<f4").tobytes())
    block.add_new(0x02, "OB", quality.astype("<f4").tobytes())
    (reading,) = read_instance(cap.ds, scale=cap.scale)
    assert reading.swe_source == "ssi-private"
    assert np.all(reading.swe == 42.0) and np.all(reading.confidence == 0.25)
    # data of the wrong size is ignored in favour of the colours
    block.add_new(0x01, "OB", raw[:10].astype("<f4").tobytes())
    (reading,) = read_instance(cap.ds, scale=cap.scale)
    assert reading.swe_source == "colour-bar"


def test_shear_wave_speed_unit() -> None:
    cap = make_capture(seed=7, scale=(0.0, 10.0))
    (reading,) = read_instance(cap.ds, scale=cap.scale, quantity="shear-wave-speed")
    assert (reading.quantity, reading.unit, reading.scale) == ("shear-wave-speed", "m/s", (0, 10))
    ok = np.isfinite(cap.truth)
    assert np.median(np.abs(reading.swe[ok] - cap.truth[ok])) < 0.1
