"""Find the coloured overlay (the SWE box) in a panel and snap it to the outline drawn around it."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from sswe_node.imaging.boxes import PixelBox
from sswe_node.imaging.colour_bar import chroma, grey_levels

__all__ = ["COLOUR_FRACTION", "MIN_OVERLAY_PIXELS", "overlay_box", "snap_to_outline"]

#: A panel with a larger fraction of coloured pixels carries an overlay.
COLOUR_FRACTION = 0.01
#: Coloured areas smaller than this (pixels) are annotations (markers, cursors), not overlays.
MIN_OVERLAY_PIXELS = 400


def overlay_box(
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


def snap_to_outline(frame: NDArray[np.floating], box: PixelBox) -> PixelBox:
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
