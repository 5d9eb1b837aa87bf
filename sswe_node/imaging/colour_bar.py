"""Find and read an elastography colour bar: a long narrow strip whose colour sweeps monotonically.

Also the two pixel measures the layout analysis builds on: which pixels are coloured
(:func:`colour_mask`, :func:`chroma`) and their grey level (:func:`grey_levels`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from skimage.color import rgb2lab

from sswe_node.imaging.boxes import PixelBox

__all__ = ["COLOUR_CHROMA", "colour_mask", "chroma", "grey_levels", "find_colour_bar", "along_bar"]

#: Pixels whose RGB channels differ by more than this are "coloured" (grey levels 0-255).
COLOUR_CHROMA = 40.0


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
        if within.height < 1 or within.width < 1:
            return None  # a region outside the pixels (a cropped capture): no bar there
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
