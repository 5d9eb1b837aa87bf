"""Find the parts of an ultrasound frame: panels, the SWE box, the colour bar and their spacing.

The Sequence of Ultrasound Regions (0018,6011) is used when present (PS3.3 C.8.5.5); pixel
analysis (colour content, self-similarity of the two panels, colour bar shape) fills in what it
does not say.

Decisions worth knowing:

- A region of spectral Doppler, M-mode or a Doppler trace makes the frame unsupported. A colour
  flow region (Region Data Type 2) is how SWE scanners declare their SWE box: it is read as the
  elastogram when the frame is a dual display (a plain B-mode panel beside it, a standing or
  lying colour bar sweeping through a colour table), and is unsupported colour Doppler
  otherwise. ECG and other physiological traces, grey bars and colour bars are ignored.
- Two tissue panels without colour (a dual B-mode view, e.g. the ALOKA sample in
  pydicom-data) read as a full-screen B-mode of the *first* panel in reading order (top, then
  left).
- Colour in a single panel with no plain B-mode panel to pair with (colour Doppler, single-view
  elastography) is unsupported: the elastogram cannot be separated from the B-mode reliably.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.fft import next_fast_len
from skimage.color import rgb2lab

from sswe_node.errors import UnsupportedLayoutError
from sswe_node.imaging.boxes import PixelBox
from sswe_node.imaging.regions import (
    COLOUR_BAR,
    COLOUR_FLOW,
    DOPPLER_TYPES,
    SPATIAL_2D,
    SPATIAL_M_MODE,
    SPATIAL_SPECTRAL,
    TISSUE,
    Region,
    read_regions,
)

logger = logging.getLogger(__name__)

__all__ = [
    "Layout",
    "PixelBox",
    "Region",
    "FrameLayout",
    "read_regions",
    "colour_mask",
    "chroma",
    "grey_levels",
    "find_colour_bar",
    "along_bar",
    "analyse_layout",
]

#: Pixels whose RGB channels differ by more than this are "coloured" (grey levels 0-255).
COLOUR_CHROMA = 40.0
#: A panel with a larger fraction of coloured pixels carries an overlay.
COLOUR_FRACTION = 0.01
#: Coloured areas smaller than this (pixels) are annotations (markers, cursors), not overlays.
MIN_OVERLAY_PIXELS = 400
# M-mode and spectral regions show time, not tissue: never processed.
_TIME_FORMATS = (SPATIAL_M_MODE, SPATIAL_SPECTRAL)


class Layout(enum.StrEnum):
    """The kinds of frames the reading core accepts."""

    DUAL_SWE = "dual-swe"
    BMODE = "bmode"


@dataclass(frozen=True)
class FrameLayout:
    """Where the parts of one frame are.

    Attributes
    ----------
    layout : Layout
        Dual SWE capture or full-screen B-mode.
    panel : PixelBox
        The plain B-mode panel (or imaging region of a B-mode frame).
    roi : PixelBox
        The B-mode region of interest: the part of ``panel`` matching the SWE box (dual), or
        the tissue area (B-mode).
    overlay_panel, overlay_roi : PixelBox or None
        The elastogram panel and its coloured SWE box (dual only).
    colour_bar : PixelBox or None
        The colour bar (dual only).
    spacing_mm : tuple of float or None
        ``(row, column)`` pixel spacing of ``panel``.
    source : str
        ``"regions"`` when the panels came from the Sequence of Ultrasound Regions, else
        ``"pixels"``.
    """

    layout: Layout
    panel: PixelBox
    roi: PixelBox
    overlay_panel: PixelBox | None = None
    overlay_roi: PixelBox | None = None
    colour_bar: PixelBox | None = None
    spacing_mm: tuple[float, float] | None = None
    source: str = "pixels"


def colour_mask(frame: NDArray[np.floating]) -> NDArray[np.bool_]:
    """Return where a frame is coloured (not grey).

    Parameters
    ----------
    frame : numpy.ndarray
        ``(h, w, 3)`` RGB or ``(h, w)`` grey, 0-255.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` boolean mask.
    """
    if frame.ndim == 2:
        return np.zeros(frame.shape, dtype=bool)
    return chroma(frame) > COLOUR_CHROMA


def chroma(frame: NDArray[np.floating]) -> NDArray[np.floating]:
    """Return max(R, G, B) - min(R, G, B) of an ``(..., 3)`` RGB array."""
    r, g, b = frame[..., 0], frame[..., 1], frame[..., 2]
    # uint8 stays uint8: max - min of the channels cannot overflow.
    return np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)


def grey_levels(frame: NDArray[np.floating]) -> NDArray[np.float32]:
    """Return the grey level (mean of R, G, B) of a colour frame, or a grey frame as is."""
    if frame.ndim == 2:
        return frame.astype(np.float32, copy=False)
    r, g, b = (frame[..., i].astype(np.float32, copy=False) for i in range(3))
    return (r + g + b) * np.float32(1.0 / 3.0)


def find_colour_bar(
    frame: NDArray[np.floating],
    mask: NDArray[np.bool_] | None = None,
    within: PixelBox | None = None,
) -> PixelBox | None:
    """Find an elastography colour bar: a long narrow strip whose colour sweeps monotonically.

    The bar may stand (vertical) or lie (horizontal). Its colours sweep through the hues (jet,
    rainbow, turbo, viridis...) or from black through red and yellow to white ("hot"); ends of
    low colour content (black, white) are followed from the coloured part of the bar.

    Parameters
    ----------
    frame : numpy.ndarray
        ``(h, w, 3)`` RGB frame, 0-255.
    mask : numpy.ndarray, optional
        Its :func:`colour_mask` (computed when not given).
    within : PixelBox, optional
        Only look here (e.g. a colour bar region).

    Returns
    -------
    PixelBox or None
        The bar, or None when there is none. See :func:`along_bar` for its direction.
    """
    if frame.ndim != 3:
        return None
    offset = (0, 0)
    if within is not None:
        within = within.clipped(frame.shape)
        mask = colour_mask(frame[within.slices]) if mask is None else mask[within.slices]
        offset = (within.top, within.left)
    elif mask is None:
        mask = colour_mask(frame)
    labels, _ = ndimage.label(mask)
    best: PixelBox | None = None
    for i, sl in enumerate(ndimage.find_objects(labels)):
        if sl is None:
            continue
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        long, short = max(h, w), min(h, w)
        if long < 32 or short < 3 or long < 3 * short:
            continue
        fill = np.count_nonzero(labels[sl] == i + 1) / (h * w)
        if fill < 0.85:
            continue
        box = PixelBox(sl[0].start, sl[1].start, sl[0].stop, sl[1].stop).shifted(*offset)
        box = _follow_bar_ends(frame, box)
        length = max(box.height, box.width)
        if _is_colour_sweep(along_bar(frame[box.slices])) and (
            best is None or length > max(best.height, best.width)
        ):
            best = box
    return best


def along_bar(pixels: NDArray[np.floating]) -> NDArray[np.floating]:
    """Return a colour bar's pixels with rows running from its maximum to its minimum.

    A vertical bar (taller than wide) has its maximum at the top, as scanners draw it; a
    horizontal bar has its maximum on the right.

    Parameters
    ----------
    pixels : numpy.ndarray
        ``(h, w, 3)`` pixels of the bar.

    Returns
    -------
    numpy.ndarray
        ``(length, thickness, 3)`` view.
    """
    if pixels.shape[0] >= pixels.shape[1]:
        return pixels
    return pixels.transpose(1, 0, 2)[::-1]


def _follow_bar_ends(frame: NDArray[np.floating], box: PixelBox) -> PixelBox:
    """Grow a bar along its length over ends too grey for the colour mask (black, white)."""
    if box.height >= box.width:
        return _follow_rows(frame, box)
    turned = _follow_rows(
        frame.transpose(1, 0, 2), PixelBox(box.left, box.top, box.right, box.bottom)
    )
    return PixelBox(turned.left, turned.top, turned.right, turned.bottom)


def _follow_rows(frame: NDArray[np.floating], box: PixelBox) -> PixelBox:
    """Grow a vertical bar up and down while rows continue it.

    A row continues the bar when it is uniform, close to the colour of the row before (no
    jump) and unlike the background beside the bar.
    """
    h, w = frame.shape[:2]
    core = slice(box.left + box.width // 4, box.right - box.width // 4)
    sides = [c for c in (box.left - 3, box.right + 2) if 0 <= c < w]

    def colour_of(row: int, before: NDArray[np.float32]) -> NDArray[np.float32] | None:
        pixels = frame[row, core].astype(np.float32)
        colour = pixels.mean(axis=0)
        if np.abs(pixels - colour).max() > 12.0 or np.abs(colour - before).max() > 24.0:
            return None
        beside = [np.abs(frame[row, c].astype(np.float32) - colour).max() for c in sides]
        if beside and min(beside) < 6.0:
            return None
        return colour

    reach = box.height  # a bar is never more than half grey
    top, bottom = box.top, box.bottom
    before = frame[top, core].astype(np.float32).mean(axis=0)
    while top > 0 and box.top - top < reach:
        colour = colour_of(top - 1, before)
        if colour is None:
            break
        top, before = top - 1, colour
    before = frame[bottom - 1, core].astype(np.float32).mean(axis=0)
    while bottom < h and bottom - box.bottom < reach:
        colour = colour_of(bottom, before)
        if colour is None:
            break
        bottom, before = bottom + 1, colour
    return PixelBox(top, box.left, bottom, box.right)


def _is_colour_sweep(strip: NDArray[np.floating]) -> bool:
    """Whether the rows of a strip are uniform colours sweeping monotonically.

    The sweep goes through the hues (jet, rainbow) or from black to white through the warm
    hues (a "hot" bar).
    """
    w = strip.shape[1]
    core = strip[:, w // 4 : w - w // 4 or w]
    if float(core.std(axis=1).mean()) > 20.0:
        return False
    rows = core.mean(axis=1) / 255.0
    return _is_hue_sweep(rows) or _is_heat_sweep(rows)


def _monotone(values: NDArray[np.floating], tolerance: float) -> bool:
    steps = np.diff(values)
    sign = np.sign(values[-1] - values[0])
    return bool(np.mean(steps * sign >= -tolerance) > 0.95)


def _is_hue_sweep(rows: NDArray[np.floating]) -> bool:
    """Whether row colours (0-1 RGB) sweep monotonically over at least a third of the hues."""
    hue = _hue_degrees(rows)
    # Jet runs red -> blue; unwrap so that a sweep through magenta cannot fool the test.
    hue = np.degrees(np.unwrap(np.radians(hue)))
    return bool(np.ptp(hue) >= 120.0) and _monotone(hue, 2.0)


def _is_heat_sweep(rows: NDArray[np.floating]) -> bool:
    """Whether row colours (0-1 RGB) run from near black to near white, steadily brighter.

    The white end tells a heat bar from the red-to-yellow half of a colour Doppler bar.
    """
    lab = rgb2lab(rows[None].astype(np.float64))[0]
    lightness, chroma_ = lab[:, 0], np.hypot(lab[:, 1], lab[:, 2])
    darkest, brightest = int(np.argmin(lightness)), int(np.argmax(lightness))
    return (
        bool(lightness[darkest] < 25.0 and lightness[brightest] > 90.0)
        and bool(chroma_[brightest] < 20.0 and np.max(chroma_) > 40.0)
        and _monotone(lightness, 1.0)
    )


def _hue_degrees(rgb: NDArray[np.floating]) -> NDArray[np.floating]:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (np.degrees(np.arctan2(np.sqrt(3.0) * (g - b), 2.0 * r - g - b)) + 360.0) % 360.0


def analyse_layout(
    frame: NDArray[np.floating],
    regions: list[Region],
    *,
    pixel_spacing_mm: tuple[float, float] | None = None,
) -> FrameLayout:
    """Classify a frame and locate its parts.

    Parameters
    ----------
    frame : numpy.ndarray
        ``(h, w, 3)`` RGB or ``(h, w)`` grey frame, 0-255.
    regions : list of Region
        From :func:`read_regions` (may be empty).
    pixel_spacing_mm : tuple of float, optional
        ``(row, column)`` spacing to use when no region gives one (e.g. Pixel Spacing).

    Returns
    -------
    FrameLayout

    Raises
    ------
    UnsupportedLayoutError
        Doppler, M-mode or spectral content, or colour that is not a dual SWE capture (no
        plain B-mode panel, or no elastography colour bar).
    """
    for region in regions:
        if region.data_type in DOPPLER_TYPES or region.spatial_format in _TIME_FORMATS:
            raise UnsupportedLayoutError(
                f"the image contains a {region.description} region; only dual SWE captures "
                "and B-mode images are processed"
            )
    shape = frame.shape[:2]
    tissue = sorted(
        (r for r in regions if r.spatial_format == SPATIAL_2D and r.data_type == TISSUE),
        key=lambda r: (r.box.top, r.box.left),
    )
    tissue = [r for r in tissue if r.box.clipped(shape).area > 0]
    flow = [r for r in regions if r.data_type == COLOUR_FLOW]
    if flow and frame.ndim == 3:
        # Scanners declare the SWE box as a colour (flow) region: it is an elastogram only in
        # a dual display with a plain panel and an elastography colour bar. The regions say
        # where everything is, so only the bar region and the plain panel are analysed.
        bar = _find_bar(frame, regions)
        return _from_flow_region(flow[0], tissue, frame, bar, shape)
    mask = colour_mask(frame)
    bar = None
    if mask.any():
        bar = _find_bar(frame, regions, mask)
        if bar is not None:
            mask = mask.copy()
            mask[bar.expanded(2).clipped(shape).slices] = False
    if flow:  # a colour flow region on a grey frame: nothing coloured to read
        raise UnsupportedLayoutError(
            f"the image contains a {flow[0].description} region but no colour; only dual SWE "
            "captures and B-mode images are processed"
        )
    if len(tissue) >= 2:
        layout = _from_regions(tissue, frame, mask, bar, shape)
        if layout is not None:
            return layout
    elif len(tissue) == 1 and _overlay_box(mask, tissue[0].box, frame) is None:
        panel = tissue[0].box.clipped(shape)
        return FrameLayout(
            Layout.BMODE, panel, panel, spacing_mm=tissue[0].spacing_mm, source="regions"
        )
    spacing = tissue[0].spacing_mm if tissue else pixel_spacing_mm
    return _from_pixels(frame, mask, bar, spacing)


def _find_bar(
    frame: NDArray[np.floating], regions: list[Region], mask: NDArray[np.bool_] | None = None
) -> PixelBox | None:
    """Find the colour bar in a colour bar region first, then anywhere in the frame."""
    for region in regions:
        if region.data_type == COLOUR_BAR:
            bar = find_colour_bar(frame, mask, within=region.box.expanded(2))
            if bar is not None:
                return bar
    return find_colour_bar(frame, mask)


def _overlay_box(
    mask: NDArray[np.bool_], panel: PixelBox, frame: NDArray[np.floating] | None = None
) -> PixelBox | None:
    """Bounding box of the coloured overlay in a panel, or None when it has (almost) none.

    With ``frame``, flat colour areas (mostly one colour) touching the edge of the panel, such
    as the header band of a scanner's interface, are not counted as overlay.
    """
    sub = mask[panel.slices]
    count = int(np.count_nonzero(sub))
    if count < MIN_OVERLAY_PIXELS or count < COLOUR_FRACTION * sub.size:
        return None
    # Small coloured annotations (markers, cursors) must not stretch the box, and flat colour
    # fills (logos, header bands of the user interface) are not overlays.
    labels, n = ndimage.label(sub)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    limit = max(20, 0.02 * sizes.max())
    kept = []
    for i, sl in enumerate(ndimage.find_objects(labels)):
        if sizes[i + 1] < limit:
            continue
        at_edge = (
            sl[0].start == 0 or sl[1].start == 0
            or sl[0].stop == sub.shape[0] or sl[1].stop == sub.shape[1]
        )  # fmt: skip
        if frame is not None and at_edge:
            pixels = frame[panel.slices][sl][labels[sl] == i + 1].astype(np.float32)
            near = np.abs(pixels - np.median(pixels, axis=0)).max(axis=1) < 8.0
            if near.mean() > 0.6:  # one colour along the edge: an interface band, not overlay
                continue
        kept.append(sl)
    if not kept:
        return None
    top, left = min(sl[0].start for sl in kept), min(sl[1].start for sl in kept)
    bottom, right = max(sl[0].stop for sl in kept), max(sl[1].stop for sl in kept)
    # Compression smears colour one or two pixels past the box edge: drop sparse edge lines.
    inner = sub[top:bottom, left:right]
    row_fill, col_fill = inner.mean(axis=1), inner.mean(axis=0)
    r0, r1, c0, c1 = 0, len(row_fill), 0, len(col_fill)
    for _ in range(3):
        r0 += int(r0 < r1 - 1 and row_fill[r0] < 0.2)
        r1 -= int(r1 - 1 > r0 and row_fill[r1 - 1] < 0.2)
        c0 += int(c0 < c1 - 1 and col_fill[c0] < 0.2)
        c1 -= int(c1 - 1 > c0 and col_fill[c1 - 1] < 0.2)
    box = PixelBox(top + r0, left + c0, top + r1, left + c1)
    return box.shifted(panel.top, panel.left)


def _pair_panel(boxes: list[PixelBox], o: int) -> int:
    """Index of the plain panel that pairs with panel ``o``: the same size (closest otherwise)."""
    plain = [i for i in range(len(boxes)) if i != o]
    return min(
        plain,
        key=lambda i: abs(boxes[i].height - boxes[o].height) + abs(boxes[i].width - boxes[o].width),
    )


def _from_flow_region(
    flow: Region,
    tissue: list[Region],
    frame: NDArray[np.floating],
    bar: PixelBox | None,
    shape: tuple[int, ...],
) -> FrameLayout:
    overlay_roi = flow.box.clipped(shape)
    boxes = [r.box.clipped(shape) for r in tissue]
    centre = (
        (overlay_roi.top + overlay_roi.bottom) // 2,
        (overlay_roi.left + overlay_roi.right) // 2,
    )
    holders = [
        i
        for i, b in enumerate(boxes)
        if b.top <= centre[0] < b.bottom and b.left <= centre[1] < b.right
    ]
    doppler = f"the image contains a {flow.description} region"
    if not holders or len(boxes) < 2:
        raise UnsupportedLayoutError(
            f"{doppler} without a plain B-mode panel beside it (colour Doppler?); only dual SWE "
            "captures and B-mode images are processed"
        )
    if bar is None:
        raise UnsupportedLayoutError(
            f"{doppler} and no elastography colour bar (a strip sweeping through a colour table); "
            "colour Doppler is not processed"
        )
    o = holders[0]
    p = _pair_panel(boxes, o)
    plain = boxes[p]
    # Every other pixel is enough to tell a plain panel from a coloured one. The colour bar
    # may stand (or lie) inside the plain panel's region: its pixels do not count.
    rows, cols = np.arange(plain.top, plain.bottom, 2), np.arange(plain.left, plain.right, 2)
    sample = colour_mask(frame[plain.top : plain.bottom : 2, plain.left : plain.right : 2])
    near = bar.expanded(2)
    sample &= ~(
        ((rows >= near.top) & (rows < near.bottom))[:, None]
        & ((cols >= near.left) & (cols < near.right))[None, :]
    )
    if np.count_nonzero(sample) > max(MIN_OVERLAY_PIXELS / 4, COLOUR_FRACTION * sample.size):
        raise UnsupportedLayoutError(
            "colour appears in both imaging panels (colour Doppler?); a dual SWE capture has one "
            "colour-coded panel and one plain B-mode panel"
        )
    dy, dx = boxes[p].top - boxes[o].top, boxes[p].left - boxes[o].left
    overlay_roi = overlay_roi.shifted(dy, dx).clipped(shape).shifted(-dy, -dx)
    return _dual_of_regions(tissue, boxes, o, p, overlay_roi, bar)


def _from_regions(
    tissue: list[Region],
    frame: NDArray[np.floating],
    mask: NDArray[np.bool_],
    bar: PixelBox | None,
    shape: tuple[int, ...],
) -> FrameLayout | None:
    boxes = [r.box.clipped(shape) for r in tissue]
    overlays = [_overlay_box(mask, b, frame) for b in boxes]
    coloured = [i for i, o in enumerate(overlays) if o is not None]
    if not coloured:
        return FrameLayout(
            Layout.BMODE, boxes[0], boxes[0], spacing_mm=tissue[0].spacing_mm, source="regions"
        )
    if len(coloured) > 1:
        raise UnsupportedLayoutError(
            "colour appears in more than one imaging panel (colour Doppler?); a dual SWE capture "
            "has one colour-coded panel and one plain B-mode panel"
        )
    o = coloured[0]
    p = _pair_panel(boxes, o)
    assert overlays[o] is not None
    overlay_roi = _snap_to_outline(frame, overlays[o]).clipped(shape)
    roi = overlay_roi.shifted(boxes[p].top - boxes[o].top, boxes[p].left - boxes[o].left)
    if not roi.inside(shape):
        return None
    if bar is None:
        raise UnsupportedLayoutError(
            "colour overlay in one panel but no elastography colour bar (a strip sweeping "
            "through a colour table): colour Doppler is not processed"
        )
    return _dual_of_regions(tissue, boxes, o, p, overlay_roi, bar)


def _dual_of_regions(
    tissue: list[Region],
    boxes: list[PixelBox],
    o: int,
    p: int,
    overlay_roi: PixelBox,
    bar: PixelBox,
) -> FrameLayout:
    """Return the dual layout of tissue region ``o`` (elastogram) and ``p`` (plain B-mode)."""
    dy, dx = boxes[p].top - boxes[o].top, boxes[p].left - boxes[o].left
    return FrameLayout(
        Layout.DUAL_SWE,
        boxes[p],
        overlay_roi.shifted(dy, dx),
        overlay_panel=boxes[o],
        overlay_roi=overlay_roi,
        colour_bar=bar,
        spacing_mm=tissue[p].spacing_mm or tissue[o].spacing_mm,
        source="regions",
    )


def _from_pixels(
    frame: NDArray[np.floating],
    mask: NDArray[np.bool_],
    bar: PixelBox | None,
    spacing: tuple[float, float] | None,
) -> FrameLayout:
    shape = frame.shape[:2]
    grey = grey_levels(frame)
    whole = PixelBox(0, 0, shape[0], shape[1])
    overlay = _overlay_box(mask, whole, frame)
    if overlay is None:
        roi = _tissue_box(grey, bar, mask=mask)
        return FrameLayout(Layout.BMODE, roi, roi, spacing_mm=spacing)
    if bar is None:
        raise UnsupportedLayoutError(
            "the image has a colour overlay but no elastography colour bar (a strip sweeping "
            "through a colour table): colour Doppler is not processed"
        )
    shift = _panel_shift(grey, mask, overlay, bar)
    if shift is None:
        raise UnsupportedLayoutError(
            "the image has a colour overlay but no plain B-mode panel showing the same tissue "
            "(colour Doppler or single-view elastography); only dual SWE captures are processed"
        )
    overlay = _snap_to_outline(frame, overlay)
    dy, dx = shift
    roi = overlay.shifted(dy, dx)
    # The elastogram panel is the tissue area on the overlay's side of the gap between the box
    # and its copy; the plain panel is the same area shifted.
    h, w = shape
    if abs(dy) > abs(dx):
        first, second = sorted((overlay, roi), key=lambda b: b.top)
        cut = (first.bottom + second.top) // 2
        side = PixelBox(0, 0, cut, w) if overlay is first else PixelBox(cut, 0, h, w)
    else:
        first, second = sorted((overlay, roi), key=lambda b: b.left)
        cut = (first.right + second.left) // 2
        side = PixelBox(0, 0, h, cut) if overlay is first else PixelBox(0, cut, h, w)
    o_panel = _tissue_box(grey[side.slices], None, open_size=1).shifted(side.top, side.left)
    p_panel = o_panel.shifted(dy, dx).clipped(shape)
    return FrameLayout(
        Layout.DUAL_SWE,
        p_panel,
        roi,
        overlay_panel=o_panel,
        overlay_roi=overlay,
        colour_bar=bar,
        spacing_mm=spacing,
    )


def _snap_to_outline(frame: NDArray[np.floating], box: PixelBox) -> PixelBox:
    """Grow a coloured box to the bright outline drawn around it, when there is one.

    Voids (no colour) along an edge of the SWE box make the coloured area smaller than the
    box; scanners draw the box outline, so each edge moves out to a bright grey line found
    within a quarter of the box size. Only a window around the box is analysed.
    """
    reach_r, reach_c = max(4, box.height // 4), max(4, box.width // 4)
    window = PixelBox(
        box.top - reach_r - 1, box.left - reach_c - 1, box.bottom + reach_r, box.right + reach_c
    ).clipped(frame.shape)
    local = _snap_local(frame[window.slices], box.shifted(-window.top, -window.left))
    return local.shifted(window.top, window.left)


def _snap_local(frame: NDArray[np.floating], box: PixelBox) -> PixelBox:
    grey = grey_levels(frame)
    h, w = grey.shape
    reach_r, reach_c = max(4, box.height // 4), max(4, box.width // 4)
    sat = chroma(frame) if frame.ndim == 3 else None

    def is_line(values: NDArray[np.floating], colours: NDArray[np.floating] | None) -> bool:
        bright = values >= 150.0
        if colours is not None:
            bright &= colours < 24
        return bool(bright.mean() > 0.8)

    def scan(candidates: range, row: bool) -> int | None:
        for i in candidates:
            if row:
                values = grey[i, box.left : box.right]
                colours = None if sat is None else sat[i, box.left : box.right]
            else:
                values = grey[box.top : box.bottom, i]
                colours = None if sat is None else sat[box.top : box.bottom, i]
            if is_line(values, colours):
                return i
        return None

    top = scan(range(box.top - 1, max(-1, box.top - 1 - reach_r), -1), True)
    bottom = scan(range(box.bottom, min(h, box.bottom + reach_r)), True)
    left = scan(range(box.left - 1, max(-1, box.left - 1 - reach_c), -1), False)
    right = scan(range(box.right, min(w, box.right + reach_c)), False)
    box = PixelBox(
        box.top if top is None else top + 1,
        box.left if left is None else left + 1,
        box.bottom if bottom is None else bottom,
        box.right if right is None else right,
    )

    # JPEG chroma subsampling tints the outline with the colours beside it, so that it counts
    # as coloured: an edge line of even, bright luminance is the outline, not elastogram.
    def outline(values: NDArray[np.floating]) -> bool:
        return bool(values.mean() >= 150.0 and values.std() < 12.0)

    t, l_, b, r = box.top, box.left, box.bottom, box.right
    for _ in range(2):  # only edges whose outline was not found outside the box
        t += int(top is None and b - t > 4 and outline(grey[t, l_:r]))
        b -= int(bottom is None and b - t > 4 and outline(grey[b - 1, l_:r]))
        l_ += int(left is None and r - l_ > 4 and outline(grey[t:b, l_]))
        r -= int(right is None and r - l_ > 4 and outline(grey[t:b, r - 1]))
    return PixelBox(t, l_, b, r)


def _tissue_box(
    grey: NDArray[np.floating],
    bar: PixelBox | None,
    open_size: int = 2,
    mask: NDArray[np.bool_] | None = None,
) -> PixelBox:
    """Return the largest bright connected area, without text and thin annotations."""
    k = 4
    h, w = grey.shape
    hh, ww = h // k, w // k
    if hh < 4 or ww < 4:
        return PixelBox(0, 0, h, w)
    small = grey[: hh * k, : ww * k].reshape(hh, k, ww, k).mean(axis=(1, 3))
    bright = small > 12.0
    if mask is not None:  # coloured interface elements are not tissue
        coloured = mask[: hh * k, : ww * k].reshape(hh, k, ww, k).mean(axis=(1, 3))
        bright &= coloured < 0.5
    if bar is not None:
        b = bar.expanded(k)
        bright[max(0, b.top // k) : b.bottom // k + 1, max(0, b.left // k) : b.right // k + 1] = (
            False
        )
    bright = ndimage.binary_opening(bright, iterations=open_size)
    labels, n = ndimage.label(bright)
    if n == 0:
        return PixelBox(0, 0, h, w)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    sl = ndimage.find_objects(labels)[int(np.argmax(sizes)) - 1]
    return PixelBox(
        sl[0].start * k, sl[1].start * k, min(h, sl[0].stop * k), min(w, sl[1].stop * k)
    )


def _panel_shift(
    grey: NDArray[np.floating],
    mask: NDArray[np.bool_],
    overlay: PixelBox,
    bar: PixelBox | None,
) -> tuple[int, int] | None:
    """Find the shift from the elastogram panel to the plain panel showing the same tissue.

    Both panels of a dual capture show the same B-mode image, so the grey image (colour,
    overlay box and colour bar blanked) correlates with itself at the panel shift. The peak is
    found on a half-resolution autocorrelation, then refined and checked at full resolution.
    """
    h, w = grey.shape
    g = grey.astype(np.float32).copy()
    g[mask] = 0.0
    g[overlay.expanded(2).clipped(g.shape).slices] = 0.0
    if bar is not None:
        g[bar.expanded(4).clipped(g.shape).slices] = 0.0
    k = max(2, int(np.ceil(max(h, w) / 300)))
    hh, ww = h // k, w // k
    small = g[: hh * k, : ww * k].reshape(hh, k, ww, k).mean(axis=(1, 3))
    valid = small > 0
    small = np.where(valid, small - small[valid].mean() if valid.any() else 0.0, 0.0)
    size = (next_fast_len(2 * hh, real=True), next_fast_len(2 * ww, real=True))
    # Normalised cross-correlation of the image with itself at every shift, by FFT: the
    # energies of both overlapping parts come from correlating the squares with the support.
    spec = np.fft.rfft2(small, s=size)
    vspec = np.fft.rfft2(valid.astype(np.float32), s=size)
    qspec = np.fft.rfft2(small * small, s=size)
    ac = np.fft.irfft2(spec * np.conj(spec), s=size)
    overlap = np.fft.irfft2(vspec * np.conj(vspec), s=size)
    energy = np.fft.irfft2(qspec * np.conj(vspec), s=size) * np.fft.irfft2(
        vspec * np.conj(qspec), s=size
    )
    ok = (overlap > 0.05 * valid.sum()) & (energy > 0)
    ac = np.where(ok, ac / np.sqrt(np.where(ok, energy, 1.0)), -np.inf)
    # The copy of the SWE box in the plain panel cannot overlap the box itself, and must lie
    # inside the frame (for one of the two signs the autocorrelation cannot tell apart).
    dy = np.fft.fftfreq(size[0], 1.0 / size[0]).round().astype(int)[:, None] * k
    dx = np.fft.fftfreq(size[1], 1.0 / size[1]).round().astype(int)[None, :] * k
    apart = (np.abs(dy) >= overlay.height - k) | (np.abs(dx) >= overlay.width - k)

    def fits(sy: NDArray[np.int_], sx: NDArray[np.int_]) -> NDArray[np.bool_]:
        return (
            (overlay.top + sy >= -k)
            & (overlay.bottom + sy <= h + k)
            & (overlay.left + sx >= -k)
            & (overlay.right + sx <= w + k)
        )

    ac[~(apart & (fits(dy, dx) | fits(-dy, -dx)))] = -np.inf
    best = np.unravel_index(int(np.argmax(ac)), ac.shape)
    cand = (int(dy[best[0], 0]), int(dx[0, best[1]]))
    for sign in (1, -1):
        s = (cand[0] * sign, cand[1] * sign)
        refined = _refine_shift(g, overlay, s, radius=k)
        if refined is not None:
            roi = overlay.shifted(*refined)
            if roi.inside(g.shape) and mask[roi.slices].mean() < 2 * COLOUR_FRACTION:
                return refined
    return None


def _refine_shift(
    g: NDArray[np.float32], overlay: PixelBox, shift: tuple[int, int], radius: int
) -> tuple[int, int] | None:
    """Refine a shift within ``radius`` by correlation around the overlay; None if no match."""
    ring = overlay.expanded(max(8, overlay.height // 6)).clipped(g.shape)
    rows, cols = np.nonzero(g[ring.slices] > 0)
    if len(rows) < 200:
        return None
    stride = max(1, len(rows) // 8000)
    rows, cols = rows[::stride] + ring.top, cols[::stride] + ring.left
    a = g[rows, cols]
    h, w = g.shape

    def score(s: tuple[int, int]) -> float:
        r2, c2 = rows + s[0], cols + s[1]
        inside = (r2 >= 0) & (r2 < h) & (c2 >= 0) & (c2 < w)
        b = g[r2[inside], c2[inside]]
        use = b > 0
        if use.sum() < 200:
            return -1.0
        x, y = a[inside][use], b[use]
        x, y = x - x.mean(), y - y.mean()
        denom = float(np.sqrt((x * x).sum() * (y * y).sum()))
        return float((x * y).sum() / denom) if denom > 0 else -1.0

    # coarse (every other shift), then the neighbours of the best one
    step = 2 if radius > 2 else 1
    coarse = [
        (shift[0] + dy, shift[1] + dx)
        for dy in range(-radius, radius + 1, step)
        for dx in range(-radius, radius + 1, step)
    ]
    best = max(coarse, key=score)
    if step > 1:
        fine = [(best[0] + dy, best[1] + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        best = max(fine, key=score)
    if score(best) < 0.6:
        return None
    return best
