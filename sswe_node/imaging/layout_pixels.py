"""Layout from pixel analysis alone: the coloured box, its copy in the plain panel, the tissue."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from sswe_node.errors import UnsupportedLayoutError
from sswe_node.imaging.boxes import PixelBox
from sswe_node.imaging.colour_bar import grey_levels
from sswe_node.imaging.frame_layout import FrameLayout, Layout
from sswe_node.imaging.overlay import overlay_box, snap_to_outline
from sswe_node.imaging.registration import panel_shift

__all__ = ["from_pixels", "tissue_box"]


def from_pixels(
    frame: NDArray[np.floating],
    mask: NDArray[np.bool_],
    bar: PixelBox | None,
    spacing: tuple[float, float] | None,
) -> FrameLayout:
    """Return the layout of a frame whose regions did not settle it, from its pixels.

    Raises
    ------
    UnsupportedLayoutError
        A colour overlay without a colour bar or without a plain panel showing the same tissue.
    """
    shape = frame.shape[:2]
    grey = grey_levels(frame)
    whole = PixelBox(0, 0, shape[0], shape[1])
    overlay = overlay_box(mask, whole, frame)
    if overlay is None:
        roi = tissue_box(grey, bar, mask=mask)
        return FrameLayout(Layout.BMODE, roi, roi, spacing_mm=spacing)
    if bar is None:
        raise UnsupportedLayoutError(
            "the image has a colour overlay but no elastography colour bar (a strip sweeping "
            "through a colour table): colour Doppler is not processed"
        )
    shift = panel_shift(grey, mask, overlay, bar)
    if shift is None:
        raise UnsupportedLayoutError(
            "the image has a colour overlay but no plain B-mode panel showing the same tissue "
            "(colour Doppler or single-view elastography); only dual SWE captures are processed"
        )
    overlay = snap_to_outline(frame, overlay)
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
    o_panel = tissue_box(grey[side.slices], None, open_size=1).shifted(side.top, side.left)
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


def tissue_box(
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
