"""Pixel rectangles: the one box type of the reading core and the simulator."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PixelBox"]


@dataclass(frozen=True)
class PixelBox:
    """A rectangle of pixels; ``bottom`` and ``right`` are exclusive."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        """Rows in the box."""
        return self.bottom - self.top

    @property
    def width(self) -> int:
        """Columns in the box."""
        return self.right - self.left

    @property
    def area(self) -> int:
        """Pixels in the box (0 when empty)."""
        return max(0, self.height) * max(0, self.width)

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices to index an array with."""
        return slice(self.top, self.bottom), slice(self.left, self.right)

    def shifted(self, rows: int, cols: int) -> PixelBox:
        """Return the box moved by ``rows`` down and ``cols`` right."""
        return PixelBox(self.top + rows, self.left + cols, self.bottom + rows, self.right + cols)

    def clipped(self, shape: tuple[int, ...]) -> PixelBox:
        """Return the part of the box inside an image of ``shape``."""
        return PixelBox(
            max(0, self.top),
            max(0, self.left),
            min(shape[0], self.bottom),
            min(shape[1], self.right),
        )

    def inside(self, shape: tuple[int, ...]) -> bool:
        """Whether the whole box lies inside an image of ``shape``."""
        return (
            self.top >= 0 and self.left >= 0 and self.bottom <= shape[0] and self.right <= shape[1]
        )

    def expanded(self, margin: int) -> PixelBox:
        """Return the box grown by ``margin`` pixels on every side."""
        return PixelBox(
            self.top - margin, self.left - margin, self.bottom + margin, self.right + margin
        )

    def as_list(self) -> list[int]:
        """Return ``[top, left, bottom, right]`` (e.g. for JSON)."""
        return [self.top, self.left, self.bottom, self.right]
