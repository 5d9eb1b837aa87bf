"""The numpy mark finder that :mod:`sswe_node.imaging.kernels` replaced (reference for tests).

The functions of ``sswe_node/imaging/marks.py`` that the compiled kernels replaced, verbatim
as they were before them (git 2b10b91; the wedge finder's ``_ramp_columns`` and its caller
``wedge_mask`` as at 12e4554; what the kernels left unchanged is imported from it):
tests/test_imaging_kernels.py checks that the compiled code finds bit-identical marks.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from sswe_node.imaging.boxes import PixelBox
from sswe_node.imaging.marks import (  # unchanged by the kernels: shared, not copied
    _BRIGHT,
    _CONTRAST,
    _EIGHT,
    _FILL_SIZES,
    _GATHER_LIMIT,
    _GREY_CONTRAST,
    _MIN_COLOURED_MARK,
    _MIN_MARK,
    _SPARSE_SHARE,
    _SPARSE_SHARE_WHITE,
    _grow,
    _same_level_blocks,
    _structures,
    _thin_bright,
    outside_fan,
)

__all__ = ["graphics_marks", "grey_and_unequal", "wedge_mask", "outside_fan", "fill_masked"]


def graphics_marks(
    pixels: NDArray[np.floating],
    *,
    grey_image: bool,
    white: bool = True,
    out: NDArray[np.bool_] | None = None,
    unequal: NDArray[np.bool_] | None = None,
) -> NDArray[np.bool_]:
    """Return where thin burned-in graphics (lines, rings, crosses, text) cover a region.

    Parameters
    ----------
    pixels : numpy.ndarray
        ``(h, w, 3)`` RGB or ``(h, w)`` grey pixels of the region, 0-255.
    grey_image : bool
        True for a B-mode region (any colour is a mark); False for an elastogram (colour is
        the image; only thin white structures are marks).
    white : bool
        Look for thin white graphics in a B-mode region too (False: colour only, for the
        plain panel of a dual display, whose white marks are found in the elastogram panel).
    out : numpy.ndarray, optional
        ``(h, w)`` boolean C-contiguous mask to add the marks to (e.g. the other panel's).
    unequal : numpy.ndarray, optional
        ``(h, w)`` boolean: where the channels of 8-bit RGB ``pixels`` differ (R != G or
        G != B), when already known (:func:`grey_and_unequal`); used for a grey image
        looked at for colour only (``white=False``).

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` boolean mask, grown by one pixel over the marks' anti-aliased edges
        (``out`` when given, with the marks set).
    """
    if out is not None and (
        out.shape != pixels.shape[:2] or out.dtype != np.bool_ or not out.flags.c_contiguous
    ):
        raise ValueError(f"out must be a contiguous boolean {pixels.shape[:2]} array")
    rgb = pixels.ndim == 3
    out_shape = pixels.shape[:2]
    if pixels.dtype != np.uint8:
        unequal = None  # rounded values: their channels are compared anew
        pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    if rgb and grey_image and not white and unequal is not None and unequal.shape == out_shape:
        sparse = _sparse_colour_of(pixels, unequal.reshape(-1), out)
        if sparse is not None:
            return sparse
    elif rgb and not (grey_image and white):
        sparse = _sparse_marks(pixels, grey_image, out)
        if sparse is not None:
            return sparse
    if rgb:
        r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
        low = np.minimum(np.minimum(r, g), b)
        lum = np.maximum(np.maximum(r, g), b) if grey_image else low
    else:
        lum = low = pixels
    if grey_image:
        if white:
            candidates = _thin_bright(lum, _BRIGHT, contrast=_GREY_CONTRAST)
        else:
            candidates = np.zeros(lum.shape, dtype=bool)
        coloured = (lum - low) > 40 if rgb else None  # uint8: lum >= low, no wrap
    else:
        # White stands out in the darkest channel (no colour of a colour table is that
        # light). Yellow and green marks are not looked for here: the colour table holds
        # those colours too, and the rings and calipers drawn on an elastogram are drawn on
        # the plain B-mode panel as well, where any colour is a mark.
        candidates = _thin_bright(low, 200)
        coloured = None
    if not candidates.any() and (coloured is None or not coloured.any()):
        return candidates if out is None else out
    marks = candidates
    if candidates.any():
        marks = _structures(candidates, _MIN_MARK if grey_image else _MIN_COLOURED_MARK)
    if grey_image and marks.any():
        marks |= _same_level_blocks(marks, lum)
    if coloured is not None and coloured.any():  # colour in a grey image: graphics, any shape
        marks |= _grow(coloured, 1, 1)
    if out is None:
        return marks
    out |= marks
    return out


def _sparse_marks(
    pixels: NDArray[np.uint8], grey_image: bool, out: NDArray[np.bool_] | None = None
) -> NDArray[np.bool_] | None:
    """Find colour marks in a grey panel, or white marks in an elastogram, on few pixels.

    Both are rare: in a grey panel only coloured graphics have unequal channels, and in an
    elastogram only white graphics have red and blue both high. Those pixels are tested alone
    (the same tests as the dense path); None when they are too many (e.g. a JPEG panel whose
    channels all differ a little): the dense path then runs. The candidates are found on the
    region's bytes in one contiguous row (fast byte comparisons), the tests and the structure
    finding on the candidates' flat indices only (one gather of their neighbourhoods).
    Found marks are set in ``out`` when given.
    """
    h, w = pixels.shape[:2]
    n = h * w
    if n == 0:
        return np.zeros((h, w), dtype=bool) if out is None else out
    if grey_image:
        return _sparse_colour(pixels, out)
    flat = np.ascontiguousarray(pixels).reshape(-1)  # R, G, B, R, G, B...
    maybe = np.minimum(flat[0::3], flat[2::3]) >= 200  # red and blue both high
    count = int(np.count_nonzero(maybe))
    if count > n // _SPARSE_SHARE_WHITE:
        return None
    if out is None:
        out = np.zeros((h, w), dtype=bool)
    if count == 0:
        return out
    inner = maybe.reshape(h, w)  # the thin test needs two pixels on every side
    inner[:2] = inner[-2:] = inner[:, :2] = inner[:, -2:] = False
    index = np.flatnonzero(maybe)
    at = 3 * index
    centre = np.minimum(np.minimum(flat[at], flat[at + 1]), flat[at + 2])
    bright = centre >= 200
    if count > n // _SPARSE_SHARE and np.count_nonzero(bright) >= n // _SPARSE_SHARE:
        return None  # many light pixels: the dense path tests them all (see _thin_bright)
    index, limit = index[bright], centre[bright].astype(np.int16) - _CONTRAST
    # the darkest channel of the pixels two above, below, left and right of each candidate
    at = 3 * (index[:, None] + np.array([-2 * w, 2 * w, -2, 2]))
    low = np.minimum(np.minimum(flat[at], flat[at + 1]), flat[at + 2])
    darker = low <= limit[:, None]
    thin = (darker[:, 0] & darker[:, 1]) | (darker[:, 2] & darker[:, 3])
    if not thin.any():
        return out
    return _structures_sparse(index[thin], (h, w), _MIN_COLOURED_MARK, out)


def _sparse_colour(
    pixels: NDArray[np.uint8], out: NDArray[np.bool_] | None
) -> NDArray[np.bool_] | None:
    """Return :func:`_sparse_marks` of a grey panel: its coloured pixels, grown by one."""
    h, w = pixels.shape[:2]
    n = h * w
    flat = np.ascontiguousarray(pixels).reshape(-1)  # R, G, B, R, G, B...
    # a pixel is grey when R == G and G == B: two neighbouring-byte tests, read per pixel
    # as one uint16 of the test bytes (3 i, 3 i + 1) (the pair (B, next R) is not looked at)
    unequal = np.empty(3 * n, dtype=bool)
    np.not_equal(flat[1:], flat[:-1], out=unequal[:-1])
    maybe = np.ndarray((n,), dtype=np.uint16, buffer=unequal, strides=(3,)) != 0
    return _sparse_colour_of(pixels, maybe, out)


def _sparse_colour_of(
    pixels: NDArray[np.uint8], maybe: NDArray[np.bool_], out: NDArray[np.bool_] | None
) -> NDArray[np.bool_] | None:
    """Return :func:`_sparse_colour` given its pixels of unequal channels (flat ``maybe``)."""
    h, w = pixels.shape[:2]
    count = int(np.count_nonzero(maybe))
    if count > (h * w) // _SPARSE_SHARE:
        return None
    if out is None:
        out = np.zeros((h, w), dtype=bool)
    if count == 0:
        return out
    index = np.flatnonzero(maybe)
    rows, cols = np.divmod(index, w)
    values = pixels[rows, cols]  # (m, 3)
    coloured = (values.max(axis=1) - values.min(axis=1)) > 40  # uint8: high >= low
    if not coloured.any():
        return out
    return _grow_sparse(index[coloured], (h, w), out)


def grey_and_unequal(
    pixels: NDArray[np.uint8],
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Return the grey levels of 8-bit RGB pixels and where their channels differ.

    The grey levels are :func:`~sswe_node.imaging.colour_bar.grey_levels`' bit for bit,
    from the same channel conversions, which also tell where R != G or G != B (the pixels a
    grey panel's colour marks are looked for on, :func:`graphics_marks` ``unequal``).
    """
    r, g, b = (pixels[..., i].astype(np.float32) for i in range(3))
    unequal = r != g
    unequal |= g != b
    return (r + g + b) * np.float32(1.0 / 3.0), unequal


def _grow_sparse(
    index: NDArray[np.intp], shape: tuple[int, int], out: NDArray[np.bool_] | None = None
) -> NDArray[np.bool_]:
    """Set the pixels at flat ``index`` and their eight neighbours (as :func:`_grow` by 1, 1)."""
    h, w = shape
    if out is None:
        out = np.zeros(shape, dtype=bool)
    rows, cols = np.divmod(index, w)
    rr, cc = _square_steps(h, 3)[rows] * w, _square_steps(w, 3)[cols]  # (m, 3), clipped
    out.reshape(-1)[(rr[:, :, None] + cc[:, None, :]).ravel()] = True
    return out


def _structures_sparse(
    index: NDArray[np.intp],
    shape: tuple[int, int],
    min_size: int,
    out: NDArray[np.bool_] | None = None,
) -> NDArray[np.bool_]:
    """Keep the candidate structures (pixels at sorted flat ``index``) that are graphics.

    A structure counts when it is large (``min_size`` pixels) or when it is one of a row of
    at least three small ones a few pixels apart (the characters of a text). (A flat level
    does not tell graphics: clipped speckle is flat at 255 too.) Worked on the candidate
    pixels only (sparse), so speckle costs little. They are set in ``out`` when given.
    """
    rows, cols = np.divmod(index, shape[1])
    owners, n = _components(rows, cols, shape)
    sizes = np.bincount(owners, minlength=n + 1)  # no candidate is in the background (0)
    keep = sizes >= min_size
    if ((sizes >= 4) & ~keep).any():
        # characters: small structures and the glyph-sized ones kept already
        glyph = (sizes >= 4) & (sizes <= 120)
        chars = int(np.count_nonzero(glyph))
        if 3 <= chars <= 2000:
            of_char = glyph[owners]
            keep |= _text_rows(rows[of_char], cols[of_char], owners[of_char], glyph)
    kept = index[keep[owners]]
    if not len(kept):
        return np.zeros(shape, dtype=bool) if out is None else out
    return _grow_sparse(kept, shape, out)  # anti-aliased edges, on the kept pixels only


def _components(
    rows: NDArray[np.intp], cols: NDArray[np.intp], shape: tuple[int, int]
) -> tuple[NDArray[np.int32], int]:
    """Return the 8-connected structure (1..n) of each candidate pixel, and n.

    Labelled on the candidates' rows and columns only: every run of rows (columns) without
    a candidate shrinks to one, which keeps exactly which pixels touch (neighbours stay
    neighbours, pixels two or more apart stay at least two apart) on a far smaller image.
    """
    row_at, n_rows = _squeezed(rows, shape[0])
    col_at, n_cols = _squeezed(cols, shape[1])
    at = (row_at[rows], col_at[cols])
    small = np.zeros((n_rows, n_cols), dtype=bool)
    small[at] = True
    labels, n = ndimage.label(small, structure=_EIGHT)
    return labels[at], int(n)


def _squeezed(coords: NDArray[np.intp], size: int) -> tuple[NDArray[np.intp], int]:
    """Map 0..size-1 so that each run of coordinates holding no candidate becomes one."""
    kept = np.zeros(size + 1, dtype=bool)
    kept[coords] = True
    kept[coords + 1] = True  # the first empty one after a used one separates the next
    kept[0] = True
    position = np.cumsum(kept[:size]) - 1
    return position, int(position[-1]) + 1


def _text_rows(
    rows: NDArray[np.intp],
    cols: NDArray[np.intp],
    owners: NDArray[np.int32],
    glyph: NDArray[np.bool_],
) -> NDArray[np.bool_]:
    """Return which structures line up as text: >= 3 characters within 8 pixels along a row.

    ``rows``, ``cols`` and ``owners`` are the pixels of the characters (``glyph``: the
    structures of glyph size, by label); the result is indexed by label like ``glyph``.
    """
    # bounding boxes from the characters' pixels (sparse, no image scan)
    n = len(glyph)
    t = np.full(n, rows.max(initial=0) + 1)
    b = np.full(n, -1)
    lft = np.full(n, cols.max(initial=0) + 1)
    r = np.full(n, -1)
    np.minimum.at(t, owners, rows)
    np.maximum.at(b, owners, rows)
    np.minimum.at(lft, owners, cols)
    np.maximum.at(r, owners, cols)
    chars = np.flatnonzero(glyph)
    t, b, lft, r = t[chars], b[chars], lft[chars], r[chars]
    same_row = (t[:, None] <= b[None, :] + 1) & (t[None, :] <= b[:, None] + 1)
    gap = np.maximum(lft[None, :] - r[:, None], lft[:, None] - r[None, :])
    near = same_row & (gap <= 8)  # includes itself
    # a character between two others, and the characters next to such a one
    core = near.sum(axis=1) >= 3
    texty = np.zeros(n, dtype=bool)
    texty[chars] = core | (near & core[None, :]).any(axis=1)
    return texty


def fill_masked(image: NDArray[np.float32], mask: NDArray[np.bool_]) -> NDArray[np.float32]:
    """Fill masked pixels from their unmasked surroundings (normalised box convolution).

    A fast local fill for the model grid: each masked pixel gets the mean of the unmasked
    pixels in the smallest of a few squares around it (3, 7, 15, 31 pixels; the image edge
    repeated beyond it) that holds any. Marks are thin: the squares are summed at the masked
    pixels alone (a few values each), large masked areas are box-filtered whole.
    (``skimage.restoration.inpaint_biharmonic`` gives smoother fills at ~4 ms per 96 x 64
    grid, more than the whole reading of a capture.)

    Parameters
    ----------
    image : numpy.ndarray
        ``(h, w)`` float32.
    mask : numpy.ndarray
        ``(h, w)`` boolean, True where the image is to be filled.

    Returns
    -------
    numpy.ndarray
        A filled copy (``image`` itself when nothing is masked or everything is).
    """
    if not mask.any() or mask.all():
        return image
    out = np.array(image, dtype=np.float32)
    h, w = out.shape
    free = ~mask
    known = np.where(free, out, np.float32(0)).reshape(-1)
    todo = np.flatnonzero(mask)
    weight = None
    for size in _FILL_SIZES:
        if len(todo) * size * size <= _GATHER_LIMIT:
            # the square around each masked pixel, its indices clipped at the edges
            rows, cols = np.divmod(todo, w)
            rr, cc = _square_steps(h, size)[rows] * w, _square_steps(w, size)[cols]
            at = (rr[:, :, None] + cc[:, None, :]).reshape(len(todo), size * size)
            count = free.reshape(-1)[at].sum(axis=1)
            ready = count > 0
            values = (known[at].sum(axis=1, dtype=np.float64)[ready] / count[ready]).astype(
                np.float32
            )
        else:
            if weight is None:
                weight = free.astype(np.float32)
            num = ndimage.uniform_filter(known.reshape(h, w), size, mode="nearest")
            den = ndimage.uniform_filter(weight, size, mode="nearest").reshape(-1)[todo]
            ready = den > 1e-3
            values = num.reshape(-1)[todo][ready] / den[ready]
        out.reshape(-1)[todo[ready]] = values
        todo = todo[~ready]
        if not len(todo):
            break
    return out


@functools.lru_cache(maxsize=64)
def _square_steps(length: int, size: int) -> NDArray[np.intp]:
    """Return ``(length, size)``: the positions a square of ``size`` centred on each covers.

    Clipped to ``0..length-1`` (the edge repeated, as ``mode="nearest"``); read-only, shared.
    """
    steps = np.arange(length)[:, None] + np.arange(-(size // 2), size // 2 + 1)
    steps = np.clip(steps, 0, length - 1)
    steps.flags.writeable = False
    return steps


def wedge_mask(grey: NDArray[np.floating], boxes: tuple[PixelBox, ...] = ()) -> NDArray[np.bool_]:
    """Return where grey-scale wedges (grey bars) lie in a region (numpy, as at 12e4554)."""
    h, w = grey.shape
    mask = np.zeros((h, w), dtype=bool)
    for box in boxes:
        mask[box.expanded(1).clipped((h, w)).slices] = True
    band = max(8, w // 6)
    for side in (slice(0, band), slice(max(0, w - band), w)):
        strip = np.asarray(grey[:, side], dtype=np.float32)
        found = _ramp_columns(strip)
        if found is not None:
            top, bottom, c0, c1 = found
            offset = side.start
            mask[max(0, top - 1) : bottom + 1, max(0, offset + c0 - 1) : offset + c1 + 1] = True
    return mask


def _ramp_columns(strip: NDArray[np.float32]) -> tuple[int, int, int, int] | None:
    """Find a wedge in a strip: >= 6 adjacent columns of uniform rows, ramping >= 120 levels."""
    h, w = strip.shape
    if h < 24 or w < 6:
        return None
    # uniform rows: each pixel equals its right neighbour over six columns
    same = np.abs(np.diff(strip, axis=1)) <= 2.0
    run = np.lib.stride_tricks.sliding_window_view(same, 5, axis=1).all(axis=2)
    found = []
    for c in np.flatnonzero(run.sum(axis=0) >= 24):
        rows = np.flatnonzero(run[:, c])
        breaks = np.flatnonzero(np.diff(rows) > 1)
        starts = np.r_[rows[0], rows[breaks + 1]]
        stops = np.r_[rows[breaks], rows[-1]] + 1
        k = int(np.argmax(stops - starts))
        top, bottom = int(starts[k]), int(stops[k])
        values = strip[top:bottom, c]
        lit = np.flatnonzero(values > 2.0)  # black rows beside a wedge are background
        if len(lit) < 24:
            continue
        top, bottom = top + int(lit[0]), top + int(lit[-1]) + 1
        values = strip[top:bottom, c]
        steps = np.diff(values)
        monotone = max(np.mean(steps >= -1.0), np.mean(steps <= 1.0))
        # a ramp: many levels, no jumps (text on black jumps), mostly one direction
        if (
            bottom - top >= 24
            and np.ptp(values) >= 120.0
            and np.abs(steps).max() <= 48.0
            and len(np.unique(np.round(values))) >= 8
            and monotone > 0.95
        ):
            found.append((top, bottom, int(c)))
    if not found:
        return None
    return (
        min(f[0] for f in found),
        max(f[1] for f in found),
        min(f[2] for f in found),
        max(f[2] for f in found) + 6,
    )
