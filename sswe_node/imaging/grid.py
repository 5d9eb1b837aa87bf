"""Regrid between source pixels and the model grid (bilinear, in physical units).

The region of interest is mapped onto the grid edge to edge, as in the paper (600 x 400 source
pixels onto 96 x 64): each grid cell covers ``roi extent / grid size`` millimetres, and pixel
centres are placed at their physical positions, so anisotropic source pixels are handled.
Output sample ``o`` of an axis reads the input at ``(o + 0.5) * n_in / n_out - 0.5``, clamped
to the edge pixels, with no anti-aliasing: the same samples as scikit-image ``resize`` with
``order=1, mode="edge", anti_aliasing=False``, computed separably in float32 (equal to it
within float32 rounding, several times faster). NaN or infinite (void) values are interpolated
from their valid neighbours only and stay NaN where no valid neighbour contributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

__all__ = ["to_grid", "from_grid", "from_grid_masked", "MaskedRegrid", "grid_spacing_mm"]

#: Elements per block of the interpolation passes: the block and its scratch stay in cache,
#: and no full-size temporaries are allocated.
_BLOCK = 1 << 15
#: A gather across columns costs about this many row-copied elements (measured, 600x900).
_COLUMN_GATHER_COST = 3


@lru_cache(maxsize=128)
def _taps(n_in: int, n_out: int) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float32]]:
    """Return the lower and upper input index and the weight of the upper one, per output."""
    position = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    np.clip(position, 0.0, n_in - 1, out=position)
    lower = np.floor(position).astype(np.intp)
    upper = np.minimum(lower + 1, n_in - 1)
    weight = (position - lower).astype(np.float32)
    for array in (lower, upper, weight):
        array.flags.writeable = False
    return lower, upper, weight


def _rows(array: NDArray[np.float32], n_out: int) -> NDArray[np.float32]:
    """Interpolate along axis 0: ``out[i] = a[lo] + w * (a[hi] - a[lo])``, block by block."""
    lower, upper, weight = _taps(array.shape[0], n_out)
    cols = array.shape[1]
    out = np.empty((n_out, cols), dtype=np.float32)
    step = max(1, _BLOCK // cols)
    scratch = np.empty((min(step, n_out), cols), dtype=np.float32)
    for start in range(0, n_out, step):
        stop = min(start + step, n_out)
        block, high = out[start:stop], scratch[: stop - start]
        np.take(array, lower[start:stop], axis=0, out=block, mode="clip")
        np.take(array, upper[start:stop], axis=0, out=high, mode="clip")
        high -= block
        high *= weight[start:stop, None]
        block += high
    return out


def _columns(array: NDArray[np.float32], n_out: int) -> NDArray[np.float32]:
    """Interpolate along axis 1, a block of rows at a time."""
    lower, upper, weight = _taps(array.shape[1], n_out)
    rows = array.shape[0]
    out = np.empty((rows, n_out), dtype=np.float32)
    step = max(1, _BLOCK // n_out)
    scratch = np.empty((min(step, rows), n_out), dtype=np.float32)
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        block, high = out[start:stop], scratch[: stop - start]
        np.take(array[start:stop], lower, axis=1, out=block, mode="clip")
        np.take(array[start:stop], upper, axis=1, out=high, mode="clip")
        high -= block
        high *= weight
        block += high
    return out


def _columns_first(size: tuple[int, int], shape: tuple[int, int]) -> bool:
    """Whether regridding ``size`` to ``shape`` is cheaper interpolating columns first."""
    (h, w), (rows, cols) = size, shape
    columns_first = _COLUMN_GATHER_COST * h * cols + rows * cols
    rows_first = rows * w + _COLUMN_GATHER_COST * rows * cols
    return columns_first <= rows_first


def _separable(array: NDArray[np.float32], shape: tuple[int, int]) -> NDArray[np.float32]:
    """Bilinear resampling of a finite array, the cheaper axis order first."""
    rows, cols = shape
    if _columns_first(array.shape, shape):
        return _rows(_columns(array, cols), rows)
    return _columns(_rows(array, rows), cols)


def _bilinear(array: NDArray[np.float32], shape: tuple[int, int]) -> NDArray[np.float32]:
    if min(shape) < 1:
        raise ValueError(f"expected a positive output shape, got {shape}")
    valid = np.isfinite(array)
    if valid.all():
        return _separable(array, shape)
    num = _separable(np.where(valid, array, np.float32(0.0)), shape)
    den = _separable(valid.astype(np.float32), shape)
    # In place: fresh full-size arrays cost page faults comparable to the arithmetic.
    den[den <= 0.5] = np.nan
    num /= den
    return num


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


def touched_cells(mask: NDArray[np.bool_], grid: tuple[int, int] = (96, 64)) -> NDArray[np.bool_]:
    """Return the grid cells whose :func:`to_grid` value any ``True`` source pixel enters.

    The same taps as the bilinear regridding, gathered on booleans: exact, and much cheaper
    than regridding the mask as floats.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(h, w)`` boolean source-pixel mask.
    grid : tuple of int
        ``(rows, cols)`` of the model grid.

    Returns
    -------
    numpy.ndarray
        ``grid``-shaped boolean.
    """
    mask = np.asarray(mask, dtype=bool)
    low_r, high_r, _ = _taps(mask.shape[0], int(grid[0]))
    low_c, high_c, _ = _taps(mask.shape[1], int(grid[1]))
    rows = mask[low_r] | mask[high_r]
    return rows[:, low_c] | rows[:, high_c]


def from_grid(array: NDArray[np.floating], shape: tuple[int, int]) -> NDArray[np.float32]:
    """Bring a model-grid array back to source pixels (e.g. for an overlay).

    Parameters
    ----------
    array : numpy.ndarray
        ``(rows, cols)`` values on the model grid (NaN allowed, as in `to_grid`).
    shape : tuple of int
        ``(h, w)`` of the region of interest in source pixels.

    Returns
    -------
    numpy.ndarray
        ``shape`` float32.

    Examples
    --------
    >>> import numpy as np
    >>> from_grid(np.ones((96, 64)), (600, 900)).shape
    (600, 900)
    """
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 2 or min(array.shape) < 1:
        raise ValueError(f"expected a non-empty 2-D array, got shape {array.shape}")
    return _bilinear(array, (int(shape[0]), int(shape[1])))


def _first_pass(
    array: NDArray[np.float32], shape: tuple[int, int], columns_first: bool
) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
    """Return the cheap first pass of `_bilinear`, compiled.

    Of the array (and None) when it is finite, else of its valid part and of the valid-cell
    weights.
    """
    from sswe_node.imaging.grid_kernels import first_pass

    (h, w), (rows, cols) = array.shape, shape
    taps = _taps(w, cols) if columns_first else _taps(h, rows)
    size = (h, cols) if columns_first else (rows, w)

    def interpolated(a: NDArray[np.float32]) -> NDArray[np.float32]:
        out = np.empty(size, dtype=np.float32)
        first_pass(np.ascontiguousarray(a), *taps, not columns_first, out)
        return out

    valid = np.isfinite(array)
    if valid.all():
        return interpolated(array), None
    zeroed = np.where(valid, array, np.float32(0.0))
    return interpolated(zeroed), interpolated(valid.astype(np.float32))


class MaskedRegrid(NamedTuple):
    """What :func:`from_grid_masked` returns."""

    #: ``shape`` float32: the values, NaN outside.
    values: NDArray[np.float32]
    #: ``shape`` float32: the sd, clamped at 0, NaN where the value is NaN (None: no sd).
    sd: NDArray[np.float32] | None
    #: ``(least, greatest)`` value, NaN ignored (NaN, NaN when all are): ``np.fmin.reduce``
    #: and ``np.fmax.reduce``'s (a zero extreme of either sign).
    value_range: tuple[float, float]
    #: The same of the sd (None: no sd).
    sd_range: tuple[float, float] | None


def from_grid_masked(
    values: NDArray[np.floating],
    sd: NDArray[np.floating] | None,
    shape: tuple[int, int],
    *,
    outside: NDArray[np.bool_] | None = None,
    out: Sequence[NDArray[np.float32]] | None = None,
) -> MaskedRegrid:
    """Bring a prediction and its standard deviation back to source pixels, masked, at once.

    The same values as ::

        v = from_grid(values, shape)
        void = isnan(v) if values has non-finite cells else no pixel
        v[outside] = nan; void |= outside
        s = np.maximum(from_grid(sd, shape), 0); s[void] = nan

    bit for bit, but the large second pass of both regriddings and the masks are one
    compiled pass (:mod:`sswe_node.imaging.grid_kernels`) writing each output value once,
    which also finds each output's value range (as a map's value mapping needs).

    Parameters
    ----------
    values, sd : numpy.ndarray
        ``(rows, cols)`` on the model grid (NaN allowed); ``sd`` may be None.
    shape : tuple of int
        ``(h, w)`` of the region of interest in source pixels.
    outside : numpy.ndarray, optional
        ``shape`` boolean: pixels that are not tissue (NaN values, NaN sd).
    out : sequence of numpy.ndarray, optional
        C-contiguous float32 ``shape`` arrays to write the values (and the sd) into.

    Returns
    -------
    MaskedRegrid
        ``(values, sd, value_range, sd_range)``.
    """
    from sswe_node.imaging.grid_kernels import second_pass  # numba: imported when first used

    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or min(values.shape) < 1:
        raise ValueError(f"expected a non-empty 2-D array, got shape {values.shape}")
    shape = (int(shape[0]), int(shape[1]))
    if min(shape) < 1:
        raise ValueError(f"expected a positive output shape, got {shape}")
    if sd is not None:
        sd = np.asarray(sd, dtype=np.float32)
        if sd.shape != values.shape:
            raise ValueError(f"sd {sd.shape} and values {values.shape} differ")
    if outside is not None:
        outside = np.ascontiguousarray(outside, dtype=bool)
        if outside.shape != shape:
            raise ValueError(f"outside {outside.shape} is not of shape {shape}")
    count = 1 if sd is None else 2
    if out is None:
        out = [np.empty(shape, dtype=np.float32) for _ in range(count)]
    if len(out) != count or any(
        o.shape != shape or o.dtype != np.float32 or not o.flags.c_contiguous
        or not o.flags.writeable for o in out
    ):  # fmt: skip
        raise ValueError(f"out must be {count} writable C-contiguous float32 arrays of {shape}")
    columns_first = _columns_first(values.shape, shape)
    if columns_first:  # then along the rows, over the intermediate's rows
        lower, upper, weight = _taps(values.shape[0], shape[0])
    else:
        lower, upper, weight = _taps(values.shape[1], shape[1])
    v_num, v_den = _first_pass(values, shape, columns_first)
    s_num, s_den = (None, None) if sd is None else _first_pass(sd, shape, columns_first)
    out_sd = None if sd is None else out[1]
    value_range, sd_range = second_pass(
        v_num, v_den, s_num, s_den, lower, upper, weight, columns_first, outside, out[0], out_sd
    )
    return MaskedRegrid(out[0], out_sd, value_range, None if sd is None else sd_range)


def grid_spacing_mm(
    shape: tuple[int, int],
    spacing_mm: tuple[float, float] | None,
    grid: tuple[int, int] = (96, 64),
) -> tuple[float, float] | None:
    """Physical ``(row, column)`` size of a grid cell for a ``shape`` ROI with ``spacing_mm``."""
    if spacing_mm is None:
        return None
    return (shape[0] * spacing_mm[0] / grid[0], shape[1] * spacing_mm[1] / grid[1])
