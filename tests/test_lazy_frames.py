"""Multi-frame instances read lazily: only the frames used are read from the file and decoded."""

from __future__ import annotations

import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEGBaseline8Bit, RLELossless

from sswe_node.errors import PixelDecodeError
from sswe_node.imaging import pixels, read_file, read_instance
from sswe_node.imaging.pixels import LAZY_PIXEL_BYTES, select_frames


def _multiframe(make_us_source, path: Path, frames: int, rows: int = 240, cols: int = 320) -> Path:
    ds = make_us_source(rows=rows, cols=cols, frames=frames)
    ds.save_as(path, enforce_file_format=True)
    return path


def _deferred(ds: pydicom.Dataset) -> bool:
    raw = ds.get_item("PixelData", keep_deferred=True)
    return isinstance(raw, RawDataElement) and raw.value is None


def _same_readings(lazy: list, whole: list) -> None:
    assert [r.frame for r in lazy] == [r.frame for r in whole]
    for a, b in zip(lazy, whole, strict=True):
        assert a.layout is b.layout and a.roi == b.roi
        np.testing.assert_array_equal(a.bmode, b.bmode)
        np.testing.assert_array_equal(a.model_input(), b.model_input())


@pytest.fixture
def count_decodes(monkeypatch):
    """Record the Number of Frames of every dataset handed to the pixel decoder."""
    calls: list[int] = []
    real = pixels._pixel_array

    def counting(ds, index, syntax):
        calls.append(int(ds.get("NumberOfFrames") or 1))
        return real(ds, index, syntax)

    monkeypatch.setattr(pixels, "_pixel_array", counting)
    return calls


def test_native_multiframe_reads_only_the_frames_used(
    make_us_source, tmp_path: Path, count_decodes: list[int]
) -> None:
    path = _multiframe(make_us_source, tmp_path / "cine.dcm", frames=64)  # 4.9 MB of pixels
    assert 64 * 240 * 320 > LAZY_PIXEL_BYTES
    ds = read_file(path)
    assert _deferred(ds)
    lazy = read_instance(ds, max_frames=4)
    used = select_frames(64, 4)
    assert [r.frame for r in lazy] == used
    # one decoder call per frame used, each on a one-frame copy; Pixel Data never read whole
    assert count_decodes == [1] * len(used)
    assert _deferred(ds)
    count_decodes.clear()
    whole = read_instance(pydicom.dcmread(path), max_frames=4)
    assert count_decodes == [64] * len(used)  # the whole Pixel Data in memory, frame by frame
    _same_readings(lazy, whole)


def test_native_multiframe_memory_stays_near_one_frame(make_us_source, tmp_path: Path) -> None:
    path = _multiframe(make_us_source, tmp_path / "cine.dcm", frames=128)
    size = 128 * 240 * 320  # 9.8 MB of pixels; 4 frames used: 0.3 MB of them

    def peak(read) -> int:
        tracemalloc.start()
        try:
            read_instance(read(path), max_frames=4)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    lazy, whole = peak(read_file), peak(pydicom.dcmread)
    assert whole > size  # the whole Pixel Data was held
    # what is left: the four frames' readings (float grey levels, masks) and the decoding
    assert lazy < size / 4, (lazy, whole)


def _encapsulated(make_us_source, path: Path, *, offset_table: bool) -> Path:
    ds = make_us_source(rows=120, cols=160, frames=12)
    ds.compress(RLELossless, encoding_plugin="pydicom")
    if not offset_table:  # the same fragments, an empty Basic Offset Table
        frames = list(generate_frames(ds.PixelData, number_of_frames=12))
        ds.PixelData = encapsulate(frames, has_bot=False)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("offset_table", [True, False])
def test_encapsulated_multiframe_reads_only_the_frames_used(
    make_us_source, tmp_path: Path, count_decodes: list[int], offset_table: bool
) -> None:
    path = _encapsulated(make_us_source, tmp_path / "rle.dcm", offset_table=offset_table)
    ds = pydicom.dcmread(path, defer_size=1024)
    assert _deferred(ds)
    lazy = read_instance(ds, max_frames=3)
    assert count_decodes == [1, 1, 1] and _deferred(ds)
    _same_readings(lazy, read_instance(pydicom.dcmread(path), max_frames=3))


def test_jpeg_multiframe_from_dcmtk_reads_lazily(
    make_us_source, tmp_path: Path, count_decodes: list[int]
) -> None:
    src = _multiframe(make_us_source, tmp_path / "in.dcm", frames=10, rows=120, cols=160)
    dst = tmp_path / "jpeg.dcm"
    subprocess.run(["dcmcjpeg", "+eb", str(src), str(dst)], check=True, capture_output=True)
    ds = pydicom.dcmread(dst, defer_size=1024)
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert _deferred(ds)
    lazy = read_instance(ds, max_frames=4)
    assert count_decodes == [1] * 4 and _deferred(ds)
    _same_readings(lazy, read_instance(pydicom.dcmread(dst), max_frames=4))


def test_truncated_multiframe_is_a_pixel_decode_error(make_us_source, tmp_path: Path) -> None:
    path = _multiframe(make_us_source, tmp_path / "cine.dcm", frames=64)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 240 * 320 // 2])  # half the last frame missing
    with pytest.raises(PixelDecodeError, match="cannot be decoded"):
        read_instance(read_file(path), max_frames=4)
    with pytest.raises(PixelDecodeError, match="cannot be decoded"):
        read_instance(pydicom.dcmread(path), max_frames=4)  # as when read whole
