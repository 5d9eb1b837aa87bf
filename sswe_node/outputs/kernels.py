"""Compiled single-pass kernels of the output builders (numba): the capture's picture, map frames.

:func:`compose_capture` fuses what the numpy code of :mod:`sswe_node.outputs.render` did in
several full-size passes (grey levels, colour index, uncertainty threshold, hatching, blend
table look-up, copies into the canvas) into one pass that writes each output byte once;
:func:`copy_range` copies a map's frame into its pixel data and finds its value range in the
same pass. Results are bit-identical to the numpy code (tests/test_outputs_kernels.py
compares both on random inputs): the same float32 operations, rounding ties to even,
without fast-math.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from sswe_node.compiled import kernel

__all__ = ["compose_capture", "copy_range"]


#: Adding and subtracting 2**23 rounds a float32 in 0 .. 2**22 to an integer, ties to even
#: (what ``np.rint`` does), without a call: the loops below then vectorise.
_ROUND = np.float32(2**23)


@kernel()
def _row_codes(
    bmode: NDArray[np.float32],
    values: NDArray[np.float32],
    uncertain: NDArray,
    threshold: np.float32,
    hatch: NDArray[np.int32],
    n: int,
    low: np.float32,
    step: np.float32,
    grey: NDArray[np.int32],
    code: NDArray[np.int32],
) -> None:
    """Grey level and blend-table row of each pixel of one region row (``render._overlay``).

    ``hatch[x]`` is 1 where pixel ``x`` of the row is on a hatching line; ``uncertain`` is
    empty for none. Branch-free, so that it vectorises.
    """
    zero, full = np.float32(0), np.float32(255)
    last = np.float32(n - 1)
    has_uncertain = uncertain.shape[0] > 0
    for x in range(bmode.shape[0]):
        b = bmode[x]
        b = b if b > zero else zero  # fmax(b, 0): NaN is 0
        b = b if b < full else full
        level = np.int32((b + _ROUND) - _ROUND)
        index = (values[x] - low) * step
        withheld = np.int32(index - index != zero)  # NaN or infinite
        clamped = index if index > zero else zero
        clamped = clamped if clamped < last else last
        rounded = np.int32((clamped + _ROUND) - _ROUND)
        hatched = np.int32(0)
        if has_uncertain:
            above = np.int32(uncertain[x] > threshold)
            withheld |= above
            hatched = above & hatch[x]
        # Withheld: column n (plain grey), n + 1 where hatched; else the colour's entry.
        grey[x] = level
        code[x] = rounded + withheld * (n + hatched - rounded) + level * (n + 2)


@kernel()
def _write_row(out: NDArray[np.uint8], grey: NDArray[np.int32]) -> None:
    """Write one grey panel row (R = G = B = the level)."""
    for x in range(grey.shape[0]):
        level = np.uint8(grey[x])
        out[3 * x] = level
        out[3 * x + 1] = level
        out[3 * x + 2] = level


@kernel()
def _write_row_colour(out: NDArray[np.uint8], code: NDArray[np.int32], table: NDArray) -> None:
    """Write one overlay panel row: the blend table's entry of each pixel."""
    for x in range(code.shape[0]):
        entry = 3 * code[x]
        out[3 * x] = table[entry]
        out[3 * x + 1] = table[entry + 1]
        out[3 * x + 2] = table[entry + 2]


@kernel()
def compose_capture(
    out: NDArray[np.uint8],
    bmode: NDArray[np.float32],
    values: NDArray[np.float32],
    uncertain: NDArray,
    threshold: np.float32,
    table: NDArray[np.uint8],
    n: int,
    low: np.float32,
    step: np.float32,
    top: int,
    x_grey: int,
    x_overlay: int,
    factor: int,
    hatch_period: int,
) -> None:
    """Write the grey panel and the overlay panel of a capture into ``out``.

    The frame around them (texts, colour bar) is copied by the caller: numpy's copy is a
    memcpy, a numba loop over bytes is not (eight times slower).

    Parameters
    ----------
    out : numpy.ndarray
        ``(height, width, 3)`` uint8 C-contiguous: the panels' bytes are written.
    bmode, values : numpy.ndarray
        ``(rows, columns)`` float32 source region: grey level, value to colour.
    uncertain : numpy.ndarray
        ``(rows, columns)``: a pixel is uncertain (colour withheld, hatched) where it is above
        ``threshold`` (the standard deviation, or a mask as uint8 with threshold 0); an empty
        ``(0, 0)`` array for none.
    threshold : numpy.float32 or numpy.uint8
        See ``uncertain``.
    table : numpy.ndarray
        ``(256 * (n + 2), 3)`` blend table of ``render._blend_table``.
    n : int
        Entries of the colour table.
    low, step : numpy.float32
        Colour index = ``(value - low) * step``, clamped to ``0 .. n - 1`` and rounded.
    top, x_grey, x_overlay : int
        First canvas row of the panels, first column of the grey and the overlay panel.
    factor : int
        Whole-pixel enlargement of the region (1: none).
    hatch_period : int
        A hatching line where ``(row + column) % hatch_period == 0`` (source pixels).
    """
    height, width = out.shape[0], out.shape[1]
    rows, cols = bmode.shape
    flat_out = out.reshape(height * width * 3)
    flat_table = table.reshape(table.shape[0] * 3)
    row_bytes = width * 3
    hatch = np.zeros(cols + hatch_period, dtype=np.int32)
    for x in range(0, cols + hatch_period, hatch_period):
        hatch[x] = 1
    grey = np.empty(cols, dtype=np.int32)
    code = np.empty(cols, dtype=np.int32)
    has_uncertain = uncertain.shape[0] > 0
    none = np.zeros(0, dtype=uncertain.dtype)
    for sy in range(rows):
        phase = sy % hatch_period  # hatch[phase + x] == 1 where (sy + x) % period == 0
        row_uncertain = uncertain[sy] if has_uncertain else none
        _row_codes(
            bmode[sy], values[sy], row_uncertain, threshold, hatch[phase:], n, low, step,
            grey, code,
        )  # fmt: skip
        for dy in range(factor):
            base = (top + sy * factor + dy) * row_bytes
            at_grey = base + x_grey * 3
            at_overlay = base + x_overlay * 3
            if factor == 1:  # separate loops of plain indices: much faster than one
                _write_row(flat_out[at_grey : at_grey + 3 * cols], grey)
                _write_row_colour(flat_out[at_overlay : at_overlay + 3 * cols], code, flat_table)
                continue
            for sx in range(cols):
                level = np.uint8(grey[sx])
                entry = code[sx] * 3
                red = flat_table[entry]
                green = flat_table[entry + 1]
                blue = flat_table[entry + 2]
                for _ in range(factor):
                    flat_out[at_grey] = level
                    flat_out[at_grey + 1] = level
                    flat_out[at_grey + 2] = level
                    flat_out[at_overlay] = red
                    flat_out[at_overlay + 1] = green
                    flat_out[at_overlay + 2] = blue
                    at_grey += 3
                    at_overlay += 3


@kernel()
def copy_range(values: NDArray[np.float32], out: NDArray[np.float32]) -> tuple[float, float]:
    """Copy ``values`` (flat) into ``out`` and return their least and greatest value.

    NaN is ignored (both NaN when every value is NaN), infinities are kept: the values of
    ``np.fmin.reduce`` and ``np.fmax.reduce`` (of a zero extreme, either sign). One pass
    instead of numpy's three (two reductions and the copy); eight independent lanes, as a
    float reduction does not vectorise without fast-math (which would drop NaN handling).
    """
    n = values.shape[0]
    if out.shape[0] != n:
        raise ValueError("out and values differ in size")
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(np.inf)  # least, per lane
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = np.float32(-np.inf)  # greatest
    for i in range(0, n - n % 8, 8):
        v0, v1, v2, v3 = values[i], values[i + 1], values[i + 2], values[i + 3]
        v4, v5, v6, v7 = values[i + 4], values[i + 5], values[i + 6], values[i + 7]
        out[i], out[i + 1], out[i + 2], out[i + 3] = v0, v1, v2, v3
        out[i + 4], out[i + 5], out[i + 6], out[i + 7] = v4, v5, v6, v7
        # "v < a" is false for NaN: a NaN never becomes an extreme.
        a0, a1 = (v0 if v0 < a0 else a0), (v1 if v1 < a1 else a1)
        a2, a3 = (v2 if v2 < a2 else a2), (v3 if v3 < a3 else a3)
        a4, a5 = (v4 if v4 < a4 else a4), (v5 if v5 < a5 else a5)
        a6, a7 = (v6 if v6 < a6 else a6), (v7 if v7 < a7 else a7)
        b0, b1 = (v0 if v0 > b0 else b0), (v1 if v1 > b1 else b1)
        b2, b3 = (v2 if v2 > b2 else b2), (v3 if v3 > b3 else b3)
        b4, b5 = (v4 if v4 > b4 else b4), (v5 if v5 > b5 else b5)
        b6, b7 = (v6 if v6 > b6 else b6), (v7 if v7 > b7 else b7)
    smallest = min(min(min(a0, a1), min(a2, a3)), min(min(a4, a5), min(a6, a7)))
    largest = max(max(max(b0, b1), max(b2, b3)), max(max(b4, b5), max(b6, b7)))
    for i in range(n - n % 8, n):
        value = values[i]
        out[i] = value
        smallest = value if value < smallest else smallest
        largest = value if value > largest else largest
    if smallest > largest:  # no value but NaN (an infinity alone is both extremes)
        return np.nan, np.nan
    return float(smallest), float(largest)
