"""Decode ultrasound pixel data to float arrays, with typed errors a PACS administrator reads."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
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
    "frame_count",
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
    value = ds["PixelData"].value
    if value is None or not isinstance(value, bytes | bytearray):
        return
    frames = frame_count(ds)
    if str(ds.PhotometricInterpretation).strip().upper() == "YBR_FULL_422":
        samples = 2  # two chroma values shared by each pair of pixels
    expected = rows * cols * samples * frames * bits // 8
    # Shorter data fails in the decoder (pixel-decode); longer data would be read silently
    # with the wrong geometry. One byte more is the padding to an even length.
    if len(value) > expected + 1:
        raise CorruptDicomError(
            f"Pixel Data holds {len(value)} bytes but {rows} rows x {cols} columns x "
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


def decode_frame_native(ds: Dataset, index: int = 0) -> NDArray[np.uint8] | NDArray[np.float32]:
    """Like :func:`decode_frame`, but 8-bit data stays uint8 (0-255) to save time and memory.

    Other data (more than 8 bits, 16-bit palettes, MONOCHROME1) comes back as float32 0-255.
    """
    syntax = _transfer_syntax(ds)
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    try:
        arr = _pixel_array(ds, index, syntax)
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
