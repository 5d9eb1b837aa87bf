"""Physical pixel spacing of ultrasound sources and the plane geometry given to derived maps.

Ultrasound images rarely have a Frame of Reference or plane geometry. The Parametric Map is
placed in a Frame of Reference derived from the source instance: an axial plane at the origin
(rows along x, columns along y) with the spacing of the ultrasound region, the map's first pixel
at the region of interest's top-left corner. The source itself is never changed.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from pydicom.dataset import Dataset

from sswe_node.imaging.regions import SPATIAL_2D, UNITS_CM

__all__ = [
    "Box",
    "ROW_DIRECTION",
    "COLUMN_DIRECTION",
    "region_spacing_mm",
    "source_spacing_mm",
    "roi_position_mm",
    "is_multiframe",
]

logger = logging.getLogger(__name__)

#: Image Orientation (Patient) given to ultrasound sources: rows along x, columns along y.
ROW_DIRECTION = (1.0, 0.0, 0.0)
COLUMN_DIRECTION = (0.0, 1.0, 0.0)

_MULTI_FRAME_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
        "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image Storage (retired)
        "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture
    }
)


def is_multiframe(source: Dataset) -> bool:
    """Return whether the source's IOD is multi-frame (frames are then referenced by number)."""
    return str(source.get("SOPClassUID", "")) in _MULTI_FRAME_CLASSES or "NumberOfFrames" in source


class Box(NamedTuple):
    """A rectangle of source pixels, end exclusive."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the box."""
        return (self.bottom - self.top, self.right - self.left)


def region_spacing_mm(source: Dataset, box: Box | None = None) -> tuple[float, float] | None:
    """Return the (row, column) pixel spacing in mm from the Sequence of Ultrasound Regions.

    Parameters
    ----------
    source : pydicom.dataset.Dataset
        The ultrasound instance.
    box : Box, optional
        The pixels of interest; the 2D region in cm that overlaps it most is used. Without it,
        the largest such region.

    Returns
    -------
    tuple of float or None
        ``(row, column)`` spacing, or None when no 2D region in cm is usable.
    """
    best: tuple[int, tuple[float, float]] | None = None
    for region in source.get("SequenceOfUltrasoundRegions", None) or []:
        try:
            if int(region.get("RegionSpatialFormat", 0)) != SPATIAL_2D:
                continue
            if int(region.PhysicalUnitsXDirection) != UNITS_CM:
                continue
            if int(region.PhysicalUnitsYDirection) != UNITS_CM:
                continue
            dx, dy = abs(float(region.PhysicalDeltaX)), abs(float(region.PhysicalDeltaY))
            x0, y0 = int(region.RegionLocationMinX0), int(region.RegionLocationMinY0)
            x1, y1 = int(region.RegionLocationMaxX1), int(region.RegionLocationMaxY1)
        except (AttributeError, TypeError, ValueError):
            continue
        if not (dx > 0 and dy > 0):
            continue
        if box is None:
            score = (x1 - x0 + 1) * (y1 - y0 + 1)
        else:
            rows = min(box.bottom, y1 + 1) - max(box.top, y0)
            cols = min(box.right, x1 + 1) - max(box.left, x0)
            score = max(rows, 0) * max(cols, 0)
        if score > 0 and (best is None or score > best[0]):
            best = (score, (dy * 10.0, dx * 10.0))
    return None if best is None else best[1]


def source_spacing_mm(source: Dataset, box: Box | None = None) -> tuple[float, float] | None:
    """Return the source's (row, column) pixel spacing in mm, from whatever attribute has it.

    Ultrasound regions first, then Pixel Spacing, then Imager Pixel Spacing.
    """
    spacing = region_spacing_mm(source, box)
    if spacing is not None:
        return spacing
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = source.get(keyword, None)
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if row > 0 and col > 0:
            return (row, col)
    return None


def roi_position_mm(box: Box, spacing_mm: tuple[float, float]) -> tuple[float, float, float]:
    """Return the Image Position (Patient) of the box's first pixel in the given geometry."""
    return (box.left * spacing_mm[1], box.top * spacing_mm[0], 0.0)
