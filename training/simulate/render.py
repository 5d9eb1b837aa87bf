"""Scanner screen renderings: the dual SWE display and full-screen B-mode, with annotations.

Each function returns the frame (uint8, RGB ``(rows, cols, 3)`` or grey ``(rows, cols)``) and a
:class:`Layout` naming the pixel boxes (``top, left, bottom, right``, end exclusive) of every
panel, of the SWE box in both panels and of the colour bar. Burned-in annotations (header text,
depth ruler, colour-bar labels, box outline) never carry patient identifiers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from sswe_node.imaging.boxes import PixelBox
from sswe_node.imaging.colormap import render_colour_bar, values_to_rgb

__all__ = ["Box", "Layout", "render_dual", "render_fullscreen"]

logger = logging.getLogger(__name__)

SYNTHETIC_NOTE = "SYNTHETIC PHANTOM - NOT FOR DIAGNOSIS"
_OUTLINE = (210, 210, 210)
_TEXT = (225, 225, 225)


#: The simulator's boxes are the reading core's (``top, left, bottom, right``, end exclusive).
Box = PixelBox


@dataclass
class Layout:
    """Where things are in a rendered frame."""

    rows: int
    cols: int
    boxes: dict[str, Box] = field(default_factory=dict)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _depth_ruler(
    draw: ImageDraw.ImageDraw, panel: Box, spacing_mm: float, top_mm: float, side: str = "left"
) -> None:
    """Draw ticks every 5 mm and a label every centimetre beside a panel."""
    x = panel.left - 4 if side == "left" else panel.right + 3
    direction = -1 if side == "left" else 1
    draw.line([(x, panel.top), (x, panel.bottom - 1)], fill=(150, 150, 150))
    mm = np.ceil(top_mm / 5.0) * 5.0
    while True:
        row = panel.top + int(round((mm - top_mm) / spacing_mm))
        if row >= panel.bottom:
            break
        major = int(round(mm)) % 10 == 0
        length = 7 if major else 4
        draw.line([(x, row), (x + direction * length, row)], fill=(190, 190, 190))
        if major and mm > 0:
            label = f"{int(round(mm / 10))}"
            tx = x - 20 if side == "left" else x + 9
            draw.text((tx, row - 6), label, fill=_TEXT, font=_font(11))
        mm += 5.0


def _outline(draw: ImageDraw.ImageDraw, box: Box, colour: tuple[int, int, int]) -> None:
    draw.rectangle([box.left - 1, box.top - 1, box.right, box.bottom], outline=colour)


def render_dual(
    bmode: NDArray[np.uint8],
    swe: NDArray[np.float32],
    swe_box: Box,
    *,
    scale: tuple[float, float],
    unit: str,
    spacing_mm: float,
    top_mm: float,
    opacity: float = 0.8,
    arrangement: str = "left-right",
    header: str = "",
) -> tuple[NDArray[np.uint8], Layout]:
    """Render a dual SWE display: elastogram over B-mode in one panel, plain B-mode in the other.

    Parameters
    ----------
    bmode : ndarray uint8 (rows, cols)
        The B-mode of one panel.
    swe : ndarray float32
        SWE values on the box grid (NaN = void, no colour).
    swe_box : Box
        The SWE box inside a panel (panel coordinates).
    scale : (float, float)
        Colour scale minimum and maximum.
    unit : str
        Scale label unit ("kPa", "m/s").
    spacing_mm, top_mm : float
        Pixel spacing and depth of the first row (for the depth ruler).
    opacity : float
        Elastogram opacity over the B-mode, 0-1.
    arrangement : {"left-right", "top-bottom"}
        Elastogram panel left of (or above) the plain B-mode panel.
    header : str
        Extra header text (no identifiers).

    Returns
    -------
    (ndarray uint8 (rows, cols, 3), Layout)
    """
    if not 0.0 < opacity <= 1.0:
        raise ValueError(f"opacity must be in (0, 1], got {opacity}")
    h, w = bmode.shape
    head, margin, gap, foot, bar_area = 50, 44, 18, 34, 96
    if arrangement == "left-right":
        rows, cols = head + h + foot, margin + 2 * w + gap + bar_area
        elasto = Box(head, margin, head + h, margin + w)
        plain = elasto.shifted(0, w + gap)
    elif arrangement == "top-bottom":
        rows, cols = head + 2 * h + gap + foot, margin + w + bar_area
        elasto = Box(head, margin, head + h, margin + w)
        plain = elasto.shifted(h + gap, 0)
    else:
        raise ValueError(f"unknown arrangement {arrangement!r}")
    bar_h = min(256, h - 60)
    right = max(elasto.right, plain.right)
    bar = Box(elasto.top + 30, right + 34, elasto.top + 30 + bar_h, right + 48)

    frame = np.zeros((rows, cols, 3), dtype=np.uint8)
    grey = np.repeat(bmode[:, :, None], 3, axis=2)
    frame[plain.top : plain.bottom, plain.left : plain.right] = grey
    panel = grey.copy()
    region = panel[swe_box.top : swe_box.bottom, swe_box.left : swe_box.right].astype(np.float32)
    colour = values_to_rgb(swe, scale[0], scale[1]).astype(np.float32)
    valid = ~np.isnan(swe)
    blended = (1.0 - opacity) * region + opacity * colour
    region[valid] = blended[valid]
    panel[swe_box.top : swe_box.bottom, swe_box.left : swe_box.right] = np.round(region)
    frame[elasto.top : elasto.bottom, elasto.left : elasto.right] = panel
    frame[bar.top : bar.bottom, bar.left : bar.right] = render_colour_bar(bar.height, bar.width)

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    for p in (elasto, plain):
        _outline(draw, p, (90, 90, 90))
        _outline(draw, swe_box.shifted(p.top, p.left), _OUTLINE)
        side = "right" if (arrangement == "left-right" and p is plain) else "left"
        _depth_ruler(draw, p, spacing_mm, top_mm, side=side)
    draw.text((margin, 8), "SWE  " + header, fill=_TEXT, font=_font(14))
    draw.text((margin, 28), SYNTHETIC_NOTE, fill=(200, 200, 90), font=_font(11))
    hi = f"{scale[1]:g} {unit}"
    lo = f"{scale[0]:g}"
    draw.text((bar.left - 4, bar.top - 18), hi, fill=_TEXT, font=_font(12))
    draw.text((bar.right + 4, bar.bottom - 10), lo, fill=_TEXT, font=_font(12))
    draw.text((cols - 150, 8), f"Opacity {opacity:.0%}", fill=_TEXT, font=_font(11))
    frame = np.asarray(image)

    layout = Layout(rows, cols)
    layout.boxes = {
        "elastogram_panel": elasto,
        "bmode_panel": plain,
        "swe_box": swe_box.shifted(elasto.top, elasto.left),
        "bmode_box": swe_box.shifted(plain.top, plain.left),
        "colour_bar": bar,
    }
    return frame, layout


def render_fullscreen(
    bmode: NDArray[np.uint8],
    *,
    spacing_mm: float,
    top_mm: float,
    header: str = "",
    rgb: bool = False,
    ruler_side: str = "left",
    grey_bar: bool = True,
) -> tuple[NDArray[np.uint8], Layout]:
    """Render a full-screen B-mode display with header, depth ruler and grey bar.

    Parameters
    ----------
    bmode : ndarray uint8 (rows, cols)
        The B-mode image.
    spacing_mm, top_mm : float
        Pixel spacing and depth of the first row.
    header : str
        Header text (no identifiers).
    rgb : bool
        Return an RGB frame (else grey).
    ruler_side : {"left", "right"}
        Side of the depth ruler.
    grey_bar : bool
        Draw a grey-scale bar right of the image.

    Returns
    -------
    (ndarray uint8, Layout)
        The frame and the boxes ``imaging_region`` (and ``grey_bar``).
    """
    h, w = bmode.shape
    head, margin, foot, right = 46, 40, 30, 64
    rows, cols = head + h + foot, margin + w + right
    region = Box(head, margin, head + h, margin + w)
    frame = np.zeros((rows, cols), dtype=np.uint8)
    frame[region.top : region.bottom, region.left : region.right] = bmode
    layout = Layout(rows, cols, {"imaging_region": region})
    if grey_bar:
        bar_h = min(200, h - 40)
        bar = Box(head + 20, region.right + 30, head + 20 + bar_h, region.right + 42)
        ramp = np.linspace(255, 0, bar_h).astype(np.uint8)[:, None]
        frame[bar.top : bar.bottom, bar.left : bar.right] = ramp
        layout.boxes["grey_bar"] = bar
    image = Image.fromarray(frame).convert("RGB")
    draw = ImageDraw.Draw(image)
    _outline(draw, region, (90, 90, 90))
    _depth_ruler(draw, region, spacing_mm, top_mm, side=ruler_side)
    draw.text((margin, 6), header, fill=_TEXT, font=_font(13))
    draw.text((margin, 25), SYNTHETIC_NOTE, fill=(200, 200, 200), font=_font(11))
    out = np.asarray(image)
    if not rgb:
        out = np.ascontiguousarray(out[:, :, 0])
    return out, layout
