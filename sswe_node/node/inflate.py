"""Bounded inflate of Deflated Explicit VR Little Endian files (PS3.5 A.5).

A few kilobytes of deflate can inflate to gigabytes: the size is found by inflating in
bounded pieces and throwing them away, never by inflating the whole dataset in memory.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path

from pynetdicom.dsutils import split_dataset

from sswe_node.node.storage import TooLargeError

_READ = 1 << 16
_OUT = 1 << 20
HEAD_BYTES = 4 << 20
"""How much of a deflated dataset is inflated to read its identifiers."""


def _inflater(path: Path) -> tuple[io.BufferedReader, zlib._Decompress]:
    _, offset = split_dataset(path)
    handle = open(path, "rb")  # noqa: SIM115 - the callers close it
    handle.seek(offset)
    return handle, zlib.decompressobj(-zlib.MAX_WBITS)


def check_inflated_size(path: Path, max_bytes: int) -> int:
    """Return the inflated size of a deflated file's dataset, refusing more than ``max_bytes``.

    Raises
    ------
    TooLargeError
        As soon as more than ``max_bytes`` (when non-zero) have been inflated.
    zlib.error
        When the stream is not deflate data.
    """
    handle, inflater = _inflater(path)
    total = 0
    with handle:
        for piece in iter(lambda: handle.read(_READ), b""):
            data = inflater.decompress(piece, _OUT)
            while True:
                total += len(data)
                if max_bytes and total > max_bytes:
                    raise TooLargeError(f"deflated dataset inflates to more than {max_bytes} bytes")
                if not inflater.unconsumed_tail:
                    break
                data = inflater.decompress(inflater.unconsumed_tail, _OUT)
        total += len(inflater.flush())
    return total


def read_head(path: Path, limit: int = HEAD_BYTES) -> io.BytesIO:
    """Return the first ``limit`` inflated bytes of a deflated file's dataset (no file meta)."""
    handle, inflater = _inflater(path)
    out = bytearray()
    with handle:
        for piece in iter(lambda: handle.read(_READ), b""):
            out += inflater.decompress(piece, limit - len(out))
            if len(out) >= limit:
                break
    return io.BytesIO(bytes(out))
