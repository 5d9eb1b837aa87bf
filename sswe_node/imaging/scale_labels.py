"""Read the scale printed at the ends of a colour bar ("180 kPa", "0", "10.0 m/s") with Tesseract.

Scanners burn the colour-bar range into the pixels beside the bar; the operator changes it per
acquisition, so it is the only trustworthy source of the scale of a capture without private
quantitative data. The text next to each end of the bar is found as small bright blobs, cropped,
upscaled and binarised in three variants, and read with one Tesseract call (through
``pytesseract``; digits, ``.``, ``kPa`` and ``m/s`` only, one line per crop). A read is used only
when the variants agree, Tesseract is confident, and the result is plausible (a known unit,
``0 <= min < max`` within the unit's usual range); anything else is "unreadable", never a guess.

Reads are cached by the content of the bar and of its label crops, so the frames of a series
(the same bar and labels) cost one OCR.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from sswe_node.imaging.boxes import PixelBox
from sswe_node.imaging.ocr import run_tesseract

__all__ = ["BarLabels", "read_bar_labels", "clear_label_cache", "UNIT_RANGES"]

logger = logging.getLogger(__name__)

#: Plausible colour-bar maxima per unit (scanners offer e.g. 40-300 kPa, 3-10 m/s).
UNIT_RANGES: dict[str, tuple[float, float]] = {"kPa": (5.0, 800.0), "m/s": (0.5, 25.0)}
#: A label blob must start this close (pixels) to its end of the bar (at least; see _reach).
_REACH = 24
#: Brightness (max of R, G, B) of burned-in text.
_TEXT_LEVEL = 110
#: Upscale factor and binarisation threshold (fraction of the crop's brightest level) of the
#: three variants read; a label counts only when at least two agree and none disagrees.
_VARIANTS = ((4, 0.45), (5, 0.35), (3, 0.55))
#: Minimum Tesseract word confidence (0-100) of a read that counts.
_MIN_CONFIDENCE = 50.0
_WHITELIST = "0123456789.kPam/s"
_CONFIG = f"--psm 6 -c tessedit_char_whitelist={_WHITELIST}"
_NUMBER = re.compile(r"^([kPams/]*)(\d{1,3}(?:\.\d{1,2})?)([kPams/]*)$")

_cache: OrderedDict[bytes, BarLabels | None] = OrderedDict()
_cache_lock = threading.Lock()
_CACHE_SIZE = 256


@dataclass(frozen=True)
class BarLabels:
    """The range printed beside a colour bar.

    Attributes
    ----------
    low, high : float
        The values at the minimum and the maximum end.
    unit : str
        ``"kPa"`` or ``"m/s"``.
    text : tuple of str
        What was read at the (maximum, minimum) ends, for logs.
    """

    low: float
    high: float
    unit: str
    text: tuple[str, str] = ("", "")

    @property
    def scale(self) -> tuple[float, float]:
        """``(low, high)``."""
        return (self.low, self.high)


def clear_label_cache() -> None:
    """Forget every cached read (tests, benchmarks)."""
    with _cache_lock:
        _cache.clear()


def read_bar_labels(frame: NDArray[np.floating], bar: PixelBox) -> BarLabels | None:
    """Read the values printed at the two ends of a colour bar.

    Parameters
    ----------
    frame : numpy.ndarray
        ``(h, w, 3)`` RGB or ``(h, w)`` grey frame, 0-255.
    bar : PixelBox
        The colour bar (standing: maximum at the top; lying: maximum on the right).

    Returns
    -------
    BarLabels or None
        The range, or None when the labels are absent, unreadable, ambiguous or implausible
        (or Tesseract is not installed).
    """
    # First the exact pixels around the bar's two ends (the frames of a series), then the
    # binarised label crops (the same labels under other compression noise).
    exact = _exact_key(frame, bar)
    found, labels = _cached(exact)
    if found:
        return labels
    crops = _label_crops(frame, bar)
    keys = [exact]
    if crops is not None:
        keys.append(b"c" + _key(frame, bar, crops))
        found, labels = _cached(keys[-1])
        if not found:
            labels = _read(crops)
    with _cache_lock:
        for key in keys:
            _cache[key] = labels
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return labels


def _exact_key(frame: NDArray[np.floating], bar: PixelBox) -> bytes:
    """Return the key of the exact pixels around the bar's two ends (every pixel, every row).

    CRC-32 of each end window's bytes, all rows (about 3x faster per byte than SHA-256 here):
    a change confined to 32 bits, e.g. one 8-bit RGB pixel, always changes it; two windows
    differing more collide by chance with probability about 2**-32.
    """
    parts = [bar.as_list(), frame.shape]
    for end in _end_windows(bar, frame.shape):
        window = np.ascontiguousarray(frame[end.slices])
        parts += [window.dtype.str, zlib.crc32(window.data)]
    return b"x" + repr(parts).encode()


def _cached(key: bytes) -> tuple[bool, BarLabels | None]:
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return True, _cache[key]
    return False, None


def _reach(bar: PixelBox) -> int:
    return max(_REACH, 2 * min(bar.height, bar.width))


@functools.lru_cache(maxsize=64)
def _end_windows(bar: PixelBox, shape: tuple[int, ...]) -> tuple[PixelBox, PixelBox]:
    """Return the parts of :func:`_window` holding every label blob near the two ends.

    Cached: the frames of a series share their bar and their shape (boxes are immutable).
    """
    window = _window(bar, shape)
    reach = _reach(bar)
    if bar.height >= bar.width:
        first = PixelBox(window.top, window.left, bar.top + 3 * reach, window.right)
        second = PixelBox(bar.bottom - 3 * reach, window.left, window.bottom, window.right)
    else:
        first = PixelBox(window.top, window.left, window.bottom, bar.left + 4 * reach)
        second = PixelBox(window.top, bar.right - 4 * reach, window.bottom, window.right)
    return first.clipped(shape), second.clipped(shape)


def _window(bar: PixelBox, shape: tuple[int, ...]) -> PixelBox:
    """Return the part of the frame searched for labels: the bar and its surroundings."""
    reach = _reach(bar)
    return PixelBox(
        bar.top - 3 * reach, bar.left - 4 * reach, bar.bottom + 3 * reach, bar.right + 4 * reach
    ).clipped(shape)


def _ends(bar: PixelBox) -> tuple[tuple[int, int], tuple[int, int]]:
    """Return the (row, col) of the maximum and the minimum end of the bar."""
    if bar.height >= bar.width:
        col = (bar.left + bar.right) // 2
        return (bar.top, col), (bar.bottom - 1, col)
    row = (bar.top + bar.bottom) // 2
    return (row, bar.right - 1), (row, bar.left)


def _label_crops(
    frame: NDArray[np.floating], bar: PixelBox
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]] | None:
    """Return the crops of the text nearest to the maximum and minimum ends, or None."""
    reach = _reach(bar)
    window = _window(bar, frame.shape)
    local = frame[window.slices]
    local = np.asarray(local.max(axis=2) if local.ndim == 3 else local)
    text = local >= _TEXT_LEVEL
    inner = bar.expanded(1).shifted(-window.top, -window.left).clipped(local.shape)
    text[inner.slices] = False
    # Characters of one label join when dilated along the line; speckle of a tissue panel
    # in the window joins into large areas, which are not labels.
    joined = ndimage.binary_dilation(text, structure=np.ones((3, 7), dtype=bool))
    labels, n = ndimage.label(joined)
    if n == 0:
        return None
    blobs = []
    for i, sl in enumerate(ndimage.find_objects(labels)):
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if not (6 <= h <= 34 and 5 <= w <= 160):
            continue
        ink = text[sl] & (labels[sl] == i + 1)
        if not 0.08 <= ink.mean() <= 0.75:
            continue
        blobs.append(PixelBox(sl[0].start, sl[1].start, sl[0].stop, sl[1].stop))
    crops = []
    used: set[PixelBox] = set()
    for end in _ends(bar):
        r, c = end[0] - window.top, end[1] - window.left
        near = sorted(
            (_distance(b, r, c), b) for b in blobs if b not in used and _distance(b, r, c) <= reach
        )
        if not near:
            return None
        box = near[0][1]
        used.add(box)
        crop = local[box.expanded(2).clipped(local.shape).slices]
        crops.append(np.asarray(crop, dtype=np.uint8))
    return crops[0], crops[1]


def _distance(box: PixelBox, row: int, col: int) -> float:
    dr = max(box.top - row, 0, row - (box.bottom - 1))
    dc = max(box.left - col, 0, col - (box.right - 1))
    return float(np.hypot(dr, dc))


def _key(frame: NDArray[np.floating], bar: PixelBox, crops: tuple[NDArray[np.uint8], ...]) -> bytes:
    """Hash of the bar (coarse colours) and of the binarised label crops.

    Coarse and binarised, so that the frames of one lossy-compressed series (the same bar and
    labels, different compression noise) share an entry.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.asarray(bar.as_list(), dtype=np.int32).tobytes())
    pixels = np.asarray(frame[bar.slices], dtype=np.uint8)
    digest.update((pixels[:: max(1, bar.height // 32), :: max(1, bar.width // 32)] >> 5).tobytes())
    for crop in crops:
        digest.update(np.asarray(crop.shape, dtype=np.int32).tobytes())
        digest.update(np.packbits(crop >= 128).tobytes())
    return digest.digest()


def _variant(crop: NDArray[np.uint8], factor: int, level: float) -> NDArray[np.uint8]:
    """Upscale a crop and binarise it to black text on white."""
    from PIL import Image

    image = Image.fromarray(crop).resize(
        (crop.shape[1] * factor, crop.shape[0] * factor), Image.Resampling.BICUBIC
    )
    big = np.asarray(image)
    top = float(big.max()) or 1.0
    return np.where(big > level * top, 0, 255).astype(np.uint8)


def _sheet(lines: list[NDArray[np.uint8]]) -> tuple[NDArray[np.uint8], list[tuple[int, int]]]:
    """Stack binarised crops on one white page, one per line; return it and each line's rows."""
    gap = 24
    width = max(line.shape[1] for line in lines) + 2 * gap
    parts, spans, row = [], [], 0
    for line in lines:
        block = np.full((line.shape[0] + gap, width), 255, dtype=np.uint8)
        block[gap // 2 : gap // 2 + line.shape[0], gap : gap + line.shape[1]] = line
        parts.append(block)
        spans.append((row, row + block.shape[0]))
        row += block.shape[0]
    return np.vstack(parts), spans


def _words(crop: NDArray[np.uint8]) -> list[NDArray[np.uint8]]:
    """Split a label crop into its words ("180", "kPa") at gaps wider than a letter spacing.

    Tesseract is confident about a word of digits, rarely about digits run into letters.
    """
    ink = (crop >= _TEXT_LEVEL).any(axis=0)
    gap = max(4, round(crop.shape[0] * 0.27))
    words, start, empty = [], None, 0
    for col, inked in enumerate(ink):
        if inked:
            if start is None:
                start = col
            empty = 0
        elif start is not None:
            empty += 1
            if empty >= gap:
                words.append((start, col - empty + 1))
                start, empty = None, 0
    if start is not None:
        words.append((start, len(ink) - empty))
    pad = 2
    return [crop[:, max(0, a - pad) : b + pad] for a, b in words] or [crop]


def _read(crops: tuple[NDArray[np.uint8], NDArray[np.uint8]]) -> BarLabels | None:
    """OCR the (maximum, minimum) crops in every variant; return the agreed, plausible range."""
    # one line per word, per end, per variant: (variant, end) of every line
    lines, owners = [], []
    for v, (factor, level) in enumerate(_VARIANTS):
        for end, crop in enumerate(crops):
            for word in _words(crop):
                lines.append(_variant(word, factor, level))
                owners.append((v, end))
    sheet, spans = _sheet(lines)
    data = run_tesseract(
        lambda tess: tess.image_to_data(
            sheet, config=_CONFIG, output_type=tess.Output.DICT, timeout=20
        ),
        "colour-bar labels cannot be read",
    )
    if data is None:
        return None
    texts = [""] * len(lines)
    confidences: list[list[float]] = [[] for _ in lines]
    for word, conf, top, height in zip(
        data["text"], data["conf"], data["top"], data["height"], strict=True
    ):
        word = str(word).strip()
        if not word:
            continue
        middle = int(top) + int(height) // 2
        for i, (start, stop) in enumerate(spans):
            if start <= middle < stop:
                texts[i] += word
                confidences[i].append(float(conf))
    reads: list[tuple[tuple[float, str | None], tuple[float, str | None]] | None] = []
    raw = ["", ""]
    for v in range(len(_VARIANTS)):
        pair = []
        for end in range(2):
            mine = [i for i, owner in enumerate(owners) if owner == (v, end)]
            text = " ".join(texts[i] for i in mine)
            raw[end] = raw[end] or text
            # the number must be read confidently; a unit word is checked by spelling alone
            sure = all(
                confidences[i] and min(confidences[i]) >= _MIN_CONFIDENCE
                for i in mine
                if any(ch.isdigit() for ch in texts[i])
            )
            parsed = _parse(text) if sure else None
            pair.append(parsed)
        reads.append((pair[0], pair[1]) if pair[0] and pair[1] else None)
    agreed = _agree(reads)
    if agreed is None:
        logger.info("colour-bar labels not read with confidence (read %r)", texts)
        return None
    raw = (raw[0], raw[1])
    (high, unit_hi), (low, unit_lo) = agreed
    units = {u for u in (unit_hi, unit_lo) if u}
    if len(units) != 1:
        logger.info("colour-bar labels without one unit (read %r)", raw)
        return None
    unit = units.pop()
    lowest, highest = UNIT_RANGES[unit]
    if not (0.0 <= low < high and lowest <= high <= highest):
        logger.info("colour-bar labels implausible: %s-%s %s", low, high, unit)
        return None
    return BarLabels(low=low, high=high, unit=unit, text=raw)


def _parse(text: str) -> tuple[float, str | None] | None:
    """Return (value, unit or None) of one label such as ``180kPa``, ``kPa70``, ``10.0m/s``."""
    match = _NUMBER.match(text.replace(" ", ""))
    if match is None:
        return None
    before, number, after = match.groups()
    if before and after:
        return None
    if len(number) > 1 and number.startswith("0") and not number.startswith("0."):
        return None  # "07": a misread, not a scale
    letters = before or after
    if not letters:
        return float(number), None
    unit = _unit(letters)
    return (float(number), unit) if unit else None


def _unit(letters: str) -> str | None:
    """Return the unit a (possibly misread) unit word spells: "kPa", "m/s" or None.

    The two units share no letter, so a dropped or doubled letter ("ms", "kP") still tells
    them apart; a word mixing both is no unit.
    """
    kpa, speed = set(letters) & set("kPa"), set(letters) & set("ms")
    if kpa and not speed and len(kpa) >= 2:
        return "kPa"
    if speed == {"m", "s"} and not kpa:
        return "m/s"
    return None


def _agree(
    reads: list[tuple[tuple[float, str | None], tuple[float, str | None]] | None],
) -> tuple[tuple[float, str | None], tuple[float, str | None]] | None:
    """Return the read of at least two variants when no confident variant says otherwise."""
    found = [r for r in reads if r is not None]
    if len(found) < 2:
        return None
    values = {((hi[0], lo[0])) for hi, lo in found}
    if len(values) != 1:
        return None
    units_hi = {hi[1] for hi, _ in found if hi[1]}
    units_lo = {lo[1] for _, lo in found if lo[1]}
    if len(units_hi) > 1 or len(units_lo) > 1:
        return None
    (high, low) = values.pop()
    return (high, next(iter(units_hi), None)), (low, next(iter(units_lo), None))
