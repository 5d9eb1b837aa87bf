"""Lossy compression history of a source, carried into what is derived from it (PS3.3 C.7.6.1.1.5).

An image derived from a lossy compressed image is itself "lossy" (Lossy Image Compression
``01``), and Lossy Image Compression Ratio / Method list the compressions applied so far, in
order. A source says so in its own attributes, or only by its transfer syntax (then the ratio is
the stored size against the decompressed size of the pixel data).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.valuerep import DSfloat

from sswe_node.outputs.encoded import decimal, raw, value_bytes

__all__ = [
    "LossyHistory",
    "LOSSY_TRANSFER_SYNTAXES",
    "lossy_elements",
    "lossy_history",
    "mark_lossy",
]

#: Lossy transfer syntaxes and the Lossy Image Compression Method term of each (PS3.3
#: C.7.6.1.1.5.1).
LOSSY_TRANSFER_SYNTAXES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",  # JPEG-LS Lossy (Near-Lossless)
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",  # JPEG 2000
    "1.2.840.10008.1.2.4.93": "ISO_15444_2",  # JPEG 2000 Part 2 Multi-component
    "1.2.840.10008.1.2.4.100": "ISO_13818_2",  # MPEG2 Main Profile / Main Level
    "1.2.840.10008.1.2.4.101": "ISO_13818_2",  # MPEG2 Main Profile / High Level
    "1.2.840.10008.1.2.4.102": "ISO_14496_10",  # MPEG-4 AVC/H.264 High Profile
    "1.2.840.10008.1.2.4.103": "ISO_14496_10",  # MPEG-4 AVC/H.264 BD-compatible
    "1.2.840.10008.1.2.4.104": "ISO_14496_10",  # MPEG-4 AVC/H.264 for 2D Video
    "1.2.840.10008.1.2.4.105": "ISO_14496_10",  # MPEG-4 AVC/H.264 for 3D Video
    "1.2.840.10008.1.2.4.106": "ISO_14496_10",  # MPEG-4 AVC/H.264 Stereo
    "1.2.840.10008.1.2.4.107": "ISO_23008_2",  # HEVC/H.265 Main Profile
    "1.2.840.10008.1.2.4.108": "ISO_23008_2",  # HEVC/H.265 Main 10 Profile
    "1.2.840.10008.1.2.4.111": "ISO_18181_1",  # JPEG XL
}


@dataclass(frozen=True)
class LossyHistory:
    """The lossy compressions a source went through, in order.

    Attributes
    ----------
    ratios : tuple of float
        Lossy Image Compression Ratio values.
    methods : tuple of str
        Lossy Image Compression Method values (same length).
    """

    ratios: tuple[float, ...]
    methods: tuple[str, ...]


def _values(ds: Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    if isinstance(value, str | float | int):
        return [str(value)]
    return [str(v) for v in value]


def _stored_ratio(ds: Dataset) -> float | None:
    """Decompressed size of the pixel data against its stored (encapsulated) size."""
    pixels = ds.get("PixelData")
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
        size *= frames * ((int(ds.BitsAllocated) + 7) // 8)
    except (AttributeError, TypeError, ValueError):
        return None
    if not isinstance(pixels, bytes | bytearray) or not pixels:
        return None
    return size / len(pixels)


def lossy_history(source: Dataset) -> LossyHistory | None:
    """Return the lossy history of a source, or None when it was never lossy compressed.

    Parameters
    ----------
    source : pydicom.dataset.Dataset
        The source instance as received (its file meta tells the transfer syntax).

    Returns
    -------
    LossyHistory or None
        Its own Lossy Image Compression Ratio / Method when it says ``01``; with a lossy
        transfer syntax, that compression is added when the attributes do not list it yet.
    """
    meta = getattr(source, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    said = str(source.get("LossyImageCompression", "") or "") == "01"
    ratios = _values(source, "LossyImageCompressionRatio") if said else []
    methods = _values(source, "LossyImageCompressionMethod") if said else []
    if len(ratios) != len(methods):  # inconsistent history: keep what pairs up
        n = min(len(ratios), len(methods))
        ratios, methods = ratios[:n], methods[:n]
    method = LOSSY_TRANSFER_SYNTAXES.get(syntax)
    if method is not None and (not methods or methods[-1] != method):
        ratio = _stored_ratio(source)
        if ratio is not None:
            ratios.append(f"{ratio:.2f}")
            methods.append(method)
    if not said and not methods:
        return None
    parsed = []
    for value in ratios:
        try:
            parsed.append(float(value))
        except ValueError:
            parsed.append(float("nan"))
    pairs = [(r, m) for r, m in zip(parsed, methods, strict=True) if r == r]
    return LossyHistory(tuple(r for r, _ in pairs), tuple(m for _, m in pairs))


def mark_lossy(derived: Dataset, source: Dataset) -> None:
    """Write Lossy Image Compression (and its ratio and method when lossy) into a derived object.

    Parameters
    ----------
    derived : pydicom.dataset.Dataset
        The Parametric Map or Secondary Capture, changed in place (itself stored
        uncompressed: it adds no compression step).
    source : pydicom.dataset.Dataset
        The source it was derived from.
    """
    history = lossy_history(source)
    if history is None:
        derived.LossyImageCompression = "00"
        for keyword in ("LossyImageCompressionRatio", "LossyImageCompressionMethod"):
            if keyword in derived:
                delattr(derived, keyword)
        return
    derived.LossyImageCompression = "01"
    if history.ratios:
        derived.LossyImageCompressionRatio = [DSfloat(r, auto_format=True) for r in history.ratios]
        derived.LossyImageCompressionMethod = list(history.methods)


def lossy_elements(source: Dataset) -> dict:
    """Return what :func:`mark_lossy` writes, as raw elements ``{tag: RawDataElement}``."""
    history = lossy_history(source)
    values: list[tuple[int, str, object]] = [(0x00282110, "CS", "00" if history is None else "01")]
    if history is not None and history.ratios:
        values.append((0x00282112, "DS", [decimal(r) for r in history.ratios]))
        values.append((0x00282114, "CS", list(history.methods)))
    return {BaseTag(tag): raw(tag, vr, value_bytes(vr, value)) for tag, vr, value in values}
