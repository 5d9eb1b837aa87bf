"""The synthetic-output warning, quantity names and units, and burned-in text rendering."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "WARNING",
    "QUANTITY_NAMES",
    "UCUM_MEANINGS",
    "quantity_name",
    "format_value",
    "text_size",
    "TEXT_SIZE",
    "draw_text",
    "draw_texts",
    "burn_texts",
]

#: Burned into every Secondary Capture and written into the DICOM attributes of every output.
WARNING = "SYNTHETIC SWE - RESEARCH USE, NOT FOR DIAGNOSIS"

#: Human names of the quantities a model may predict.
QUANTITY_NAMES = {
    "youngs-modulus": "Young's modulus",
    "shear-wave-speed": "shear-wave speed",
}

#: UCUM code meanings of the units a model may predict in.
UCUM_MEANINGS = {"kPa": "kilopascal", "m/s": "meter per second"}


def quantity_name(quantity: str) -> str:
    """Return the human name of a quantity code (the code itself when unknown)."""
    return QUANTITY_NAMES.get(quantity, quantity)


def format_value(value: float) -> str:
    """Format a colour-bar label: integers without decimals, others with one."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


#: Default text height in pixels (Pillow's default font size).
TEXT_SIZE = 11


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # no FreeType: the fixed bitmap font
        return ImageFont.load_default()


@lru_cache(maxsize=256)
def text_size(text: str, size: int = TEXT_SIZE) -> tuple[int, int]:
    """Return ``(height, width)`` in pixels of ``text`` in the burned-in font."""
    left, top, right, bottom = _font(size).getbbox(text)
    return (int(bottom) + 1, int(right - min(left, 0)) + 1)


def draw_text(
    rgb: NDArray[np.uint8],
    text: str,
    top: int,
    left: int,
    colour: tuple[int, int, int] = (255, 255, 255),
    size: int = TEXT_SIZE,
) -> NDArray[np.uint8]:
    """Burn one line of text into an RGB image (see :func:`draw_texts`)."""
    return draw_texts(rgb, [(text, top, left, colour)], size)


@lru_cache(maxsize=256)
def _glyphs(text: str, size: int) -> tuple[NDArray[np.bool_], int]:
    """Return the pixels Pillow sets for ``text`` and the padding around its origin."""
    left, top, right, bottom = _font(size).getbbox(text)
    pad = size + max(0, -int(left), -int(top))
    # getbbox measures the antialiased text; the 1-bit glyphs can be wider: pad generously.
    image = Image.new("L", (int(right) + 4 * pad + 1, int(bottom) + 2 * pad + 1), 0)
    draw = ImageDraw.Draw(image)
    draw.fontmode = "1"  # crisp, un-antialiased text: exact colours, readable when enlarged
    draw.text((pad, pad), text, fill=255, font=_font(size))
    mask = np.asarray(image) > 0
    mask.flags.writeable = False
    return mask, pad


def draw_texts(
    rgb: NDArray[np.uint8],
    lines: Sequence[tuple[str, int, int, tuple[int, int, int]]],
    size: int = TEXT_SIZE,
) -> NDArray[np.uint8]:
    """Burn lines of text into an RGB image (Pillow's default font, not antialiased).

    Each text's glyph pixels are rendered once by Pillow and cached, then set in the image:
    the result is what Pillow's ``ImageDraw.text`` draws, without converting the image.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(rows, columns, 3)`` uint8 image; not changed.
    lines : sequence of tuple
        ``(text, top, left, colour)`` per line: ASCII text, the position of its top-left
        corner and its RGB colour.
    size : int
        Font size in pixels.

    Returns
    -------
    numpy.ndarray
        A new ``(rows, columns, 3)`` uint8 image with the text.
    """
    return burn_texts(np.array(rgb, dtype=np.uint8, copy=True), lines, size)


def burn_texts(
    rgb: NDArray[np.uint8],
    lines: Sequence[tuple[str, int, int, tuple[int, int, int]]],
    size: int = TEXT_SIZE,
) -> NDArray[np.uint8]:
    """Burn lines of text into ``rgb`` in place and return it (see :func:`draw_texts`)."""
    rows, cols = rgb.shape[:2]
    for text, top, left, colour in lines:
        mask, pad = _glyphs(text, size)
        y0, x0 = int(top) - pad, int(left) - pad
        ys, xs = max(0, -y0), max(0, -x0)
        ye, xe = min(mask.shape[0], rows - y0), min(mask.shape[1], cols - x0)
        if ye <= ys or xe <= xs:
            continue
        region = rgb[y0 + ys : y0 + ye, x0 + xs : x0 + xe]
        region[mask[ys:ye, xs:xe]] = colour
    return rgb
