"""Tell strain elastography captures apart from SWE: their colour bar is relative, not kPa.

Quasi-static (strain) elastography shows *relative* tissue deformation: its colour bar is
labelled with words ("SOFT" / "HARD", "S" / "H") or signs ("+" / "-") and carries no kPa or m/s
scale. Decoding such a capture with an SWE colour scale would turn relative strain into
invented kPa values, so a dual capture whose bar reads like a strain bar is refused
(``UnsupportedLayoutError``, reason ``unsupported-layout``, message "strain elastography
(relative), not SWE ...") by every reader: the node, ``convert`` and ``dataset build``.

Detection uses what the screen shows, not what the file claims: the text beside both ends of
the colour bar is read with Tesseract (through ``pytesseract``, letters and signs allowed), one
call per bar, cached by the pixels of the crops (the frames of a series share one bar). A bar
counts as a strain bar when a strain word is read at either end (``SOFT``, ``HARD``,
``STRAIN``, ``ELASTO``, up to one wrong letter in words of four or more letters), or when
both ends read as bare signs and no digit is read at all. Without Tesseract nothing is refused
(logged once): an SWE bar is never refused for lack of OCR.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import OrderedDict

import numpy as np
from numpy.typing import NDArray

from sswe_node.imaging.boxes import PixelBox
from sswe_node.imaging.ocr import run_tesseract

__all__ = ["strain_bar_reason", "read_bar_words", "STRAIN_WORDS", "clear_strain_cache"]

logger = logging.getLogger(__name__)

#: Words that only a relative (strain) colour bar carries.
STRAIN_WORDS = ("SOFT", "HARD", "STRAIN", "ELASTO", "ELAST")
_SIGN_TOKENS = {"+", "-", "—", "–", "S", "H"}
#: Brightness (max of R, G, B) of burned-in text.
_TEXT_LEVEL = 110
_UPSCALE = 4
_CONFIG = "--psm 6"
_CACHE_SIZE = 256
_cache: OrderedDict[bytes, str] = OrderedDict()
_lock = threading.Lock()


def clear_strain_cache() -> None:
    """Forget cached bar readings (tests)."""
    with _lock:
        _cache.clear()


def _end_crops(
    frame: NDArray[np.floating], bar: PixelBox
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Return grey crops beside the two ends of the bar (the bar itself blanked)."""
    rows, cols = frame.shape[:2]
    vertical = bar.height >= bar.width
    if vertical:
        left, right = max(0, bar.left - 8), min(cols, bar.right + 44)
        spans = ((bar.top - 28, bar.top + 10), (bar.bottom - 10, bar.bottom + 28))
        crops = [(slice(max(0, a), min(rows, b)), slice(left, right)) for a, b in spans]
    else:
        top, bottom = max(0, bar.top - 20), min(rows, bar.bottom + 20)
        spans = ((bar.left - 70, bar.left + 6), (bar.right - 6, bar.right + 70))
        crops = [(slice(top, bottom), slice(max(0, a), min(cols, b))) for a, b in spans]
    out = []
    for rs, cs in crops:
        # only the crops are made grey: the whole frame would cost more than the OCR cache saves
        sub = frame[rs, cs]
        crop = np.array(sub.max(axis=2) if sub.ndim == 3 else sub, dtype=np.float32)
        # blank the bar's own pixels: they are colour, not text
        br = slice(max(bar.top - rs.start, 0), max(bar.bottom - rs.start, 0))
        bc = slice(max(bar.left - cs.start, 0), max(bar.right - cs.start, 0))
        crop[br, bc] = 0.0
        out.append(np.where(crop >= _TEXT_LEVEL, 0, 255).astype(np.uint8))
    return out[0], out[1]


def read_bar_words(frame: NDArray[np.floating], bar: PixelBox) -> str | None:
    """Return the text Tesseract reads beside both ends of a colour bar (upper case).

    ``None`` when Tesseract is not available. One OCR call per distinct pair of crops.
    """
    first, second = _end_crops(frame, bar)
    key = hashlib.sha1(
        first.tobytes() + b"|" + second.tobytes() + repr((first.shape, second.shape)).encode()
    ).digest()
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    from PIL import Image

    width = max(first.shape[1], second.shape[1])
    gap = np.full((12, width), 255, np.uint8)

    def pad(crop: NDArray[np.uint8]) -> NDArray[np.uint8]:
        return np.pad(crop, ((0, 0), (0, width - crop.shape[1])), constant_values=255)

    sheet = np.vstack([gap, pad(first), gap, pad(second), gap])
    sheet = np.pad(sheet, ((0, 0), (12, 12)), constant_values=255)
    image = Image.fromarray(sheet).resize(
        (sheet.shape[1] * _UPSCALE, sheet.shape[0] * _UPSCALE), Image.Resampling.LANCZOS
    )
    text = run_tesseract(
        lambda tess: tess.image_to_string(image, config=_CONFIG, timeout=20),
        "strain captures cannot be recognised",
        failure_level=logging.INFO,
    )
    if text is None:
        return None
    text = text.upper()
    with _lock:
        _cache[key] = text
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return text


def _near(token: str, word: str) -> bool:
    """Tell whether ``token`` is ``word`` or (4+ letters) one substitution away from it."""
    if token == word:
        return True
    if len(word) < 4 or len(token) != len(word):
        return False
    return sum(a != b for a, b in zip(token, word, strict=True)) <= 1


def strain_bar_reason(frame: NDArray[np.floating], bar: PixelBox | None) -> str | None:
    """Return why the colour bar is a strain (relative) bar, or None when it is not one.

    Parameters
    ----------
    frame : numpy.ndarray
        The RGB frame, 0-255.
    bar : PixelBox or None
        The colour bar found by the layout analysis.

    Returns
    -------
    str or None
        A message for :class:`~sswe_node.errors.UnsupportedLayoutError`, e.g. ``"strain
        elastography (relative), not SWE: the colour bar is labelled 'SOFT'/'HARD' without
        a kPa or m/s scale"``.
    """
    if bar is None or bar.area == 0:
        return None
    text = read_bar_words(frame, bar)
    if not text:
        return None
    tokens = re.findall(r"[A-Z0-9+\-—–/]+", text)
    words = [w for t in tokens for w in STRAIN_WORDS if _near(re.sub(r"[^A-Z]", "", t), w)]
    quantitative = bool(re.search(r"\d", text)) and bool(re.search(r"KPA|M/S", text))
    if words and not quantitative:
        shown = "/".join(dict.fromkeys(words))
        return (
            f"strain elastography (relative), not SWE: the colour bar is labelled "
            f"'{shown}' without a kPa or m/s scale"
        )
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines and not re.search(r"\d", text) and all(ln in _SIGN_TOKENS for ln in lines):
        return (
            "strain elastography (relative), not SWE: the colour bar ends are labelled "
            f"{' / '.join(lines)} without a kPa or m/s scale"
        )
    return None
