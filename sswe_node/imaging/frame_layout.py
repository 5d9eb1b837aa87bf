"""The result of layout analysis: what kind of frame it is and where its parts are."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sswe_node.imaging.boxes import PixelBox

__all__ = ["Layout", "FrameLayout"]


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
