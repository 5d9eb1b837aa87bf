"""Pixel decoding on real files (pydicom-data) across transfer syntaxes and photometrics."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, RLELossless

from sswe_node.errors import (
    CorruptDicomError,
    ImageTooLargeError,
    NotUltrasoundError,
    PixelDecodeError,
    UnsupportedLayoutError,
    UnsupportedTransferSyntaxError,
)
from sswe_node.imaging import Layout, read_file, read_instance
from sswe_node.imaging.pixels import check_ultrasound, decode_frame, select_frames
from tests.test_imaging_captures import decoding_errors, make_capture


def _read(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def test_rgb_uncompressed_and_jpeg2000_decode_to_the_same_image() -> None:
    ref = decode_frame(_read("US1_UNCR.dcm"))
    assert ref.shape == (480, 640, 3) and ref.dtype == np.float32
    assert 0.0 <= ref.min() and ref.max() <= 255.0
    lossless = decode_frame(_read("US1_J2KR.dcm"))  # YBR_RCT
    np.testing.assert_array_equal(lossless, ref)
    lossy = decode_frame(_read("US1_J2KI.dcm"))  # YBR_ICT
    assert np.mean(np.abs(lossy - ref)) < 3.0


def test_palette_colour_in_every_encoding_decodes_identically() -> None:
    ref = decode_frame(_read("OBXXXX1A.dcm"))
    assert ref.shape == (600, 800, 3)
    for name in ("OBXXXX1A_expb.dcm", "OBXXXX1A_rle.dcm"):
        np.testing.assert_allclose(decode_frame(_read(name)), ref)
    aloka = decode_frame(_read("gdcm-US-ALOKA-16.dcm"))  # 16-bit palette entries
    np.testing.assert_allclose(decode_frame(_read("gdcm-US-ALOKA-16_big.dcm")), aloka)
    assert aloka.max() <= 255.0 and aloka.max() > 200.0


def test_jpeg_baseline_ybr_full_422_is_converted_to_rgb() -> None:
    ds = _read("examples_ybr_color.dcm")
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    frame = decode_frame(ds, 3)
    assert frame.shape == (240, 320, 3)
    # grey ultrasound content stays grey after the colour conversion
    tissue = frame[60:200, 100:260]
    assert np.mean(tissue.max(axis=2) - tissue.min(axis=2)) < 6.0


def test_jpeg_lossless_monochrome() -> None:
    frame = decode_frame(_read("JPGLosslessP14SV1_1s_1f_8b.dcm"))
    assert frame.shape == (768, 1024) and frame.max() > 200.0


def test_monochrome1_is_inverted() -> None:
    ds = _read("JPGLosslessP14SV1_1s_1f_8b.dcm")
    normal = decode_frame(ds)
    ds.PhotometricInterpretation = "MONOCHROME1"
    np.testing.assert_allclose(decode_frame(ds), 255.0 - normal)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_our_capture_survives_lossless_compression(syntax: str) -> None:
    cap = make_capture(seed=5)
    ref = decode_frame(cap.ds)
    ds = copy.deepcopy(cap.ds)
    ds.compress(syntax)
    np.testing.assert_array_equal(decode_frame(ds), ref)


@pytest.mark.parametrize(
    ("flags", "photometric"), [(["+e1"], "RGB"), (["+eb", "+q", "95"], "YBR_FULL_422")]
)
def test_dcmtk_jpeg_captures_read_as_dual(
    tmp_path: Path, flags: list[str], photometric: str
) -> None:
    cap = make_capture(seed=6)
    src, dst = tmp_path / "in.dcm", tmp_path / "out.dcm"
    cap.ds.save_as(src, enforce_file_format=True)
    subprocess.run(["dcmcjpeg", *flags, str(src), str(dst)], check=True, capture_output=True)
    ds = read_file(dst)
    assert ds.PhotometricInterpretation == photometric
    cap.ds = ds
    error, void_agreement = decoding_errors(cap)
    assert error < 1.0 and void_agreement > 0.97


def test_multiframe_frames_are_evenly_spaced() -> None:
    assert select_frames(120, 16)[:3] == [0, 8, 16] and select_frames(120, 16)[-1] == 119
    assert select_frames(5, 16) == [0, 1, 2, 3, 4]
    assert select_frames(5, None) == [0, 1, 2, 3, 4]
    assert select_frames(9, 1) == [0]
    readings = read_instance(_read("examples_ybr_color.dcm"), max_frames=4)  # 30 frames
    assert [r.frame for r in readings] == [0, 10, 19, 29]
    assert all(r.layout is Layout.BMODE for r in readings)


def test_ct_is_not_ultrasound() -> None:
    with pytest.raises(NotUltrasoundError, match="CT Image Storage") as info:
        read_instance(_read("CT_small.dcm"))
    assert info.value.reason == "wrong-modality"
    volume = _read("US1_UNCR.dcm")
    volume.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.2"
    with pytest.raises(UnsupportedLayoutError, match="3D"):
        read_instance(volume)


def test_corrupt_file_gives_typed_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptDicomError, match="not DICOM"):
        read_file(garbage)
    data = Path(get_testdata_file("US1_UNCR.dcm")).read_bytes()
    half = tmp_path / "half.dcm"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(PixelDecodeError, match="cannot be decoded"):
        read_instance(read_file(half))
    header = tmp_path / "header.dcm"
    header.write_bytes(data[:700])
    with pytest.raises(CorruptDicomError, match="no Pixel Data"):
        read_instance(read_file(header))


def test_broken_jpeg2000_stream_is_a_pixel_decode_error() -> None:
    ds = _read("US1_J2KR.dcm")
    ds.PixelData = ds.PixelData[:2000]
    with pytest.raises(PixelDecodeError, match="JPEG 2000"):
        decode_frame(ds)


def test_unknown_transfer_syntax_and_photometric() -> None:
    ds = _read("US1_UNCR.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2
    with pytest.raises(UnsupportedTransferSyntaxError, match="MPEG2"):
        decode_frame(ds)
    ds = _read("US1_UNCR.dcm")
    ds.PhotometricInterpretation = "HSV"
    with pytest.raises(UnsupportedTransferSyntaxError, match="HSV"):
        check_ultrasound(ds)


def test_missing_image_attributes_and_size_limit() -> None:
    ds = _read("US1_UNCR.dcm")
    del ds.Rows
    with pytest.raises(CorruptDicomError, match="Rows"):
        read_instance(ds)
    with pytest.raises(ImageTooLargeError, match="max_image_pixels"):
        read_instance(_read("US1_UNCR.dcm"), max_pixels=100_000)


@pytest.mark.parametrize(
    "name",
    [
        "SC_ybr_full_uncompressed.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "SC_rgb_dcmtk_+eb+cy+s2.dcm",  # JPEG baseline, YBR_FULL_422
        "SC_rgb_rle.dcm",
    ],
)
def test_ybr_and_rle_encodings_of_one_image_decode_alike(name: str) -> None:
    ref = decode_frame(_read("SC_rgb.dcm"))
    frame = decode_frame(_read(name))
    assert frame.shape == ref.shape == (100, 100, 3)
    assert np.mean(np.abs(frame - ref)) < 1.0 and np.max(np.abs(frame - ref)) <= 8.0


def test_datasets_built_in_memory_without_file_meta() -> None:
    cap = make_capture(seed=12)
    del cap.ds.file_meta  # native pixel data: the dataset's own encoding is used
    (reading,) = read_instance(cap.ds, scale=cap.scale)
    assert reading.layout is Layout.DUAL_SWE
    compressed = make_capture(seed=12).ds
    compressed.compress(RLELossless)
    del compressed.file_meta
    with pytest.raises(CorruptDicomError, match="Transfer Syntax UID"):
        read_instance(compressed)
