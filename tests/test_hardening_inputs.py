"""Hardening (issue 11, item 6): malformed inputs end in a clear reason, never ``internal``."""

from __future__ import annotations

import json
import logging
import random
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from sswe_node.cli import main
from sswe_node.errors import (
    CorruptDicomError,
    DicomInputError,
    PixelDecodeError,
    UnsupportedLayoutError,
)
from sswe_node.imaging.reader import read_instance
from sswe_node.quiet import quiet_libraries
from tests.test_imaging_captures import make_capture


def _cropped(columns: int | None = None, rows: int | None = None):
    ds = make_capture(seed=1, regions=False).ds
    pixels = ds.pixel_array[: rows or ds.Rows, : columns or ds.Columns].copy()
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.PixelData = pixels.tobytes()
    return ds


def test_cropped_captures_are_read_or_refused_as_unsupported_layout() -> None:
    # Cuts through the colour bar (columns 742-756, rows 120-350) and just beside it.
    crops = [{"columns": c} for c in range(736, 762, 2)] + [{"rows": r} for r in (125, 200, 345)]
    outcomes = []
    for crop in crops:
        try:
            read_instance(_cropped(**crop), scale=(0.0, 80.0))
            outcomes.append("read")
        except DicomInputError as exc:  # anything else (ValueError, IndexError) is a defect
            outcomes.append(exc.reason)
    assert set(outcomes) <= {"read", UnsupportedLayoutError.reason}
    assert UnsupportedLayoutError.reason in outcomes and "read" in outcomes


def test_bits_allocated_1_is_corrupt_not_misread() -> None:
    ds = make_capture(seed=1).ds
    ds.BitsAllocated = 1
    with pytest.raises(CorruptDicomError, match="Bits Allocated 1"):
        read_instance(ds, scale=(0.0, 80.0))


def test_rows_that_do_not_match_the_pixel_data_are_corrupt() -> None:
    ds = make_capture(seed=1).ds
    ds.Rows = ds.Rows - 10  # the pixels of 10 rows left over: the geometry is not the data's
    with pytest.raises(CorruptDicomError, match="do not match the pixels"):
        read_instance(ds, scale=(0.0, 80.0))


def test_random_bytes_behind_a_file_header_are_corrupt_not_another_modality(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    header = BytesIO()
    header.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(header, meta)
    (tmp_path / "in").mkdir()
    noise = random.Random(0).randbytes(1 << 20)
    (tmp_path / "in" / "noise.dcm").write_bytes(header.getvalue() + noise)
    argv = ["convert", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--json"]
    main(argv)
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped"] == []
    assert [item["reason"] for item in summary["failed"]] == ["corrupt"]


def test_an_expected_decode_failure_is_one_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ds = dcmread(get_testdata_file("examples_ybr_color.dcm"))  # JPEG baseline, multi-frame
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    noise = random.Random(1)
    # Each frame keeps its JPEG start marker, then noise: no decoder can read it.
    ds.PixelData = encapsulate([frame[:2] + noise.randbytes(len(frame) - 2) for frame in frames])
    quiet_libraries("INFO")
    with caplog.at_level(logging.INFO), pytest.raises(PixelDecodeError):
        read_instance(ds)
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert tracebacks == []
