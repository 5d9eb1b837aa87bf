"""Scanner screen renderings: the dual SWE display and full-screen B-mode, with annotations.

Each function returns the frame (uint8, RGB ``(rows, cols, 3)`` or grey ``(rows, cols)``) and a
:class:`Layout` naming the pixel boxes (``top, left, bottom, right``, end exclusive) of every
panel, of the SWE box in both panels and of the colour bar. Burned-in annotations (header text,
depth ruler, colour-bar labels, box outline, and optionally the operator's measurement marks:
Q-Box rings, calipers, crosses, text) never carry patient identifiers.

The colour bar is labelled as scanners label it: the maximum with its unit above the bar
("180 kPa", "10.0 m/s") and "0" beside its bottom end. :func:`draw_scale` draws the maximum an
operator would choose per acquisition, :func:`draw_annotations` the marks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from sswe_node.imaging.boxes import PixelBox
from sswe_node.imaging.colormap import render_colour_bar, values_to_rgb

__all__ = [
    "Box",
    "Layout",
    "Annotation",
    "SCALE_MAXIMA",
    "draw_scale",
    "draw_annotations",
    "scale_label_texts",
    "render_dual",
    "render_fullscreen",
]

logger = logging.getLogger(__name__)

SYNTHETIC_NOTE = "SYNTHETIC PHANTOM - NOT FOR DIAGNOSIS"
_OUTLINE = (210, 210, 210)
_TEXT = (225, 225, 225)


#: The simulator's boxes are the reading core's (``top, left, bottom, right``, end exclusive).
Box = PixelBox

#: Colour-bar maxima an operator picks per acquisition (Aixplorer-like kPa presets; m/s bars).
SCALE_MAXIMA: dict[str, tuple[float, ...]] = {
    "kPa": (40.0, 70.0, 90.0, 180.0, 300.0),
    "m/s": (5.0, 7.0, 10.0),
}
#: Colours of measurement marks on scanners' screens: white, yellow, green.
MARK_COLOURS = ((255, 255, 255), (255, 255, 0), (0, 255, 0))


@dataclass(frozen=True)
class Annotation:
    """One burned-in measurement mark, in the coordinates of the SWE box's panel.

    Attributes
    ----------
    kind : str
        ``"ring"`` (Q-Box circle), ``"caliper"`` (two crosses and a dotted line), ``"cross"``
        or ``"text"``.
    points : tuple of (row, col)
        Ring: centre; caliper: both ends; cross: centre; text: top-left corner.
    size : int
        Ring radius, cross half-size or text height (pixels).
    colour : tuple of int
        RGB.
    text : str
        The text of a ``"text"`` mark (and drawn beside a caliper).
    both_panels : bool
        Drawn in the plain B-mode panel too (rings and calipers are, on dual displays).
    """

    kind: str
    points: tuple[tuple[int, int], ...]
    size: int
    colour: tuple[int, int, int]
    text: str = ""
    both_panels: bool = True

    def record(self) -> dict[str, object]:
        """Return the mark as a JSON-ready dict (for ``archive.json``)."""
        return {
            "kind": self.kind,
            "points": [list(p) for p in self.points],
            "size": self.size,
            "colour": list(self.colour),
            "text": self.text,
            "both_panels": self.both_panels,
        }


def draw_scale(rng: np.random.Generator, unit: str) -> tuple[float, float]:
    """Draw the colour-bar range of one acquisition: ``(0, maximum)`` from :data:`SCALE_MAXIMA`."""
    return (0.0, float(rng.choice(SCALE_MAXIMA[unit])))


def scale_label_texts(scale: tuple[float, float], unit: str) -> tuple[str, str]:
    """Return the (maximum, minimum) bar end labels: ``("180 kPa", "0")``, ``"10.0 m/s"``."""
    high = f"{scale[1]:.1f}" if unit == "m/s" else f"{scale[1]:g}"
    low = f"{scale[0]:g}"
    return f"{high} {unit}", low


def draw_annotations(
    rng: np.random.Generator, swe_box: Box, unit: str = "kPa", count: int | None = None
) -> tuple[Annotation, ...]:
    """Draw an operator's measurement marks in and around an SWE box (panel coordinates).

    One or two Q-Box rings, often a caliper, sometimes a cross, and a text line (measurement
    result) inside the box; colours from :data:`MARK_COLOURS`.
    """
    marks: list[Annotation] = []
    n_rings = int(rng.integers(1, 3)) if count is None else count
    h, w = swe_box.height, swe_box.width
    for i in range(n_rings):
        radius = int(rng.integers(8, max(9, min(h, w) // 6)))
        row = swe_box.top + int(rng.integers(radius + 2, max(radius + 3, h - radius - 2)))
        col = swe_box.left + int(rng.integers(radius + 2, max(radius + 3, w - radius - 2)))
        colour = MARK_COLOURS[int(rng.integers(0, 2))]
        marks.append(Annotation("ring", ((row, col),), radius, colour, text=f"{i + 1}"))
    if count is None and rng.uniform() < 0.7:
        r0 = swe_box.top + int(rng.integers(10, max(11, h - 10)))
        c0 = swe_box.left + int(rng.integers(10, max(11, w // 2)))
        r1 = min(swe_box.bottom - 10, r0 + int(rng.integers(-30, 31)))
        c1 = min(swe_box.right - 10, c0 + int(rng.integers(30, max(31, w // 2))))
        colour = MARK_COLOURS[int(rng.integers(1, 3))]
        marks.append(Annotation("caliper", ((r0, c0), (max(swe_box.top + 5, r1), c1)), 5, colour))
    if count is None and rng.uniform() < 0.4:
        r = swe_box.top + int(rng.integers(8, max(9, h - 8)))
        c = swe_box.left + int(rng.integers(8, max(9, w - 8)))
        marks.append(Annotation("cross", ((r, c),), 4, MARK_COLOURS[int(rng.integers(0, 3))]))
    if count is None:
        value = float(rng.uniform(5, 60)) if unit == "kPa" else float(rng.uniform(1, 6))
        text = f"Mean {value:.1f} {unit}"
        r = swe_box.top + int(rng.integers(4, max(5, h - 16)))
        c = swe_box.left + int(rng.integers(4, max(5, w - 90)))
        marks.append(Annotation("text", ((r, c),), 11, (255, 255, 255), text, both_panels=False))
    return tuple(marks)


def _draw_mark(draw: ImageDraw.ImageDraw, mark: Annotation, origin: tuple[int, int]) -> None:
    """Draw one mark with its panel at ``origin`` (frame row, column)."""
    points = [(c + origin[1], r + origin[0]) for r, c in mark.points]
    if mark.kind == "ring":
        (x, y), rad = points[0], mark.size
        draw.ellipse([x - rad, y - rad, x + rad, y + rad], outline=mark.colour, width=1)
        draw.text((x + rad + 2, y - rad - 4), mark.text, fill=mark.colour, font=_font(10))
    elif mark.kind in ("caliper", "cross"):
        k = mark.size
        for x, y in points:
            draw.line([(x - k, y), (x + k, y)], fill=mark.colour)
            draw.line([(x, y - k), (x, y + k)], fill=mark.colour)
        if mark.kind == "caliper":
            (x0, y0), (x1, y1) = points
            steps = max(2, int(np.hypot(x1 - x0, y1 - y0) // 4))
            for t in np.linspace(0.0, 1.0, steps)[1:-1:2]:
                xa, ya = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
                draw.point([(round(xa), round(ya))], fill=mark.colour)
    elif mark.kind == "text":
        draw.text(points[0], mark.text, fill=mark.colour, font=_font(mark.size))
    else:
        raise ValueError(f"unknown mark kind {mark.kind!r}")


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
    annotations: Sequence[Annotation] = (),
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
    annotations : sequence of Annotation
        Measurement marks (coordinates of the SWE box's panel, as ``swe_box``), drawn over
        the elastogram panel (and the plain panel when ``both_panels``).

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
    for mark in annotations:
        _draw_mark(draw, mark, (elasto.top, elasto.left))
        if mark.both_panels:
            _draw_mark(draw, mark, (plain.top, plain.left))
    hi, lo = scale_label_texts(scale, unit)
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
