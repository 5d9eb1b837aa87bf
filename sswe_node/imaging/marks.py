"""Burned-in marks inside the image: measurement graphics, text, wedges, and the area outside a fan.

Scanners draw on the pixels: Q-Box rings, calipers, crosses and cursors (white, yellow, green),
measurement text, the depth ruler and a grey-scale wedge at the edges, and a black background
outside the fan of a convex or endocavity probe. None of it is tissue: marks get confidence 0
in labels and are filled from their surroundings in the model input; the outside of a fan is
masked (black in the input, NaN in the Parametric Map).

Detection is cheap, made for every frame:

* thin bright graphics: pixels brighter than the pixels two rows or two columns away on
  *both* sides (a line, ring or text stroke at most ~3 pixels wide), kept when they form a
  structure that speckle grains do not (large, or a row of characters);
* in a grey B-mode, any coloured pixel (green cursors, yellow rings and calipers); inside the
  elastogram, white graphics (text, white rings). Yellow and green marks drawn only on the
  elastogram are not told apart from the colour table's own yellow and green, nor white marks
  drawn only on the plain panel of a dual display looked for: scanners draw rings and
  calipers on both panels, so each kind is found where it is cheap and sure (the reader);
* grey-bar (wedge) regions from the Sequence of Ultrasound Regions, and a pixel test for a
  wedge at the edge of the region: a strip of uniform rows ramping through the grey levels;
* outside the fan: exactly black areas joined to the corners of the region, on a 4x coarser
  grid.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from sswe_node.imaging.boxes import PixelBox

__all__ = ["graphics_marks", "wedge_mask", "outside_fan", "fill_masked"]

#: A mark is this much brighter (max of R, G, B) than the pixels two away on both sides.
_CONTRAST = 50
#: ... in a B-mode: drawn graphics stand out of the tissue by far more than speckle grains do.
_GREY_CONTRAST = 80
#: Grey marks (white, grey text) are at least this bright (ALOKA's grey text is 190).
_BRIGHT = 170
#: Thin bright structures smaller than this (pixels) are speckle grains, not graphics (grains
#: of simulated and real B-modes reach ~15 pixels; a text character 12-50, a ring hundreds).
_MIN_MARK = 16
#: ... white inside an elastogram (no colour of a colour table is that light): fewer suffice.
_MIN_COLOURED_MARK = 6
_EIGHT = np.ones((3, 3), dtype=bool)
#: :func:`_sparse_marks` tests its candidates alone up to this share of the region (1 / N).
_SPARSE_SHARE = 50
#: ... white in an elastogram: up to this share of pixels with red and blue high, as long as
#: fewer than 1 / _SPARSE_SHARE are light in all three channels (what the dense path tests).
_SPARSE_SHARE_WHITE = 8
#: White in an elastogram: its darkest channel (and its red and blue) at least this light.
_WHITE = 200
#: A grey image's pixel is coloured when its channels spread by more than this.
_COLOUR_SPREAD = 40


def _thin_bright(
    lum: NDArray[np.uint8], level: int, reach: int = 2, contrast: int = _CONTRAST
) -> NDArray[np.bool_]:
    """Return thin bright pixels: lines, rings and strokes at most ~3 pixels wide.

    A pixel counts when it is at least ``level`` bright and brighter by ``contrast`` than
    both pixels ``reach`` rows (or both ``reach`` columns) away. A line at any angle is
    crossed by a row or a column, so two directions suffice. ``lum`` is uint8: the sides are
    raised by ``contrast`` once (saturating), then the test is byte comparisons.
    """
    h, w = lum.shape
    out = np.zeros((h, w), dtype=bool)
    k = reach
    if h < 2 * k + 1 or w < 2 * k + 1:
        return out
    bright = lum[k:-k, k:-k] >= level
    if np.count_nonzero(bright) < lum.size // 50:  # few bright pixels (white in an elastogram)
        rows, cols = np.divmod(np.flatnonzero(bright), w - 2 * k)
        rows, cols = rows + k, cols + k
        limit = lum[rows, cols].astype(np.int16) - contrast
        thin = (lum[rows - k, cols] <= limit) & (lum[rows + k, cols] <= limit)
        thin |= (lum[rows, cols - k] <= limit) & (lum[rows, cols + k] <= limit)
        out[rows[thin], cols[thin]] = True
        return out
    raised = np.minimum(lum, 255 - contrast) + np.uint8(contrast)
    raised[lum > 255 - contrast] = 255  # a side that bright is never "darker by contrast"
    centre = lum[k:-k, k:-k]
    found = (raised[: -2 * k, k:-k] <= centre) & (raised[2 * k :, k:-k] <= centre)
    found |= (raised[k:-k, : -2 * k] <= centre) & (raised[k:-k, 2 * k :] <= centre)
    found &= bright
    out[k:-k, k:-k] = found
    return out


def graphics_marks(
    pixels: NDArray[np.floating],
    *,
    grey_image: bool,
    white: bool = True,
    out: NDArray[np.bool_] | None = None,
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
        pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    if rgb and grey_image and not white:  # colour alone: one compiled pass
        from sswe_node.imaging.kernels import byte_rows, colour_marks_into

        if out is None:
            out = np.zeros(out_shape, dtype=bool)
        colour_marks_into(*byte_rows(pixels), _COLOUR_SPREAD, out)
        return out
    if rgb and not grey_image:
        sparse = _sparse_marks(pixels, out)
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
        coloured = (lum - low) > _COLOUR_SPREAD if rgb else None  # uint8: lum >= low
    else:
        # White stands out in the darkest channel (no colour of a colour table is that
        # light). Yellow and green marks are not looked for here: the colour table holds
        # those colours too, and the rings and calipers drawn on an elastogram are drawn on
        # the plain B-mode panel as well, where any colour is a mark.
        candidates = _thin_bright(low, _WHITE)
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
    pixels: NDArray[np.uint8], out: NDArray[np.bool_] | None = None
) -> NDArray[np.bool_] | None:
    """Find white marks in an elastogram on its few candidate pixels (compiled).

    They are rare: in an elastogram only white graphics have red and blue both high. Those
    pixels are tested alone (the same tests as the dense path, :func:`_thin_bright`), and
    their structures found on them alone (:func:`_structures_sparse`), in one compiled pass
    (:func:`sswe_node.imaging.kernels.white_thin`); None when they are too many (a large
    light area): the dense path then runs. Found marks are set in ``out`` when given.
    """
    from sswe_node.imaging.kernels import byte_rows, structures_into, white_thin

    h, w = pixels.shape[:2]
    n = h * w
    if n == 0:
        return np.zeros((h, w), dtype=bool) if out is None else out
    count, bright, thin = white_thin(
        *byte_rows(pixels), _WHITE, _CONTRAST, n // _SPARSE_SHARE_WHITE
    )
    if count < 0:
        return None
    if count > n // _SPARSE_SHARE and bright >= n // _SPARSE_SHARE:
        return None  # many light pixels: the dense path tests them all (see _thin_bright)
    if out is None:
        out = np.zeros((h, w), dtype=bool)
    if len(thin):
        structures_into(thin, h, w, _MIN_COLOURED_MARK, out)
    return out


def _same_level_blocks(marks: NDArray[np.bool_], lum: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Return filled areas drawn in the marks' own level and touching them (a boxed digit).

    Graphics of one scanner share one drawing level (ALOKA's text is 190 throughout); a
    filled box in that level beside the text is no thin line, but it is the same drawing.
    """
    levels = np.bincount(lum[marks], minlength=256)
    levels[:_BRIGHT] = 0  # the marks' dark margins
    levels[250:] = 0  # saturated white: speckle saturates there too, it tells nothing
    drawn = np.flatnonzero(levels >= max(8, 0.15 * levels.sum()))
    if not len(drawn):
        return np.zeros_like(marks)
    same = np.isin(lum, drawn)
    labels, n = ndimage.label(same, structure=_EIGHT)
    touching = np.unique(labels[marks & same])
    touching = touching[touching > 0]
    if not len(touching):
        return np.zeros_like(marks)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    touching = touching[sizes[touching] <= 400]  # a block, not a flat tissue area
    return _grow(np.isin(labels, touching), 1, 1)


def _grow(mask: NDArray[np.bool_], rows: int, cols: int) -> NDArray[np.bool_]:
    """Dilate by a ``(2 rows + 1) x (2 cols + 1)`` rectangle (shifted ORs: cheap, exact)."""
    out = mask.copy()
    for k in range(1, cols + 1):
        out[:, k:] |= mask[:, :-k]
        out[:, :-k] |= mask[:, k:]
    wide = out.copy()
    for k in range(1, rows + 1):
        out[k:] |= wide[:-k]
        out[:-k] |= wide[k:]
    return out


def _structures(candidates: NDArray[np.bool_], min_size: int) -> NDArray[np.bool_]:
    """Keep candidate structures that are graphics (see :func:`_structures_sparse`)."""
    index = np.flatnonzero(candidates)
    if not len(index):
        return candidates
    return _structures_sparse(index, candidates.shape, min_size)


def _structures_sparse(
    index: NDArray[np.intp],
    shape: tuple[int, int],
    min_size: int,
    out: NDArray[np.bool_] | None = None,
) -> NDArray[np.bool_]:
    """Keep the candidate structures (pixels at sorted flat ``index``) that are graphics.

    A structure (8-connected) counts when it is large (``min_size`` pixels) or when it is
    one of a row of at least three small ones a few pixels apart (the characters of a text:
    glyph-sized structures within 8 columns of each other in overlapping rows). (A flat level
    does not tell graphics: clipped speckle is flat at 255 too.) Worked on the candidate
    pixels only (sparse, compiled: :func:`sswe_node.imaging.kernels.structures_into`), so
    speckle costs little. The kept structures, grown by one pixel over their anti-aliased
    edges, are set in ``out`` when given.
    """
    from sswe_node.imaging.kernels import structures_into

    if out is None:
        out = np.zeros(shape, dtype=bool)
    if len(index):
        structures_into(np.asarray(index, dtype=np.intp), shape[0], shape[1], min_size, out)
    return out


def wedge_mask(grey: NDArray[np.floating], boxes: tuple[PixelBox, ...] = ()) -> NDArray[np.bool_]:
    """Return where grey-scale wedges (grey bars) lie in a region.

    Parameters
    ----------
    grey : numpy.ndarray
        ``(h, w)`` grey levels of the region.
    boxes : tuple of PixelBox
        Grey-bar regions already known (in the region's coordinates), e.g. from the
        Sequence of Ultrasound Regions.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` boolean mask.
    """
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
    """Find a wedge in a strip: >= 6 adjacent columns of uniform rows, ramping >= 120 levels.

    Compiled (:func:`sswe_node.imaging.kernels.ramp_columns`): every column of a strip of
    flat speckle or black background has its uniform rows looked at in turn.
    """
    from sswe_node.imaging.kernels import ramp_columns

    top, bottom, c0, c1 = (int(v) for v in ramp_columns(np.ascontiguousarray(strip)))
    return None if top < 0 else (top, bottom, c0, c1)


def outside_fan(grey: NDArray[np.floating]) -> NDArray[np.bool_] | None:
    """Return the area outside a sector (convex / endocavity) fan, or None for a full image.

    The outside is black (0) and joined to the corners of the region; it must cover at least
    3 % of it. Found on a 4x coarser grid (two samples per cell), so its edge is exact to 4
    pixels.

    Parameters
    ----------
    grey : numpy.ndarray
        ``(h, w)`` grey levels of the region of interest.

    Returns
    -------
    numpy.ndarray or None
        ``(h, w)`` boolean mask, or None when no fan edge is found.
    """
    k = 4
    h, w = grey.shape
    hh, ww = h // k, w // k
    if hh < 6 or ww < 6:
        return None
    # two samples per 4 x 4 block: the outside of a fan is black to the last pixel
    first, last = (0, (hh - 1) * k), (0, (ww - 1) * k)
    if not any(grey[r, c] <= 2.0 and grey[r + 2, c + 2] <= 2.0 for r in first for c in last):
        return None  # no corner block is black (most images: the samples are not needed)
    black = (grey[0 : hh * k : k, 0 : ww * k : k] <= 2.0) & (
        grey[2 : hh * k : k, 2 : ww * k : k] <= 2.0
    )
    labels, _ = ndimage.label(black)
    corners = {labels[0, 0], labels[0, -1], labels[-1, 0], labels[-1, -1]} - {0}
    outside = np.isin(labels, list(corners))
    if outside.mean() < 0.03:
        return None
    full = np.repeat(np.repeat(outside, k, axis=0), k, axis=1)
    mask = np.zeros((h, w), dtype=bool)
    mask[: hh * k, : ww * k] = full
    if hh * k < h:
        mask[hh * k :, : ww * k] = full[-1:, :]
    if ww * k < w:
        mask[:, ww * k :] = mask[:, ww * k - 1 : ww * k]
    return mask


#: Square sizes tried in turn by :func:`fill_masked`.
_FILL_SIZES = (3, 7, 15, 31)
_FILL_SIZE_ARRAY = np.array(_FILL_SIZES, dtype=np.intp)
#: :func:`fill_masked` sums a square at its masked pixels alone up to this many values in all;
#: more (a large masked area) and the square is filtered over the whole image instead.
_GATHER_LIMIT = 8192


def fill_masked(image: NDArray[np.float32], mask: NDArray[np.bool_]) -> NDArray[np.float32]:
    """Fill masked pixels from their unmasked surroundings (normalised box convolution).

    A fast local fill for the model grid: each masked pixel gets the mean of the unmasked
    pixels in the smallest of a few squares around it (3, 7, 15, 31 pixels; the image edge
    repeated beyond it) that holds any. Marks are thin: the squares are summed at the masked
    pixels alone (a few values each, compiled: :func:`sswe_node.imaging.kernels.fill_squares`),
    large masked areas are box-filtered whole.
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
    from sswe_node.imaging.kernels import fill_cells, fill_squares

    if not mask.any() or mask.all():
        return image
    out = np.array(image, dtype=np.float32, order="C")
    h, w = out.shape
    # the summed squares of thin marks, compiled; a size left over is box-filtered whole
    todo, start, known, free = fill_cells(
        out, np.ascontiguousarray(mask, dtype=bool), _FILL_SIZE_ARRAY, _GATHER_LIMIT
    )
    weight = None
    for size in _FILL_SIZES[start:]:
        if not len(todo):
            break
        if len(todo) * size * size <= _GATHER_LIMIT:
            ready = fill_squares(out.reshape(-1), known, free, todo, h, w, size)
        else:
            if weight is None:
                weight = free.astype(np.float32).reshape(h, w)
            num = ndimage.uniform_filter(known.reshape(h, w), size, mode="nearest")
            den = ndimage.uniform_filter(weight, size, mode="nearest").reshape(-1)[todo]
            ready = den > 1e-3
            out.reshape(-1)[todo[ready]] = num.reshape(-1)[todo][ready] / den[ready]
        todo = todo[~ready]
    return out
