"""Reading the colour bar's printed range with Tesseract (issue 9): what is read, what refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont

from sswe_node.imaging import read_instance
from sswe_node.imaging.boxes import PixelBox
from sswe_node.imaging.pixels import decode_frame
from sswe_node.imaging.scale_labels import (
    BarLabels,
    _end_windows,
    _exact_key,
    clear_label_cache,
    read_bar_labels,
)
from tests.test_imaging_captures import make_capture


def simulated(root: Path, **options: object) -> list[tuple[dict, pydicom.Dataset]]:
    """Write a small simulated archive; return its dual captures with their records."""
    from training.simulate import write_archive

    write_archive(root, patients=1, other_scanner=False, **options)
    index = json.loads((root / "archive.json").read_text())
    return [
        (entry, pydicom.dcmread(root / entry["path"]))
        for entry in index["instances"]
        if entry["kind"] == "dual"
    ]


@pytest.fixture(scope="module")
def kpa_captures(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[dict, pydicom.Dataset]]:
    """Prostate dual captures with per-acquisition scales (40-300 kPa) and annotations."""
    root = tmp_path_factory.mktemp("kpa") / "archive"
    return simulated(
        root, seed=13, images_per_patient=4, scales="random", annotations=True, opacity=0.8
    )


@pytest.fixture(scope="module")
def speed_captures(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[dict, pydicom.Dataset]]:
    """Thyroid dual captures (m/s bars, 5-10 m/s), JPEG baseline compressed."""
    root = tmp_path_factory.mktemp("speed") / "archive"
    return simulated(
        root, seed=2, organ="thyroid", images_per_patient=3, scales="random", jpeg=True
    )


def _labels_of(entry: dict, ds: pydicom.Dataset) -> BarLabels | None:
    return read_bar_labels(decode_frame(ds, 0), PixelBox(*entry["boxes"]["colour_bar"]))


def test_every_simulated_scale_is_read_exactly(kpa_captures, speed_captures) -> None:
    clear_label_cache()
    seen = set()
    for entry, ds in [*kpa_captures, *speed_captures]:
        labels = _labels_of(entry, ds)
        assert labels is not None, entry["scale_max"]
        assert (labels.low, labels.high, labels.unit) == (
            entry["scale_min"],
            entry["scale_max"],
            entry["unit"],
        )
        seen.add((labels.high, labels.unit))
    assert len({unit for _, unit in seen}) == 2 and len(seen) >= 4  # several scales, both units


def test_a_series_costs_one_ocr(kpa_captures, monkeypatch: pytest.MonkeyPatch) -> None:
    import pytesseract

    entry, ds = kpa_captures[0]
    clear_label_cache()
    first = _labels_of(entry, ds)
    assert first is not None

    def no_more_ocr(*args: object, **kwargs: object) -> None:
        raise AssertionError("the bar was read again")

    monkeypatch.setattr(pytesseract, "image_to_data", no_more_ocr)
    # the next frame of the series: the same bar, labels under other noise in the image
    frame = decode_frame(ds, 0).copy()
    frame[: frame.shape[0] // 2, : frame.shape[1] // 3] += 1.0
    assert read_bar_labels(frame, PixelBox(*entry["boxes"]["colour_bar"])) == first


def test_the_exact_cache_key_sees_every_pixel_near_the_bar_ends() -> None:
    frame, bar = _capture_frame()
    key = _exact_key(frame, bar)
    assert _exact_key(frame.copy(), bar) == key
    for end in _end_windows(bar, frame.shape):
        # the first and last rows, and a row between two others (every row counts)
        for row, col in (
            (end.top, end.left),
            (end.top + 1, end.right - 1),
            (end.bottom - 1, end.left),
        ):
            changed = frame.copy()
            changed[row, col, 1] ^= 1
            assert _exact_key(changed, bar) != key, (row, col)


def _draw(frame: np.ndarray, texts: list[tuple[tuple[int, int], str]]) -> np.ndarray:
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    for (x, y), text in texts:
        draw.text((x, y), text, fill=(235, 235, 235), font=ImageFont.load_default(size=13))
    return np.asarray(image)


def _capture_frame(**options: object) -> tuple[np.ndarray, PixelBox]:
    cap = make_capture(**options)
    (reading,) = read_instance(cap.ds, scale=cap.scale, find_marks=False)
    return decode_frame(cap.ds, 0).astype(np.uint8), reading.colour_bar


def test_a_lying_bar_is_read_at_both_ends() -> None:
    frame, bar = _capture_frame(bar="horizontal", scale=(0.0, 300.0))
    mid = (bar.top + bar.bottom) // 2 - 7
    frame = _draw(frame, [((bar.left - 14, mid), "0"), ((bar.right + 5, mid), "300 kPa")])
    clear_label_cache()
    labels = read_bar_labels(frame, bar)
    assert labels is not None and (labels.scale, labels.unit) == ((0.0, 300.0), "kPa")


@pytest.mark.parametrize(
    ("top", "bottom"),
    [
        ("", ""),  # no labels at all
        ("kPa", "0"),  # no number at the maximum
        ("5000 kPa", "0"),  # out of any scanner's range
        ("70", "0"),  # no unit anywhere
        ("70 kPa", "90"),  # minimum above the maximum
        ("7.0 m/s", "0 kPa"),  # two units
    ],
)
def test_missing_or_implausible_labels_are_not_used(top: str, bottom: str) -> None:
    frame, bar = _capture_frame()
    frame = _draw(
        frame, [((bar.left - 6, bar.top - 18), top), ((bar.right + 4, bar.bottom - 8), bottom)]
    )
    clear_label_cache()
    assert read_bar_labels(frame, bar) is None


def test_a_bar_without_labels_still_needs_a_scale() -> None:
    cap = make_capture(scale=(0.0, 80.0))  # no text beside the bar
    (unscaled,) = read_instance(cap.ds)
    assert unscaled.swe is None and unscaled.scale is None and unscaled.scale_source is None
    assert "no colour bar scale" in unscaled.notes[0]
    (given,) = read_instance(cap.ds, scale=cap.scale)
    assert given.scale == (0.0, 80.0) and given.scale_source == "option"
    assert given.swe is not None
