"""Compiled single-pass kernels of the burned-in mark finder and the model-input fill (numba).

Each kernel fuses what the numpy code of :mod:`sswe_node.imaging.marks` did in several passes
over a region and over its candidate pixels: the white-mark candidate test of an elastogram
with its thin-line test, the colour test of a grey panel with the growth of its marks, and
the structure finding (8-connected components, sizes, rows of characters, growth) on the
candidates, and the wedge finder's per-column ramp test (:func:`ramp_columns`). A row is
looked at only when a vectorised reduction over its bytes says it may hold a candidate; its
candidates are then flagged in one vectorised pass and read eight flags at a time (small
helpers are inlined: a call passing arrays costs reference counting).
Results are bit-identical to the numpy code they replace (tests/test_imaging_kernels.py
compares both on random inputs and on the simulator's captures): the same integer tests in
the same order. The model-input fill sums its squares at the masked cells alone
(:func:`fill_squares`), in numpy's pairwise float64 order.

Regions are read as rows of bytes: ``flat`` holds pixel ``(r, c)``'s R, G, B at
``r * stride + 3 * c`` (+ 1, + 2), found in the buffer of the frame a region is a view of
(:func:`byte_rows`), so that a row's bytes are one contiguous run (vectorised reductions).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from sswe_node.compiled import kernel

__all__ = [
    "byte_rows",
    "white_thin",
    "colour_marks_into",
    "structures_into",
    "fill_squares",
    "ramp_columns",
]


def byte_rows(pixels: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Return 8-bit RGB pixels with the buffer they lie in, for the kernels of this module.

    Parameters
    ----------
    pixels : numpy.ndarray
        ``(h, w, 3)`` uint8, e.g. a region of a frame (a view: not copied when each row is
        contiguous).

    Returns
    -------
    buffer : numpy.ndarray
        Read-only 1-D uint8 over the memory of the array ``pixels`` is a view of (its base).
    pixels : numpy.ndarray
        Read-only ``pixels`` (a contiguous copy when its rows were not contiguous); the
        kernels find its rows in ``buffer`` from its address and its row stride.
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected (h, w, 3) uint8 pixels, got {pixels.dtype} {pixels.shape}")
    if pixels.strides[1:] != (3, 1) or pixels.strides[0] < 3 * pixels.shape[1]:
        pixels = np.ascontiguousarray(pixels)
    base = pixels if pixels.base is None else pixels.base
    if not isinstance(base, np.ndarray) or not base.flags.c_contiguous or base.dtype.hasobject:
        pixels = pixels.copy()
        base = pixels
    buffer = base.reshape(-1).view(np.uint8)
    buffer.flags.writeable = False  # one compiled variant, whatever the frame's flags
    pixels = pixels.view()
    pixels.flags.writeable = False
    return buffer, pixels


@kernel()
def _rows(buffer: NDArray[np.uint8], pixels: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], int]:
    """Return the bytes of ``pixels``' rows (``flat``) and their stride (see the module)."""
    h, w = pixels.shape[0], pixels.shape[1]
    stride = pixels.strides[0]
    if h == 0 or w == 0:
        return buffer[:0], 3 * w
    start = np.int64(pixels.ctypes.data) - np.int64(buffer.ctypes.data)
    span = (h - 1) * stride + 3 * w
    if (
        pixels.strides[1] != 3
        or pixels.strides[2] != 1
        or stride < 3 * w
        or start < 0
        or start + span > buffer.size
    ):
        raise ValueError("the pixels are not rows of bytes of the buffer")
    return buffer[start : start + span], stride


@kernel(inline="always")
def _max_low_red_blue(row: NDArray[np.uint8]) -> int:
    """Return the greatest ``min(R, B)`` of a run of RGB bytes."""
    most = np.uint8(0)
    for i in range(row.size // 3):
        most = max(most, min(row[3 * i], row[3 * i + 2]))
    return int(most)


@kernel(inline="always")
def _max_spread(row: NDArray[np.uint8]) -> int:
    """Return the greatest ``max(R, G, B) - min(R, G, B)`` of a run of RGB bytes."""
    most = np.uint8(0)
    for i in range(row.size // 3):
        r, g, b = row[3 * i], row[3 * i + 1], row[3 * i + 2]
        # uint8 throughout (max >= min: no wrap), so that the loop vectorises on bytes
        most = max(most, np.uint8(max(max(r, g), b) - min(min(r, g), b)))
    return int(most)


@kernel(inline="always")
def _low(flat: NDArray[np.uint8], at: int) -> int:
    return int(min(min(flat[at], flat[at + 1]), flat[at + 2]))


@kernel()
def white_thin(
    buffer: NDArray[np.uint8], pixels: NDArray[np.uint8], level: int, contrast: int, most: int
) -> tuple[int, int, NDArray[np.intp]]:
    """Find the thin white pixels of an elastogram region (``marks._sparse_marks``' tests).

    A candidate has red and blue both at least ``level``. A candidate two pixels or more
    from every edge is bright when its darkest channel is at least ``level`` too, and thin
    when the darkest channel of both pixels two rows away, or of both pixels two columns
    away, is at most that darkest channel less ``contrast``.

    Returns
    -------
    count : int
        Candidates in the whole region; -1 as soon as they are more than ``most`` (nothing
        else is then returned).
    bright : int
        Bright candidates.
    thin : numpy.ndarray
        The flat indices (``r * w + c``, ascending) of the thin bright candidates.
    """
    flat, stride = _rows(buffer, pixels)
    h, w = pixels.shape[0], pixels.shape[1]
    found = np.empty(max(most, 0) + 1, dtype=np.intp)
    words = (w + 7) // 8
    store = np.zeros(words, dtype=np.uint64)  # a row's candidates, read 8 at a time
    flags = store.view(np.uint8)
    light = np.uint8(min(max(level, 0), 255))
    count = bright = k = 0
    for r in range(h):
        base = r * stride
        row = flat[base : base + 3 * w]
        if _max_low_red_blue(row) < level:
            continue
        for c in range(w):  # vectorised: one flag per pixel
            flags[c] = min(row[3 * c], row[3 * c + 2]) >= light
        inner_row = 2 <= r < h - 2
        for j in range(words):
            if store[j] == 0:
                continue
            for c in range(8 * j, min(8 * j + 8, w)):
                if not flags[c]:
                    continue
                count += 1
                if count > most:
                    return -1, bright, found[:0]
                if not (inner_row and 2 <= c < w - 2):
                    continue
                at = base + 3 * c
                centre = _low(flat, at)
                if centre < level:
                    continue
                bright += 1
                limit = centre - contrast
                thin = _low(flat, at - 2 * stride) <= limit and _low(flat, at + 2 * stride) <= limit
                if not thin:
                    thin = _low(flat, at - 6) <= limit and _low(flat, at + 6) <= limit
                if thin:
                    found[k] = r * w + c
                    k += 1
    return count, bright, found[:k]


@kernel()
def colour_marks_into(
    buffer: NDArray[np.uint8], pixels: NDArray[np.uint8], spread: int, out: NDArray[np.bool_]
) -> int:
    """Set the pixels whose channels spread by more than ``spread``, and their 8 neighbours.

    ``out`` is ``(h, w)`` boolean; ``spread`` 0-255; returns how many such (coloured) pixels
    there are.
    """
    flat, stride = _rows(buffer, pixels)
    h, w = pixels.shape[0], pixels.shape[1]
    words = (w + 7) // 8
    store = np.zeros(words, dtype=np.uint64)  # a row's flags, read 8 at a time
    flags = store.view(np.uint8)
    limit = np.uint8(min(max(spread, 0), 255))
    found = 0
    for r in range(h):
        row = flat[r * stride : r * stride + 3 * w]
        if _max_spread(row) <= spread:
            continue
        for c in range(w):  # vectorised: one flag per pixel
            red, green, blue = row[3 * c], row[3 * c + 1], row[3 * c + 2]
            flags[c] = np.uint8(max(max(red, green), blue) - min(min(red, green), blue)) > limit
        for j in range(words):
            if store[j] == 0:
                continue
            for c in range(8 * j, min(8 * j + 8, w)):
                if not flags[c]:
                    continue
                found += 1
                for rr in range(max(r - 1, 0), min(r + 2, h)):
                    for cc in range(max(c - 1, 0), min(c + 2, w)):
                        out[rr, cc] = True
    return found


@kernel(inline="always")
def _root(parent: NDArray[np.intp], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@kernel(inline="always")
def _join(parent: NDArray[np.intp], i: int, j: int) -> None:
    a, b = _root(parent, i), _root(parent, j)
    if a < b:
        parent[b] = a
    elif b < a:
        parent[a] = b


@kernel()
def components(index: NDArray[np.intp], w: int) -> tuple[NDArray[np.intp], int]:
    """Return the 8-connected structure (1..n, numbered by first pixel) of each pixel, and n.

    ``index``: ascending flat indices ``r * w + c`` of the pixels.
    """
    m = index.size
    parent = np.arange(m)
    up = 0  # first pixel that may be above-left of pixel i or later
    for i in range(m):
        r, c = divmod(index[i], w)
        if i > 0 and index[i - 1] == index[i] - 1 and c > 0:
            _join(parent, i, i - 1)
        while up < i and index[up] < index[i] - w - 1:
            up += 1
        j = up
        while j < i and index[j] <= index[i] - w + 1:
            rj, cj = divmod(index[j], w)
            if rj == r - 1 and abs(cj - c) <= 1:
                _join(parent, i, j)
            j += 1
    owners = np.empty(m, dtype=np.intp)
    label = np.zeros(m, dtype=np.intp)
    n = 0
    for i in range(m):
        root = _root(parent, i)
        if label[root] == 0:
            n += 1
            label[root] = n
        owners[i] = label[root]
    return owners, n


@kernel()
def structures_into(
    index: NDArray[np.intp], h: int, w: int, min_size: int, out: NDArray[np.bool_]
) -> int:
    """Set the candidate structures that are graphics, grown by one pixel, in ``out``.

    ``marks._structures_sparse``' rule on the pixels at ascending flat ``index``: a structure
    counts when it has ``min_size`` pixels, or when small structures remain and it is one of
    a row of characters: of the 3-2000 glyph-sized structures (4-120 pixels), those with at
    least two others (or themselves with one) within 8 columns in overlapping rows (one row
    apart at most), and their neighbours of that kind. Returns how many pixels were kept.
    """
    m = index.size
    if m == 0:
        return 0
    owners, n = components(index, w)
    sizes = np.zeros(n + 1, dtype=np.intp)
    for i in range(m):
        sizes[owners[i]] += 1
    keep = np.zeros(n + 1, dtype=np.bool_)
    small = False
    for s in range(n + 1):
        keep[s] = sizes[s] >= min_size
        small = small or (sizes[s] >= 4 and not keep[s])
    if small:
        _keep_text_rows(index, w, owners, sizes, keep)
    kept = 0
    for i in range(m):
        if not keep[owners[i]]:
            continue
        kept += 1
        r, c = divmod(index[i], w)
        for rr in range(max(r - 1, 0), min(r + 2, h)):
            for cc in range(max(c - 1, 0), min(c + 2, w)):
                out[rr, cc] = True
    return kept


@kernel()
def _keep_text_rows(
    index: NDArray[np.intp],
    w: int,
    owners: NDArray[np.intp],
    sizes: NDArray[np.intp],
    keep: NDArray[np.bool_],
) -> None:
    """Add to ``keep`` the glyph-sized structures that line up as text (``marks._text_rows``)."""
    n = sizes.size
    slot = np.full(n, -1, dtype=np.intp)  # the character number of each glyph structure
    chars = 0
    for s in range(n):
        if 4 <= sizes[s] <= 120:
            slot[s] = chars
            chars += 1
    if not 3 <= chars <= 2000:
        return
    big = 1 << 62
    top = np.full(chars, big, dtype=np.intp)
    bottom = np.full(chars, -1, dtype=np.intp)
    left = np.full(chars, big, dtype=np.intp)
    right = np.full(chars, -1, dtype=np.intp)
    for i in range(index.size):
        k = slot[owners[i]]
        if k < 0:
            continue
        r, c = divmod(index[i], w)
        top[k] = min(top[k], r)
        bottom[k] = max(bottom[k], r)
        left[k] = min(left[k], c)
        right[k] = max(right[k], c)
    # near: overlapping rows (one apart at most) and at most 8 columns between them; written
    # out in the loops (a helper taking the arrays costs reference counting per call)
    core = np.zeros(chars, dtype=np.bool_)
    for a in range(chars):
        ta, ba, la, ra = top[a], bottom[a], left[a], right[a]
        near = 0
        for b in range(chars):
            if ta <= bottom[b] + 1 and top[b] <= ba + 1 and max(left[b] - ra, la - right[b]) <= 8:
                near += 1
        core[a] = near >= 3
    for s in range(n):
        a = slot[s]
        if a < 0:
            continue
        texty = core[a]
        ta, ba, la, ra = top[a], bottom[a], left[a], right[a]
        b = 0
        while not texty and b < chars:
            texty = (
                core[b]
                and ta <= bottom[b] + 1
                and top[b] <= ba + 1
                and max(left[b] - ra, la - right[b]) <= 8
            )
            b += 1
        keep[s] = keep[s] or texty


@kernel(inline="always")
def _pairwise_block(values: NDArray[np.float64], start: int, n: int) -> float:
    """Return the pairwise sum of at most 128 values as numpy adds them (eight accumulators)."""
    if n < 8:
        total = -0.0
        for i in range(start, start + n):
            total += values[i]
        return total
    r0, r1, r2, r3 = values[start], values[start + 1], values[start + 2], values[start + 3]
    r4, r5, r6, r7 = values[start + 4], values[start + 5], values[start + 6], values[start + 7]
    i = 8
    while i < n - n % 8:
        at = start + i
        r0 += values[at]
        r1 += values[at + 1]
        r2 += values[at + 2]
        r3 += values[at + 3]
        r4 += values[at + 4]
        r5 += values[at + 5]
        r6 += values[at + 6]
        r7 += values[at + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        total += values[start + i]
        i += 1
    return total


@kernel()
def _pairwise(values: NDArray[np.float64], n: int) -> float:
    """Sum ``values[:n]`` in numpy's pairwise order (its float add reduction), bit for bit.

    Above 128 values numpy sums the halves (the first a multiple of 8) and adds them; that
    recursion runs here on an explicit stack (numba does not cache recursive functions).
    """
    if n <= 128:
        return _pairwise_block(values, 0, n)
    depth = 64
    starts = np.empty(depth, dtype=np.intp)
    sizes = np.empty(depth, dtype=np.intp)
    stage = np.zeros(depth, dtype=np.intp)  # 0: split, 1: left being summed, 2: right
    left = np.empty(depth, dtype=np.float64)
    starts[0], sizes[0], top = 0, n, 0
    result = 0.0
    while top >= 0:
        size = sizes[top]
        half = size // 2
        half -= half % 8
        if size <= 128 or stage[top] == 3:
            if size <= 128:
                value = _pairwise_block(values, starts[top], size)
            else:
                value = left[top]
            top -= 1
            if top < 0:
                result = value
            elif stage[top] == 1:
                left[top] = value
            else:
                left[top] += value
                stage[top] = 3
            continue
        if stage[top] == 0:
            stage[top] = 1
            starts[top + 1], sizes[top + 1], stage[top + 1] = starts[top], half, 0
        else:  # the left half is summed: now the right one
            stage[top] = 2
            starts[top + 1], sizes[top + 1] = starts[top] + half, size - half
            stage[top + 1] = 0
        top += 1
    return result


@kernel()
def fill_squares(
    out: NDArray[np.float32],
    known: NDArray[np.float32],
    free: NDArray[np.bool_],
    todo: NDArray[np.intp],
    h: int,
    w: int,
    size: int,
) -> NDArray[np.bool_]:
    """Fill the pixels at flat ``todo`` from the free ones in the ``size`` square around each.

    ``marks.fill_masked``'s summed squares: the square's positions clipped to the image (the
    edge repeated), the free pixels counted, the ``known`` values (0 where not free) summed in
    float64 in numpy's pairwise order, the mean rounded to float32 into flat ``out``.
    Returns which pixels were filled (those with a free pixel in their square).
    """
    half = size // 2
    values = np.empty(size * size, dtype=np.float64)
    ready = np.zeros(todo.size, dtype=np.bool_)
    for i in range(todo.size):
        r, c = divmod(todo[i], w)
        count = 0
        k = 0
        for dr in range(-half, half + 1):
            rr = min(max(r + dr, 0), h - 1) * w
            for dc in range(-half, half + 1):
                at = rr + min(max(c + dc, 0), w - 1)
                values[k] = np.float64(known[at])
                count += free[at]
                k += 1
        if count > 0:
            out[todo[i]] = np.float32((0.0 + _pairwise(values, k)) / count)
            ready[i] = True
    return ready


@kernel()
def fill_cells(
    out: NDArray[np.float32], mask: NDArray[np.bool_], sizes: NDArray[np.intp], limit: int
) -> tuple[NDArray[np.intp], int, NDArray[np.float32], NDArray[np.bool_]]:
    """Fill the masked pixels of ``out`` (2-D, C-contiguous) square by square, in place.

    ``marks.fill_masked`` from its start: the free pixels (not ``mask``), their values
    (``known``: 0 elsewhere), the masked pixels in flat order, then each square size in turn
    summed at the pixels still to fill (:func:`fill_squares`) while that is at most ``limit``
    values in all. Returns the pixels still to fill, the position in ``sizes`` to go on from
    (``len(sizes)`` when done; a size whose squares would exceed ``limit`` is left to the
    caller), ``known`` and ``free`` (flat).
    """
    flat = out.reshape(-1)
    masked = mask.reshape(-1)
    n = flat.size
    known = np.empty(n, dtype=np.float32)
    free = np.empty(n, dtype=np.bool_)
    count = 0
    for i in range(n):
        free[i] = not masked[i]
        known[i] = flat[i] if free[i] else np.float32(0)
        count += masked[i]
    todo = np.empty(count, dtype=np.intp)
    k = 0
    for i in range(n):
        if masked[i]:
            todo[k] = i
            k += 1
    h, w = out.shape
    for s in range(sizes.size):
        size = sizes[s]
        if todo.size * size * size > limit:
            return todo, s, known, free
        ready = fill_squares(flat, known, free, todo, h, w, size)
        left = 0
        for i in range(todo.size):
            if not ready[i]:
                todo[left] = todo[i]
                left += 1
        todo = todo[:left]
        if left == 0:
            return todo, sizes.size, known, free
    return todo, sizes.size, known, free


@kernel(inline="always")
def _half_even(x: float) -> float:
    """``np.round`` of a float32 value: the nearest integer, ties to the even one."""
    low = np.floor(x)
    part = x - low  # exact: the fraction of a float is representable
    if part > 0.5 or (part == 0.5 and low % 2.0 != 0.0):
        return low + 1.0
    return low


@kernel(inline="always")
def _levels_at_least(values: NDArray[np.float32], count: int) -> bool:
    """Whether ``values`` rounded (``np.round``) take at least ``count`` distinct levels."""
    rounded = np.empty(values.size, dtype=np.float64)
    for i in range(values.size):
        rounded[i] = _half_even(values[i])
    rounded.sort()
    distinct = 1 if values.size else 0
    for i in range(1, rounded.size):
        if rounded[i] != rounded[i - 1]:
            distinct += 1
            if distinct >= count:
                return True
    return distinct >= count


@kernel()
def ramp_columns(strip: NDArray[np.float32]) -> NDArray[np.intp]:
    """``marks._ramp_columns`` in one pass: ``(top, bottom, c0, c1)``, or ``-1`` s when none.

    Per column ``c``: its uniform rows (each of the pixels ``c .. c + 5`` within 2 levels of
    its right neighbour), their longest run (the first of the longest), trimmed to its lit
    rows (> 2), then the ramp tests in numpy's float32 arithmetic: at least 24 rows, a range
    of at least 120 levels, no step over 48, at least 8 rounded levels, more than 95 % of the
    steps one way.
    """
    h, w = strip.shape
    result = np.full(4, -1, dtype=np.intp)
    if h < 24 or w < 6:
        return result
    uniform = np.empty(h, dtype=np.bool_)
    for c in range(w - 5):
        rows = 0
        for r in range(h):
            flat = True
            for k in range(5):
                if not abs(strip[r, c + k + 1] - strip[r, c + k]) <= np.float32(2.0):
                    flat = False
                    break
            uniform[r] = flat
            rows += flat
        if rows < 24:
            continue
        top, bottom, start = 0, 0, -1
        for r in range(h + 1):
            if r < h and uniform[r]:
                if start < 0:
                    start = r
            elif start >= 0:
                if r - start > bottom - top:
                    top, bottom = start, r
                start = -1
        first, last = -1, -1
        lit = 0
        for r in range(top, bottom):
            if strip[r, c] > np.float32(2.0):
                lit += 1
                last = r
                if first < 0:
                    first = r
        if lit < 24:
            continue
        top, bottom = first, last + 1
        if bottom - top < 24:
            continue
        values = strip[top:bottom, c]
        high, low = values[0], values[0]
        steepest = np.float32(0.0)
        rising, falling = 0, 0
        nan = False
        for i in range(values.size):
            v = values[i]
            if np.isnan(v):
                nan = True
                break
            high, low = max(high, v), min(low, v)
            if i:
                step = v - values[i - 1]
                steepest = max(steepest, abs(step))
                rising += step >= np.float32(-1.0)
                falling += step <= np.float32(1.0)
        if nan or not (high - low >= np.float32(120.0)) or not (steepest <= np.float32(48.0)):
            continue
        steps = values.size - 1
        if not max(rising / steps, falling / steps) > 0.95:
            continue
        if not _levels_at_least(values, 8):
            continue
        if result[0] < 0:
            result[0], result[1], result[2], result[3] = top, bottom, c, c + 6
        else:
            result[0] = min(result[0], top)
            result[1] = max(result[1], bottom)
            result[3] = c + 6  # columns come in order: the last found is the largest
    return result
