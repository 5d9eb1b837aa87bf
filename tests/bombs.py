"""Build a deflated DICOM file whose dataset inflates to a chosen size (tests and benchmarks).

The file is written in pieces (never held whole, compressed or not), so a 1 GiB bomb costs a
few megabytes of memory to make.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, UltrasoundImageStorage

_CHUNK = 1 << 20


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def write_deflate_bomb(path: Path, sop_instance_uid: str, inflated_bytes: int) -> int:
    """Write an Ultrasound Image in Deflated Explicit VR Little Endian to ``path``.

    Its Pixel Data holds ``inflated_bytes`` zeros (rounded to an even number); the file is
    about a thousandth of that.

    Returns
    -------
    int
        The file's size in bytes.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    size = inflated_bytes + inflated_bytes % 2
    head = b"".join(
        [
            _element(0x0008, 0x0016, b"UI", str(UltrasoundImageStorage).encode()),
            _element(0x0008, 0x0018, b"UI", sop_instance_uid.encode()),
            _element(0x0008, 0x0060, b"CS", b"US"),
            _element(0x0010, 0x0020, b"LO", b"BOMB"),
            _element(0x0028, 0x0002, b"US", struct.pack("<H", 1)),
            _element(0x0028, 0x0004, b"CS", b"MONOCHROME2"),
            _element(0x0028, 0x0010, b"US", struct.pack("<H", 1)),
            _element(0x0028, 0x0011, b"US", struct.pack("<H", 1)),
            _element(0x0028, 0x0100, b"US", struct.pack("<H", 8)),
            _element(0x0028, 0x0101, b"US", struct.pack("<H", 8)),
            _element(0x0028, 0x0102, b"US", struct.pack("<H", 7)),
            _element(0x0028, 0x0103, b"US", struct.pack("<H", 0)),
            struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, size),
        ]
    )
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(_CHUNK)
    with open(path, "wb") as handle:
        handle.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(handle, meta)  # type: ignore[arg-type]
        handle.write(compressor.compress(head))
        left = size
        while left:
            piece = zeros if left >= _CHUNK else bytes(left)
            handle.write(compressor.compress(piece))
            left -= len(piece)
        handle.write(compressor.flush())
        return handle.tell()
