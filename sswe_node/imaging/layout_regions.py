"""Layout from the Sequence of Ultrasound Regions (PS3.3 C.8.5.5), checked against the pixels."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from sswe_node.errors import UnsupportedLayoutError
from sswe_node.imaging.boxes import PixelBox
from sswe_node.imaging.colour_bar import colour_mask
from sswe_node.imaging.frame_layout import FrameLayout, Layout
from sswe_node.imaging.overlay import (
    COLOUR_FRACTION,
    MIN_OVERLAY_PIXELS,
    overlay_box,
    snap_to_outline,
)
from sswe_node.imaging.regions import Region

__all__ = ["from_flow_region", "from_regions", "pair_panel"]


def pair_panel(boxes: list[PixelBox], o: int) -> int:
    """Index of the plain panel that pairs with panel ``o``: the same size (closest otherwise)."""
    plain = [i for i in range(len(boxes)) if i != o]
    return min(
        plain,
        key=lambda i: abs(boxes[i].height - boxes[o].height) + abs(boxes[i].width - boxes[o].width),
    )


def from_flow_region(
    flow: Region,
    tissue: list[Region],
    frame: NDArray[np.floating],
    bar: PixelBox | None,
    shape: tuple[int, ...],
) -> FrameLayout:
    """Return the dual layout of a frame declaring its SWE box as a colour flow region.

    Raises
    ------
    UnsupportedLayoutError
        No plain panel beside the box, no colour bar, or colour in both panels (Doppler).
    """
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
    p = pair_panel(boxes, o)
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


def from_regions(
    tissue: list[Region],
    frame: NDArray[np.floating],
    mask: NDArray[np.bool_],
    bar: PixelBox | None,
    shape: tuple[int, ...],
) -> FrameLayout | None:
    """Return the layout of a frame with two or more tissue regions; None if they do not pair.

    Raises
    ------
    UnsupportedLayoutError
        Colour in more than one panel, or an overlay without an elastography colour bar.
    """
    boxes = [r.box.clipped(shape) for r in tissue]
    overlays = [overlay_box(mask, b, frame) for b in boxes]
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
    p = pair_panel(boxes, o)
    assert overlays[o] is not None
    overlay_roi = snap_to_outline(frame, overlays[o]).clipped(shape)
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
