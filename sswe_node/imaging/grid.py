"""Regrid between source pixels and the model grid (bilinear, in physical units).

The region of interest is mapped onto the grid edge to edge, as in the paper (600 x 400 source
pixels onto 96 x 64): each grid cell covers ``roi extent / grid size`` millimetres, and pixel
centres are placed at their physical positions, so anisotropic source pixels are handled
(scikit-image ``resize`` with ``order=1``). NaN (void) values are interpolated from their valid
neighbours only and stay NaN where no valid neighbour contributes.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from skimage.transform import resize

__all__ = ["to_grid", "from_grid", "grid_spacing_mm"]


def _bilinear(array: NDArray[np.floating], shape: tuple[int, int]) -> NDArray[np.float32]:
    if np.isnan(array).any():
        valid = np.isfinite(array)
        filled = np.where(valid, array, 0.0)
        num = resize(filled, shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True)
        den = resize(
            valid.astype(np.float32), shape, order=1, mode="edge", anti_aliasing=False,
            preserve_range=True,
        )  # fmt: skip
        out = np.full(shape, np.nan, dtype=np.float32)
        ok = den > 0.5
        out[ok] = num[ok] / den[ok]
        return out
    out = resize(array, shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True)
    return out.astype(np.float32, copy=False)


def to_grid(array: NDArray[np.floating], grid: tuple[int, int] = (96, 64)) -> NDArray[np.float32]:
    """Regrid a source-pixel array onto the model grid.

    Parameters
    ----------
    array : numpy.ndarray
        ``(h, w)`` values in source pixels (NaN allowed).
    grid : tuple of int
        ``(rows, cols)`` of the model grid.

    Returns
    -------
    numpy.ndarray
        ``grid``-shaped float32; a grid cell is NaN when less than half of its interpolation
        weight falls on valid pixels.

    Examples
    --------
    >>> import numpy as np
    >>> to_grid(np.ones((600, 400)), (96, 64)).shape
    (96, 64)
    """
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 2 or min(array.shape) < 1:
        raise ValueError(f"expected a non-empty 2-D array, got shape {array.shape}")
    return _bilinear(array, (int(grid[0]), int(grid[1])))


def from_grid(array: NDArray[np.floating], shape: tuple[int, int]) -> NDArray[np.float32]:
    """Bring a model-grid array back to source pixels (e.g. for an overlay).

    Parameters
    ----------
    array : numpy.ndarray
        ``(rows, cols)`` values on the model grid.
    shape : tuple of int
        ``(h, w)`` of the region of interest in source pixels.

    Returns
    -------
    numpy.ndarray
        ``shape`` float32.
    """
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {array.shape}")
    return _bilinear(array, (int(shape[0]), int(shape[1])))


def grid_spacing_mm(
    shape: tuple[int, int],
    spacing_mm: tuple[float, float] | None,
    grid: tuple[int, int] = (96, 64),
) -> tuple[float, float] | None:
    """Physical ``(row, column)`` size of a grid cell for a ``shape`` ROI with ``spacing_mm``."""
    if spacing_mm is None:
        return None
    return (shape[0] * spacing_mm[0] / grid[0], shape[1] * spacing_mm[1] / grid[1])
