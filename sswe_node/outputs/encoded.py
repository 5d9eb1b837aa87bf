"""Pre-encoded data elements (Explicit VR Little Endian): outputs without pydicom's conversions.

pydicom converts and validates every value it is given (tag look-ups, UID and number types,
regular expressions): ~10 us an attribute, most of a derived object's header. The builders
write the attributes of each object as :class:`pydicom.dataelem.RawDataElement` instead, the
bytes pydicom itself would write, encoded here directly (ASCII text, UIDs, numbers, nested
sequences and items of defined length). A dataset of raw elements reads back as any other
(pydicom converts an element when it is first accessed) and is written as it is
(``Dataset.set_original_encoding``). The tests compare the files with those of pydicom's own
encoding, byte for byte.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.tag import BaseTag
from pydicom.valuerep import DSfloat

__all__ = [
    "buffer_element",
    "decimal",
    "element",
    "encode",
    "encoded_elements",
    "filled_buffer",
    "item",
    "raw",
    "raw_dataset",
    "raw_file_meta",
    "sequence",
    "text",
    "value_bytes",
]

#: VRs with a 4-byte length (and 2 reserved bytes) in Explicit VR.
_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
_BINARY = {"US": "H", "UL": "I", "SS": "h", "SL": "i", "FD": "d", "FL": "f"}
_ITEM = b"\xfe\xff\x00\xe0"


def decimal(value: float) -> str:
    """Return a Decimal String value of at most 16 characters, as pydicom writes a DSfloat."""
    return str(DSfloat(float(value), auto_format=True))


def value_bytes(vr: str, value: object) -> bytes:
    """Return the encoded value (padded to even length) of one of our own attributes.

    Text is ASCII (the builders' own strings); numbers of text VRs (IS, DS) are given as
    strings or ints; ``None`` or an empty list is an empty value.
    """
    if value is None or (isinstance(value, list | tuple) and not value):
        return b""
    if isinstance(value, bytes):  # OB, OF...: as given, padded
        return value + b"\0" if len(value) % 2 else value
    if vr in _BINARY:
        values = value if isinstance(value, list | tuple) else (value,)
        return struct.pack(f"<{len(values)}{_BINARY[vr]}", *values)
    if vr == "AT":
        tags = value if isinstance(value, list) else [value]
        return b"".join(struct.pack("<HH", t >> 16, t & 0xFFFF) for t in tags)
    if isinstance(value, list | tuple):
        value = "\\".join(str(v) for v in value)
    data = str(value).encode("ascii")
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    return data


def element(tag: int, vr: str, value: bytes) -> bytes:
    """Return a whole encoded element: tag, VR, length and the (already encoded) value."""
    group, number = tag >> 16, tag & 0xFFFF
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHI", group, number, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, number, vr.encode(), len(value)) + value


def encode(tag: int, vr: str, value: object) -> bytes:
    """Return a whole encoded element of one of our own values (see :func:`value_bytes`)."""
    return element(tag, vr, value_bytes(vr, value))


def item(elements: Mapping[int, bytes]) -> bytes:
    """Return a sequence item (defined length) of encoded elements, in tag order."""
    body = b"".join(elements[tag] for tag in sorted(elements))
    return _ITEM + struct.pack("<I", len(body)) + body


def sequence(tag: int, items: Iterable[bytes]) -> bytes:
    """Return an encoded sequence element (defined length) of encoded items."""
    return element(tag, "SQ", b"".join(items))


def raw(tag: int, vr: str, value: bytes) -> RawDataElement:
    """Return a raw element of an encoded value (sequence: its encoded items)."""
    return RawDataElement(BaseTag(tag), vr, len(value), value, 0, False, True)


def encoded_elements(dataset: Dataset, encodings: Sequence[str] | None = None) -> dict[int, bytes]:
    """Return each element of ``dataset`` as pydicom encodes it (for what is written once).

    Elements of an ambiguous VR (``OB or OW``) are left out: they are written as elements.
    """
    result = {}
    for elem in dataset:
        if elem.VR is None or len(elem.VR) != 2:
            continue
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, False
        write_data_element(buffer, elem, list(encodings or [default_encoding]))
        result[int(elem.tag)] = buffer.getvalue()
    return result


def _as_raw(tag: int, data: bytes) -> RawDataElement:
    vr = data[4:6].decode()
    offset = 12 if vr in _LONG_VRS else 8
    return raw(tag, vr, data[offset:])


def raw_elements(dataset: Dataset, encodings: Sequence[str] | None = None) -> dict:
    """Return ``{tag: RawDataElement}`` of a dataset's elements (ambiguous VRs as they are)."""
    encoded = encoded_elements(dataset, encodings)
    result = {}
    for elem in dataset:
        tag = int(elem.tag)
        data = encoded.get(tag)
        result[BaseTag(tag)] = _as_raw(tag, data) if data is not None else elem
    return result


def raw_dataset(elements: dict, character_set: str | Sequence[str] | None) -> Dataset:
    """Return a dataset of ``elements`` (taken, not copied) that writes them unchanged.

    ``character_set`` is its Specific Character Set value (None when absent).
    """
    ds = Dataset(elements)
    encodings = convert_encodings(character_set) if character_set else [default_encoding]
    ds.set_original_encoding(False, True, encodings)
    return ds


def raw_file_meta(elements: dict) -> FileMetaDataset:
    """Return file meta information of raw elements (taken, not copied)."""
    meta = FileMetaDataset(elements)
    meta.set_original_encoding(False, True)
    return meta


def text(tag: int, vr: str, value: str, dataset: Dataset) -> RawDataElement:
    """Return a raw text element of ``dataset``: ASCII directly, else as pydicom encodes it."""
    if value.isascii():
        return raw(tag, vr, value_bytes(vr, value))
    charset = dataset.get("SpecificCharacterSet")
    encodings = convert_encodings(charset) if charset else None
    return from_element(DataElement(tag, vr, value), encodings)


def from_element(elem: DataElement, encodings: Sequence[str] | None = None) -> RawDataElement:
    """Return ``elem`` as a raw element (pydicom's encoding)."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_data_element(buffer, elem, list(encodings or [default_encoding]))
    return _as_raw(int(elem.tag), buffer.getvalue())


def filled_buffer(size: int, fill: Callable[[NDArray[np.uint8]], None]) -> bytearray:
    """Return a new ``bytearray`` of ``size`` bytes written by ``fill(view)``.

    ``view`` is a writable uint8 array on the new buffer's memory (``fill`` should write
    every byte: the buffer starts zeroed, what ``bytearray(size)`` costs, ~0.13 ms for 4 MB;
    the view is not to be kept). A large value (the pixel data) is so written once into its
    final place, with no copy into a ``bytes`` object; give it to pydicom with
    :func:`buffer_element`.
    """
    data = bytearray(size)
    fill(np.frombuffer(data, dtype=np.uint8) if size else np.empty(0, dtype=np.uint8))
    return data


def buffer_element(tag: int, vr: str, data: bytes | bytearray) -> DataElement:
    """Return an element (``OB``, ``OF``...) whose value is ``data`` itself, a bytes-like value.

    pydicom validates a ``bytearray`` as an O* value and writes it as it writes ``bytes``
    (byte for byte), and decodes, copies and pickles it as usual, but its value setter
    takes a ``bytearray`` for a sequence of numbers (a multi-valued element of ints):
    ``already_converted=True`` keeps it as given (``elem.VM`` still counts its bytes; the
    writer does not use it for O* values).
    """
    return DataElement(tag, vr, data, already_converted=True)
