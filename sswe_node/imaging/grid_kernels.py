"""Compiled passes of :func:`sswe_node.imaging.grid.from_grid_masked` (numba).

Bringing a prediction and its standard deviation back to a large region of interest is, per
output pixel, two bilinear taps of a small intermediate (the first pass of the separable
regridding, :func:`first_pass`, on the model grid) and a few masks. The numpy code made
about a dozen full-size passes (two regriddings of four passes each, the fan mask, the clamp
of the sd, the NaN search, the masked assignments); :func:`second_pass` writes each output
value once. Both do the same float32 operations in the same order as
:mod:`sswe_node.imaging.grid` (``lo + (hi - lo) * w``; ``num / den`` with ``den <= 0.5`` made
NaN), without fast-math, so the results are bit-identical (tests/test_imaging_grid.py
compares them with the numpy code on random inputs, NaN payloads included). Every index is
checked before the loops (an index out of bounds in compiled code is not caught there).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from sswe_node.compiled import kernel

__all__ = ["first_pass", "second_pass"]

_NAN = np.float32(np.nan)
_ZERO = np.float32(0.0)
_HALF = np.float32(0.5)


@kernel(inline="always")
def _tap(lo: np.float32, hi: np.float32, w: np.float32) -> np.float32:
    return lo + (hi - lo) * w  # grid._rows / grid._columns: high -= block; *= w; block += high


@kernel(inline="always")
def _ratio(num: np.float32, den: np.float32) -> np.float32:
    if den <= _HALF:  # grid._bilinear: den[den <= 0.5] = nan; num /= den
        den = _NAN
    return num / den


@kernel(inline="always")
def _clamp(s: np.float32) -> np.float32:
    # np.maximum(s, 0): NaN kept, -0.0 and negatives become +0.0.
    return s if (s > _ZERO or s != s) else _ZERO


@kernel(inline="always")
def _extremes(ext: NDArray[np.float32], k: int, c: int, x: np.float32) -> None:
    """Keep ``x`` in column ``c``'s least (row ``k``) and greatest (``k + 1``); NaN never."""
    low, high = ext[k, c], ext[k + 1, c]
    ext[k, c] = x if x < low else low
    ext[k + 1, c] = x if x > high else high


@kernel()
def _range(low: NDArray[np.float32], high: NDArray[np.float32]) -> tuple[float, float]:
    """Return the least of ``low`` and the greatest of ``high``; NaN, NaN when there is none."""
    smallest, largest = np.float32(np.inf), np.float32(-np.inf)
    for c in range(low.shape[0]):
        smallest = low[c] if low[c] < smallest else smallest
        largest = high[c] if high[c] > largest else largest
    if smallest > largest:  # no value but NaN (an infinity alone is both extremes)
        return np.nan, np.nan
    return float(smallest), float(largest)


@kernel(inline="always")
def _part(array: NDArray[np.float32] | None, index: int) -> NDArray[np.float32] | None:
    """Row ``index`` of ``array``; None for None (compiled apart: the branches on it go)."""
    if array is None:
        return None
    return array[index]


@kernel()
def _row(vl, vh, dl, dh, sl, sh, tl, th, w, o, ov, os, ext):  # noqa: ANN001, ANN202
    """One output row along the rows: each pixel from the same column of two input rows.

    An input that is None (no denominator, sd or mask) is one this specialisation lacks.
    ``ext`` (None: not kept) holds per column the least and greatest value and sd so far
    (NaN ignored): a running extreme per column vectorises, a reduction over the row would
    not (without fast-math).
    """
    for c in range(ov.shape[0]):
        v = _tap(vl[c], vh[c], w)
        void = False
        if dl is not None:
            v = _ratio(v, _tap(dl[c], dh[c], w))
            void = v != v
        if o is not None:
            if o[c]:
                v = _NAN
                void = True
        ov[c] = v
        if ext is not None:
            _extremes(ext, 0, c, v)
        if sl is not None:
            s = _tap(sl[c], sh[c], w)
            if tl is not None:
                s = _ratio(s, _tap(tl[c], th[c], w))
            s = _NAN if void else _clamp(s)
            os[c] = s
            if ext is not None:
                _extremes(ext, 2, c, s)


@kernel()
def _gathered_row(vr, dr, sr, tr, lower, upper, weight, o, ov, os, ext):  # noqa: ANN001, ANN202
    """One output row along the columns: each pixel from two columns of one input row.

    The same body as :func:`_row`, spelled out again on purpose: a per-pixel helper taking
    the rows as arguments (inlined or not) made :func:`second_pass` 30-40x slower (1.3 ->
    41 ms for a 600 x 900 region with a mask; measured in the fifth round).
    """
    for c in range(ov.shape[0]):
        lo, hi, w = lower[c], upper[c], weight[c]
        v = _tap(vr[lo], vr[hi], w)
        void = False
        if dr is not None:
            v = _ratio(v, _tap(dr[lo], dr[hi], w))
            void = v != v
        if o is not None:
            if o[c]:
                v = _NAN
                void = True
        ov[c] = v
        if ext is not None:
            _extremes(ext, 0, c, v)
        if sr is not None:
            s = _tap(sr[lo], sr[hi], w)
            if tr is not None:
                s = _ratio(s, _tap(tr[lo], tr[hi], w))
            s = _NAN if void else _clamp(s)
            os[c] = s
            if ext is not None:
                _extremes(ext, 2, c, s)


@kernel()
def _check_taps(lower, upper, weight, n_taps, inner):  # noqa: ANN001, ANN202
    if lower.shape[0] != n_taps or upper.shape[0] != n_taps or weight.shape[0] != n_taps:
        raise ValueError("taps and output shapes differ")
    for k in range(n_taps):
        if not (0 <= lower[k] < inner and 0 <= upper[k] < inner):
            raise ValueError("tap outside the input")


@kernel()
def first_pass(
    array: NDArray[np.float32],
    lower: NDArray[np.intp],
    upper: NDArray[np.intp],
    weight: NDArray[np.float32],
    along_rows: bool,
    out: NDArray[np.float32],
) -> None:
    """Interpolate ``array`` along one axis into ``out``.

    Along the rows (``along_rows``) as ``grid._rows``, else along the columns as
    ``grid._columns``: the same operations.
    """
    rows, cols = out.shape
    if along_rows:
        if cols != array.shape[1]:
            raise ValueError("input and output columns differ")
        _check_taps(lower, upper, weight, rows, array.shape[0])
        for r in range(rows):
            _row(
                array[lower[r]], array[upper[r]], None, None, None, None, None, None,
                weight[r], None, out[r], None, None,
            )  # fmt: skip
    else:
        if rows != array.shape[0]:
            raise ValueError("input and output rows differ")
        _check_taps(lower, upper, weight, cols, array.shape[1])
        # Output columns in runs of the same two input columns (an upsampling has ~n_out /
        # n_in per run): per run, hi - lo once, then a plain loop that vectorises, instead of
        # two gathers per output (the same operations: lo + (hi - lo) * w).
        starts = np.empty(cols + 1, dtype=np.intp)
        runs = 0
        for c in range(cols):
            if c == 0 or lower[c] != lower[c - 1] or upper[c] != upper[c - 1]:
                starts[runs] = c
                runs += 1
        starts[runs] = cols
        for r in range(rows):
            row, target = array[r], out[r]
            for k in range(runs):
                first, stop = starts[k], starts[k + 1]
                lo = row[lower[first]]
                step = row[upper[first]] - lo
                for c in range(first, stop):
                    target[c] = lo + step * weight[c]


@kernel()
def second_pass(
    v_num: NDArray[np.float32],
    v_den: NDArray[np.float32] | None,
    s_num: NDArray[np.float32] | None,
    s_den: NDArray[np.float32] | None,
    lower: NDArray[np.intp],
    upper: NDArray[np.intp],
    weight: NDArray[np.float32],
    along_rows: bool,
    outside: NDArray[np.bool_] | None,
    out_values: NDArray[np.float32],
    out_sd: NDArray[np.float32] | None,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Interpolate the intermediates along the second axis and mask, into the outputs.

    Parameters
    ----------
    v_num, v_den : numpy.ndarray
        The values' first pass: of the values (finite grid; ``v_den`` then None), or of
        the values with non-finite cells zeroed and of the valid-cell weights.
    s_num, s_den : numpy.ndarray
        The same of the sd (``s_num`` None: no sd).
    lower, upper, weight : numpy.ndarray
        The taps of the second axis (``grid._taps``): per output row when ``along_rows``,
        else per output column.
    along_rows : bool
        The first pass interpolated the columns; this one interpolates along the rows.
    outside : numpy.ndarray
        ``out_values``-shaped, True where the value is NaN (not tissue); None: nowhere.
    out_values, out_sd : numpy.ndarray
        C-contiguous float32 outputs (``out_sd`` None when there is no sd): the values,
        NaN outside; the sd clamped at 0, NaN where the value is NaN (a void cell's,
        searched only when ``v_den`` is given, or outside).

    Returns
    -------
    tuple
        ``((least, greatest) value, (least, greatest) sd)`` ignoring NaN (NaN, NaN when
        all are NaN or there is no sd): the values of ``np.fmin.reduce`` and
        ``np.fmax.reduce`` (of a zero extreme, either sign).

    Each combination of absent inputs is compiled apart (numba drops the branches on a None
    argument), so that every inner loop is a plain one.
    """
    rows, cols = out_values.shape
    # Every index below is checked here once: the loops then read without bounds checks.
    inner = v_num.shape[0] if along_rows else v_num.shape[1]
    other = v_num.shape[1] if along_rows else v_num.shape[0]
    if other != (cols if along_rows else rows):
        raise ValueError("intermediate and output shapes differ")
    _check_taps(lower, upper, weight, rows if along_rows else cols, inner)
    if v_den is not None:
        if v_den.shape != v_num.shape:
            raise ValueError("values' numerator and denominator differ")
    if s_num is not None:
        if out_sd is None or s_num.shape != v_num.shape or out_sd.shape != out_values.shape:
            raise ValueError("sd and values shapes differ")
        if s_den is not None:
            if s_den.shape != s_num.shape:
                raise ValueError("sd's numerator and denominator differ")
    elif s_den is not None:
        raise ValueError("an sd denominator without an sd")
    if outside is not None:
        if outside.shape != out_values.shape:
            raise ValueError("outside and output shapes differ")
    ext = np.empty((4, cols), dtype=np.float32)  # least and greatest value, sd, per column
    ext[0::2] = np.inf
    ext[1::2] = -np.inf
    for r in range(rows):
        o = _part(outside, r)
        os = _part(out_sd, r) if s_num is not None else None
        if along_rows:  # two rows of the intermediate, read in order: the loop vectorises
            lo, hi = lower[r], upper[r]
            _row(
                v_num[lo], v_num[hi], _part(v_den, lo), _part(v_den, hi), _part(s_num, lo),
                _part(s_num, hi), _part(s_den, lo), _part(s_den, hi), weight[r], o,
                out_values[r], os, ext,
            )  # fmt: skip
        else:
            _gathered_row(
                v_num[r], _part(v_den, r), _part(s_num, r), _part(s_den, r), lower, upper,
                weight, o, out_values[r], os, ext,
            )  # fmt: skip
    return _range(ext[0], ext[1]), _range(ext[2], ext[3])
