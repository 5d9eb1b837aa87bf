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

import logging

import numpy as np
from numpy.typing import NDArray

from sswe_node.errors import UnsupportedLayoutError
from sswe_node.imaging.boxes import PixelBox
from sswe_node.imaging.colour_bar import (
    along_bar,
    chroma,
    colour_mask,
    find_colour_bar,
    grey_levels,
)
from sswe_node.imaging.frame_layout import FrameLayout, Layout
from sswe_node.imaging.layout_pixels import from_pixels
from sswe_node.imaging.layout_regions import from_flow_region, from_regions
from sswe_node.imaging.overlay import overlay_box
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

# M-mode and spectral regions show time, not tissue: never processed.
_TIME_FORMATS = (SPATIAL_M_MODE, SPATIAL_SPECTRAL)


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
        return from_flow_region(flow[0], tissue, frame, bar, shape)
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
        layout = from_regions(tissue, frame, mask, bar, shape)
        if layout is not None:
            return layout
    elif len(tissue) == 1 and overlay_box(mask, tissue[0].box, frame) is None:
        panel = tissue[0].box.clipped(shape)
        return FrameLayout(
            Layout.BMODE, panel, panel, spacing_mm=tissue[0].spacing_mm, source="regions"
        )
    spacing = tissue[0].spacing_mm if tissue else pixel_spacing_mm
    return from_pixels(frame, mask, bar, spacing)


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
