"""Decode ultrasound pixel data to float arrays, with typed errors a PACS administrator reads."""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.pixels import apply_color_lut, pixel_array
from pydicom.uid import UID, JPEGBaseline8Bit, JPEGExtended12Bit

from sswe_node.dicom_constants import (
    ENHANCED_US_VOLUME,
    SECONDARY_CAPTURE_PREFIX,
    ULTRASOUND_IMAGE_CLASSES,
)
from sswe_node.errors import (
    CorruptDicomError,
    ImageTooLargeError,
    NotUltrasoundError,
    PixelDecodeError,
    UnsupportedLayoutError,
    UnsupportedTransferSyntaxError,
)

logger = logging.getLogger(__name__)

__all__ = [
    "check_ultrasound",
    "decode_frame",
    "decode_frame_native",
    "decode_frames_native",
    "frame_count",
    "LAZY_PIXEL_BYTES",
    "select_frames",
    "SUPPORTED_PHOTOMETRIC",
]

SUPPORTED_PHOTOMETRIC = frozenset(
    {
        "MONOCHROME1",
        "MONOCHROME2",
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_ICT",
        "YBR_RCT",
        "PALETTE COLOR",
    }
)

_PILLOW_FIRST = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit})

#: ``dcmread(path, defer_size=LAZY_PIXEL_BYTES)`` leaves larger values (Pixel Data) in the
#: file: :func:`decode_frames_native` then reads only the frames it decodes.
LAZY_PIXEL_BYTES = 4 * 1024 * 1024
#: What a one-frame copy of an instance needs to decode its pixels (the 0028 group's image
#: description; a palette is applied from the instance itself).
_FRAME_KEYWORDS = (
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
)
_SC_MODALITIES = frozenset({"US", "OT", ""})


def check_ultrasound(ds: Dataset, *, max_pixels: int | None = None) -> None:
    """Check that an instance is an ultrasound image (or a secondary capture of one) we can read.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The instance.
    max_pixels : int, optional
        Refuse instances with more pixels (rows x columns x frames) than this.

    Raises
    ------
    CorruptDicomError
        Pixel data or the image description attributes (0028,xxxx) are missing or broken.
    NotUltrasoundError
        The instance is another modality (e.g. CT), or a secondary capture of one.
    UnsupportedTransferSyntaxError
        The photometric interpretation is not one we decode.
    ImageTooLargeError
        The image exceeds ``max_pixels``.
    UnsupportedLayoutError
        A 3D ultrasound volume.
    """
    sop_class = str(ds.get("SOPClassUID", ""))
    modality = str(ds.get("Modality", "")).upper()
    is_us = sop_class in ULTRASOUND_IMAGE_CLASSES or (not sop_class and modality == "US")
    is_sc = sop_class.startswith(SECONDARY_CAPTURE_PREFIX) and modality in _SC_MODALITIES
    if sop_class == ENHANCED_US_VOLUME:
        raise UnsupportedLayoutError(
            "3D ultrasound volumes (Enhanced US Volume) are not processed; send 2D captures"
        )
    if not (is_us or is_sc):
        name = UID(sop_class).name if sop_class else "no SOP Class UID"
        raise NotUltrasoundError(
            f"not an ultrasound image: SOP Class {name!r}, Modality {modality or 'empty'!r}; "
            "sswe-node only reads ultrasound images and secondary captures of them"
        )
    if "PixelData" not in ds:
        raise CorruptDicomError("the instance has no Pixel Data (7FE0,0010)")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples = int(ds.SamplesPerPixel)
        photometric = str(ds.PhotometricInterpretation).strip().upper()
        int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError) as exc:
        raise CorruptDicomError(
            f"the image description attributes are missing or invalid ({exc}); "
            "check Rows, Columns, Samples per Pixel, Bits Allocated, Photometric Interpretation"
        ) from None
    if rows < 1 or cols < 1 or samples not in (1, 3):
        raise CorruptDicomError(
            f"invalid image size or samples per pixel: {rows} x {cols}, {samples} samples"
        )
    if photometric not in SUPPORTED_PHOTOMETRIC:
        raise UnsupportedTransferSyntaxError(
            f"photometric interpretation {photometric!r} is not supported "
            f"(supported: {', '.join(sorted(SUPPORTED_PHOTOMETRIC))})",
            reason="unsupported-photometric",
        )
    _check_native_length(ds, rows, cols, samples)
    pixels = rows * cols * frame_count(ds)
    if max_pixels is not None and pixels > max_pixels:
        raise ImageTooLargeError(
            f"image has {pixels} pixels ({rows} x {cols} x {frame_count(ds)} frames), "
            f"more than the configured limit node.max_image_pixels = {max_pixels}"
        )


def _check_native_length(ds: Dataset, rows: int, cols: int, samples: int) -> None:
    """Refuse a native image whose description does not fit its Pixel Data (misread pixels)."""
    bits = int(ds.BitsAllocated)
    if bits not in (8, 16, 32):
        raise CorruptDicomError(
            f"Bits Allocated {bits} is not 8, 16 or 32: not an image this node can read"
        )
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and UID(str(syntax)).is_encapsulated:
        return
    raw = ds.get_item("PixelData", keep_deferred=True)
    if isinstance(raw, RawDataElement) and raw.value is None:  # deferred: not read yet
        length = int(raw.length)
    else:
        value = ds["PixelData"].value
        if value is None or not isinstance(value, bytes | bytearray):
            return
        length = len(value)
    frames = frame_count(ds)
    if str(ds.PhotometricInterpretation).strip().upper() == "YBR_FULL_422":
        samples = 2  # two chroma values shared by each pair of pixels
    expected = rows * cols * samples * frames * bits // 8
    # Shorter data fails in the decoder (pixel-decode); longer data would be read silently
    # with the wrong geometry. One byte more is the padding to an even length.
    if length > expected + 1:
        raise CorruptDicomError(
            f"Pixel Data holds {length} bytes but {rows} rows x {cols} columns x "
            f"{samples} samples x {frames} frames at {bits} bits need {expected}: "
            "Rows, Columns, Number of Frames or Bits Allocated do not match the pixels"
        )


def frame_count(ds: Dataset) -> int:
    """Return the number of frames (1 when Number of Frames is absent or empty)."""
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        raise CorruptDicomError(
            f"Number of Frames (0028,0008) is not a number: {ds.get('NumberOfFrames')!r}"
        ) from None


def select_frames(n_frames: int, max_frames: int | None) -> list[int]:
    """Pick at most ``max_frames`` evenly spaced frame indices, first and last included.

    Parameters
    ----------
    n_frames : int
        Frames in the instance.
    max_frames : int or None
        The most frames to read; None reads all.

    Returns
    -------
    list of int
        Sorted, distinct indices.
    """
    if max_frames is None or n_frames <= max_frames:
        return list(range(n_frames))
    if max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    if max_frames == 1:
        return [0]
    picked = np.round(np.linspace(0, n_frames - 1, max_frames)).astype(int)
    return sorted(set(picked.tolist()))


def decode_frame(ds: Dataset, index: int = 0) -> NDArray[np.float32]:
    """Decode one frame to a float array with 0-255 grey levels.

    Colour frames (RGB, YBR_*, PALETTE COLOR) come back as ``(rows, cols, 3)`` RGB; monochrome
    frames as ``(rows, cols)`` with MONOCHROME1 inverted so that bright tissue is high. Data
    with more than 8 bits is scaled to 0-255 from Bits Stored (palettes from their 16-bit
    entries).

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The instance (checked with :func:`check_ultrasound` first).
    index : int
        Frame index.

    Returns
    -------
    numpy.ndarray
        float32 frame.

    Raises
    ------
    UnsupportedTransferSyntaxError
        No decoder for the transfer syntax is installed or exists.
    PixelDecodeError
        The pixel data is truncated, corrupt or inconsistent with its description.
    """
    return decode_frame_native(ds, index).astype(np.float32, copy=False)


def decode_frame_native(
    ds: Dataset, index: int = 0, *, _frame: Dataset | None = None
) -> NDArray[np.uint8] | NDArray[np.float32]:
    """Like :func:`decode_frame`, but 8-bit data stays uint8 (0-255) to save time and memory.

    Other data (more than 8 bits, 16-bit palettes, MONOCHROME1) comes back as float32 0-255.
    (``_frame``: a one-frame copy holding frame ``index``'s data, see
    :func:`decode_frames_native`.)
    """
    syntax = _transfer_syntax(ds)
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    try:
        arr = _pixel_array(ds, index, syntax) if _frame is None else _pixel_array(_frame, 0, syntax)
    except NotImplementedError:
        raise UnsupportedTransferSyntaxError(
            f"cannot decode pixel data in transfer syntax {syntax.name} ({syntax}); "
            "send it uncompressed, RLE, JPEG baseline/lossless or JPEG 2000"
        ) from None
    except (ValueError, RuntimeError, KeyError, AttributeError, TypeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PixelDecodeError(
            f"pixel data of frame {index} in {syntax.name} cannot be decoded "
            f"(truncated or corrupt?): {first}"
        ) from None
    if arr.ndim == 3 and arr.shape[-1] != 3:
        raise PixelDecodeError(f"unexpected decoded frame shape {arr.shape}")
    if photometric == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(arr, ds)
        except (ValueError, KeyError, AttributeError, IndexError) as exc:
            raise PixelDecodeError(f"the colour palette cannot be applied: {exc}") from None
        if rgb.dtype == np.uint8:
            return rgb
        # Some writers put 8-bit entries in a 16-bit palette: judge by the values themselves.
        if int(rgb.max()) <= 255:
            return rgb.astype(np.uint8)
        return np.minimum(rgb.astype(np.float32) * np.float32(1.0 / 256.0), np.float32(255.0))
    bits = int(ds.get("BitsStored") or ds.BitsAllocated)
    if bits <= 8 and arr.dtype == np.uint8 and photometric != "MONOCHROME1":
        return arr
    out = arr.astype(np.float32)
    if bits > 8:
        out *= np.float32(255.0 / (2**bits - 1))
    if photometric == "MONOCHROME1":
        out = np.float32(255.0) - out
    return out


def decode_frames_native(
    ds: Dataset, indices: list[int]
) -> Iterator[NDArray[np.uint8] | NDArray[np.float32]]:
    """Decode the frames ``indices`` of an instance, one at a time, reading only those frames.

    An instance read with ``dcmread(path, defer_size=LAZY_PIXEL_BYTES)`` whose Pixel Data was
    left in the file (deferred) and that has several frames is read frame by frame from the
    file: native data by the byte range of each frame, encapsulated data by the Basic (or
    Extended) Offset Table or, without one, by its fragments (one per frame; several per
    frame: pydicom's frame search). The other frames are never read nor decoded. Otherwise
    (Pixel Data in memory, one frame) this is :func:`decode_frame_native` per index.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The instance (checked with :func:`check_ultrasound` first).
    indices : list of int
        Frame indices, in the order to decode them.

    Yields
    ------
    numpy.ndarray
        Each frame as :func:`decode_frame_native` returns it.

    Raises
    ------
    UnsupportedTransferSyntaxError, PixelDecodeError
        As :func:`decode_frame_native`; truncated frames are a ``PixelDecodeError``.
    """
    raw = ds.get_item("PixelData", keep_deferred=True)
    path = getattr(ds, "filename", None)
    deferred = isinstance(raw, RawDataElement) and raw.value is None
    if not deferred or frame_count(ds) == 1 or not isinstance(path, str | os.PathLike):
        for index in indices:
            yield decode_frame_native(ds, index)
        return
    assert isinstance(raw, RawDataElement)
    syntax = _transfer_syntax(ds)
    try:
        fp = open(path, "rb")  # noqa: SIM115 - held across the yields, closed below
    except OSError as exc:
        raise PixelDecodeError(f"the pixel data cannot be read from the file: {exc}") from None
    with fp:
        fragments: list[tuple[int, int]] = []  # found once, when there is no offset table
        for index in indices:
            if syntax.is_encapsulated:
                data = encapsulate([_encapsulated_frame(ds, fp, raw.value_tell, index, fragments)])
            else:
                data = _native_frame(ds, fp, raw.value_tell, index, syntax)
            yield decode_frame_native(ds, index, _frame=_one_frame(ds, raw, data))


def _native_frame(ds: Dataset, fp: BinaryIO, start: int, index: int, syntax: UID) -> bytes:
    """Read frame ``index``'s bytes of native Pixel Data starting at ``start`` in the file."""
    samples = int(ds.SamplesPerPixel)
    if str(ds.PhotometricInterpretation).strip().upper() == "YBR_FULL_422":
        samples = 2  # two chroma values shared by each pair of pixels
    size = int(ds.Rows) * int(ds.Columns) * samples * int(ds.BitsAllocated) // 8
    fp.seek(start + index * size)
    data = fp.read(size)
    if len(data) < size:
        raise PixelDecodeError(
            f"pixel data of frame {index} in {syntax.name} cannot be decoded (truncated or "
            f"corrupt?): {len(data)} of its {size} bytes are in the file"
        )
    return data


def _fragments(fp: BinaryIO, start: int) -> list[tuple[int, int]]:
    """Return (position, length) of each fragment after the Basic Offset Table (headers only)."""
    found = []
    fp.seek(start)
    while True:
        head = fp.read(8)
        if len(head) < 8:
            raise PixelDecodeError("the encapsulated pixel data is truncated (no delimiter)")
        group, element, length = struct.unpack("<HHI", head)
        if (group, element) == (0xFFFE, 0xE0DD):  # sequence delimiter
            return found[1:]  # the first item is the Basic Offset Table
        if (group, element) != (0xFFFE, 0xE000):
            raise PixelDecodeError("the encapsulated pixel data holds an item of another kind")
        found.append((fp.tell(), length))
        fp.seek(length, os.SEEK_CUR)


def _encapsulated_frame(
    ds: Dataset, fp: BinaryIO, start: int, index: int, fragments: list[tuple[int, int]]
) -> bytes:
    """Read frame ``index``'s encoded bytes from encapsulated Pixel Data at ``start``."""
    frames = frame_count(ds)
    fp.seek(start)
    offsets = fp.read(8)
    has_table = len(offsets) == 8 and int.from_bytes(offsets[4:], "little") > 0
    extended = ds.get("ExtendedOffsetTable"), ds.get("ExtendedOffsetTableLengths")
    if not has_table and extended[0] is None and not fragments:
        fragments += _fragments(fp, start)
    if not has_table and extended[0] is None and len(fragments) == frames:
        position, length = fragments[index]  # one fragment per frame
        fp.seek(position)
        data = fp.read(length)
    else:
        fp.seek(start)
        try:
            data = get_frame(
                fp,
                index,
                number_of_frames=frames,
                extended_offsets=extended if extended[0] is not None else None,
            )
        except (ValueError, KeyError, OSError, EOFError) as exc:
            raise PixelDecodeError(
                f"frame {index} cannot be found in the pixel data: {exc}"
            ) from None
    if not data:
        raise PixelDecodeError(f"frame {index} of the encapsulated pixel data is empty")
    return data


def _one_frame(ds: Dataset, raw: RawDataElement, data: bytes) -> Dataset:
    """Return a one-frame dataset with ``ds``'s image description and the frame ``data``."""
    frame = Dataset()
    frame.file_meta = ds.file_meta
    for keyword in _FRAME_KEYWORDS:
        if keyword in ds:
            frame[keyword] = ds[keyword]  # shared, never changed
    frame.NumberOfFrames = 1
    frame.add_new(0x7FE00010, raw.VR or ("OW" if int(ds.BitsAllocated) > 8 else "OB"), data)
    return frame


def _pixel_array(ds: Dataset, index: int, syntax: UID) -> NDArray[Any]:
    """Decode one frame; lossy JPEG goes to Pillow first (about twice as fast as libjpeg)."""
    if syntax in _PILLOW_FIRST:
        try:
            return pixel_array(ds, index=index, decoding_plugin="pillow")
        except Exception:  # noqa: BLE001 - any Pillow failure: let the default plugins try
            logger.debug("Pillow could not decode frame %d; trying the other decoders", index)
    return pixel_array(ds, index=index)


def _transfer_syntax(ds: Dataset) -> UID:
    """Return the transfer syntax of the pixel data (set in ``ds.file_meta`` when missing).

    Datasets built in memory (not read from a file) may lack File Meta Information; their
    native pixel data is then taken in the dataset's own encoding (explicit VR little endian
    by default). Compressed pixel data without a transfer syntax cannot be decoded.
    """
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid is not None:
        return UID(str(uid))
    if "PixelData" in ds and bytes(ds.PixelData[:4]) == b"\xfe\xff\x00\xe0":
        raise CorruptDicomError(
            "compressed (encapsulated) pixel data without a Transfer Syntax UID (0002,0010)"
        )
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if little is False:
        uid = UID("1.2.840.10008.1.2.2")
    else:
        uid = UID("1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1")
    if meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid
    return uid
