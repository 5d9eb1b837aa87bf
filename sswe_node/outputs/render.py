"""Compose the Secondary Capture picture: B-mode, sSWE overlay, colour bar and warning."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from sswe_node.imaging.colormap import jet_lut, render_colour_bar
from sswe_node.outputs.encoded import filled_buffer
from sswe_node.outputs.labels import TEXT_SIZE, WARNING, burn_texts, format_value, text_size

__all__ = [
    "render_capture",
    "capture_pixels",
    "OOD_BANNER",
    "OVERLAY_ALPHA",
    "MIN_PANEL_ROWS",
    "MAX_PANEL_COLUMNS",
]

#: Opacity of the colour overlay on the B-mode.
OVERLAY_ALPHA = 0.6
#: Small regions are enlarged (whole pixels) to at least this many rows, so labels fit.
MIN_PANEL_ROWS = 160
#: ... unless that would make a panel wider than this.
MAX_PANEL_COLUMNS = 1024

_MARGIN = 6
_GAP = 6
_BAR_WIDTH = 14
_WARNING_COLOUR = (255, 255, 0)
_TEXT_COLOUR = (255, 255, 255)
_BANNER_COLOUR = (255, 64, 64)
#: Hatching of uncertain pixels: a line every ``_HATCH_PERIOD`` pixels, in this grey.
_HATCH_PERIOD = 6
_HATCH_GREY = 160

#: Banner burned into captures of images unlike the model's training data.
OOD_BANNER = "OUTSIDE THE MODEL'S TRAINING DATA"


def _grey(bmode: NDArray[np.float32]) -> NDArray[np.uint8]:
    """Return the B-mode as 0-255 grey levels (NaN black)."""
    grey = np.fmax(bmode, np.float32(0))  # fmax also turns NaN into 0
    np.minimum(grey, np.float32(255), out=grey)
    out = np.empty(grey.shape, dtype=np.uint8)
    return np.rint(grey, out=out, casting="unsafe")  # rounding and casting in one pass


@lru_cache(maxsize=4)
def _blend_table(lut_bytes: bytes) -> NDArray[np.uint8]:
    """Return ``(256 * (n + 2), 3)``: every colour a pixel of the overlay panel can take.

    Row ``g * (n + 2) + c`` holds ``round((1 - alpha) * g + alpha * lut[c])`` (grey level
    ``g`` under entry ``c``) for ``c < n``, the plain grey ``g`` for ``c = n`` (no value, or
    colour withheld) and the hatching grey for ``c = n + 1``. The whole panel is then one
    table look-up.
    """
    lut = np.frombuffer(lut_bytes, dtype=np.uint8).reshape(-1, 3).astype(np.float32)
    grey = np.arange(256, dtype=np.float32)[:, None, None]
    blended = np.float32(1 - OVERLAY_ALPHA) * grey + np.float32(OVERLAY_ALPHA) * lut[None]
    table = np.empty((256, len(lut) + 2, 3), dtype=np.uint8)
    table[:, :-2] = np.rint(blended).astype(np.uint8)
    table[:, -2] = np.arange(256, dtype=np.uint8)[:, None]
    table[:, -1] = _HATCH_GREY
    table = table.reshape(-1, 3)
    table.flags.writeable = False
    return table


def _overlay(
    grey: NDArray[np.uint8],
    values: NDArray[np.float32],
    scale: tuple[float, float],
    lut: NDArray[np.uint8],
    uncertain: NDArray[np.bool_] | None = None,
) -> NDArray[np.uint8]:
    """Return the ``(rows, columns, 3)`` B-mode with the colour overlay.

    Grey where a value is NaN; where ``uncertain``, the plain B-mode crossed by diagonal
    hatching lines (colour withheld).
    """
    low, high = scale
    if high <= low:
        raise ValueError(f"vmax ({high}) must be greater than vmin ({low})")
    n = len(lut)
    # The blend table's row, in float32 (exact: every row is below 2**24), cast once.
    index = values - np.float32(low)
    index *= np.float32((n - 1) / (high - low))
    withheld = ~np.isfinite(index)
    if uncertain is not None:
        withheld |= uncertain
    np.maximum(index, np.float32(0), out=index)  # NaN stays NaN: it is withheld below
    np.minimum(index, np.float32(n - 1), out=index)
    np.rint(index, out=index)
    # Column n (plain grey) where withheld, n + 1 where hatched: both above every colour,
    # so one fmax picks them (and turns NaN into n) without slow masked assignments.
    code = withheld * np.float32(n)
    if uncertain is not None:
        code += uncertain & _diagonal(*uncertain.shape)
    np.fmax(index, code, out=index)
    index += grey * np.float32(n + 2)
    table = _blend_table(np.ascontiguousarray(lut, dtype=np.uint8).tobytes())
    return np.take(table, index.astype(np.intp), axis=0)


@lru_cache(maxsize=1)
def _default_lut() -> NDArray[np.uint8]:
    """Return the jet table (computed once)."""
    lut = jet_lut()
    lut.flags.writeable = False
    return lut


@lru_cache(maxsize=16)
def _colour_bar(rows: int, width: int, lut_bytes: bytes) -> NDArray[np.uint8]:
    bar = render_colour_bar(rows, width, np.frombuffer(lut_bytes, np.uint8).reshape(-1, 3))
    bar.flags.writeable = False
    return bar


def render_capture(
    bmode: NDArray[np.floating],
    values: NDArray[np.floating],
    scale: tuple[float, float],
    *,
    title: str,
    unit: str,
    lut: NDArray[np.uint8] | None = None,
    uncertain: NDArray[np.bool_] | NDArray[np.floating] | None = None,
    threshold: float | None = None,
    legend: str | None = None,
    banner: str | None = None,
) -> NDArray[np.uint8]:
    """Render the picture of a Secondary Capture.

    One compiled pass (:func:`sswe_node.outputs.kernels.compose_capture`) writes the cached
    frame (header texts, colour bar), the grey panel and the overlay panel; the pixels of
    texts that reach into the panels are set again afterwards.

    Parameters
    ----------
    bmode : numpy.ndarray
        ``(rows, columns)`` grey B-mode region, 0-255.
    values : numpy.ndarray
        ``(rows, columns)`` sSWE values on the same pixels (NaN: not shown).
    scale : tuple of float
        ``(min, max)`` of the colour bar.
    title : str
        Second header line (quantity, unit, model).
    unit : str
        Unit written next to the colour bar.
    lut : numpy.ndarray, optional
        Colour table (default the scanner-like jet table).
    uncertain : numpy.ndarray, optional
        ``(rows, columns)`` bool: pixels whose colour is withheld (plain grey B-mode with
        diagonal hatching), e.g. where the predicted standard deviation is too high. With
        ``threshold``: the standard deviation itself, uncertain where above ``threshold``
        (compared in its own dtype, as numpy compares it).
    threshold : float, optional
        See ``uncertain``.
    legend : str, optional
        A header line explaining the hatching.
    banner : str, optional
        A red header line (e.g. :data:`OOD_BANNER`).

    Returns
    -------
    numpy.ndarray
        ``(rows, columns, 3)`` uint8 RGB: a header with the warning, the banner, ``title`` and
        the legend, then the plain B-mode, the B-mode with the colour overlay and a labelled
        colour bar.
    """
    pixels, shape = capture_pixels(
        bmode, values, scale, title=title, unit=unit, lut=lut, uncertain=uncertain,
        threshold=threshold, legend=legend, banner=banner, allocate=np.empty,
    )  # fmt: skip
    return pixels


def capture_pixels(
    bmode: NDArray[np.floating],
    values: NDArray[np.floating],
    scale: tuple[float, float],
    *,
    title: str,
    unit: str,
    lut: NDArray[np.uint8] | None = None,
    uncertain: NDArray[np.bool_] | NDArray[np.floating] | None = None,
    threshold: float | None = None,
    legend: str | None = None,
    banner: str | None = None,
    allocate: Callable[..., NDArray[np.uint8]] | None = None,
) -> tuple[bytearray | NDArray[np.uint8], tuple[int, int, int]]:
    """Draw the picture of :func:`render_capture` straight into the buffer of its Pixel Data.

    Parameters are those of :func:`render_capture`; ``allocate(shape, dtype=np.uint8)``
    draws into an array of its own instead (what :func:`render_capture` returns).

    Returns
    -------
    tuple
        ``(pixels, shape)``: the RGB bytes, a ``bytearray`` (or the array), and
        ``(rows, columns, 3)``.
    """
    from sswe_node.outputs.kernels import compose_capture  # numba: imported when first drawn

    bmode = np.ascontiguousarray(bmode, dtype=np.float32)
    values = np.ascontiguousarray(values, dtype=np.float32)
    if bmode.ndim != 2 or bmode.shape != values.shape:
        raise ValueError(f"bmode {bmode.shape} and values {values.shape} must be equal 2D shapes")
    low, high = (float(v) for v in scale)
    if high <= low:
        raise ValueError(f"vmax ({high}) must be greater than vmin ({low})")
    lut = _default_lut() if lut is None else lut
    lut_bytes = np.ascontiguousarray(lut, dtype=np.uint8).tobytes()
    n = len(lut_bytes) // 3

    mask, limit = _uncertain_mask(uncertain, threshold, values.shape)

    # Enlarge small regions, but never beyond MAX_PANEL_COLUMNS (thin, wide regions).
    factor = min(math.ceil(MIN_PANEL_ROWS / bmode.shape[0]), MAX_PANEL_COLUMNS // bmode.shape[1])
    factor = max(1, factor)
    rows, cols = bmode.shape[0] * factor, bmode.shape[1] * factor
    frame = _frame(rows, cols, low, high, title, unit, legend, banner, lut_bytes)
    shape = frame.canvas.shape
    table = _blend_table(lut_bytes)
    step = np.float32((n - 1) / (high - low))

    def draw(canvas: NDArray[np.uint8]) -> None:  # every byte is written
        canvas = canvas.reshape(shape)
        fixed, top, end, x_overlay = frame.canvas, frame.top, frame.top + rows, frame.x_overlay
        canvas[:top] = fixed[:top]  # the frame around the panels
        canvas[end:] = fixed[end:]
        for start, stop in ((0, _MARGIN), (_MARGIN + cols, x_overlay), (x_overlay + cols, None)):
            canvas[top:end, start:stop] = fixed[top:end, start:stop]
        compose_capture(
            canvas, bmode, values, mask, limit, table, n, np.float32(low), step, top, _MARGIN,
            x_overlay, factor, _HATCH_PERIOD,
        )  # fmt: skip
        if len(frame.text_index):  # text reaching into the panels is drawn over them
            canvas.reshape(-1, 3)[frame.text_index] = frame.text_colour

    if allocate is not None:
        canvas = allocate(shape, dtype=np.uint8)
        draw(canvas)
        return canvas, shape
    return filled_buffer(frame.canvas.size, draw), shape


_NO_MASK = np.zeros((0, 0), dtype=np.uint8)


def _uncertain_mask(
    uncertain: NDArray | None, threshold: float | None, shape: tuple[int, ...]
) -> tuple[NDArray, np.generic]:
    """Return the kernel's ``(uncertain, threshold)``: above the threshold is uncertain."""
    if uncertain is None:
        return _NO_MASK, np.float32(0)
    uncertain = np.asarray(uncertain)
    if uncertain.shape != shape:
        raise ValueError(f"uncertain {uncertain.shape} must match values {shape}")
    if threshold is None:
        return np.ascontiguousarray(uncertain, dtype=bool).view(np.uint8), np.uint8(0)
    if uncertain.dtype == np.float32:  # numpy compares a float32 array in float32
        return np.ascontiguousarray(uncertain), np.float32(threshold)
    return np.ascontiguousarray(uncertain > threshold).view(np.uint8), np.uint8(0)


class _Frame(NamedTuple):
    """What a capture shows besides its two panels, drawn once per size, scale and texts."""

    canvas: NDArray[np.uint8]
    top: int
    x_overlay: int
    text_index: NDArray[np.intp]
    text_colour: NDArray[np.uint8]


# A frame is a few MB for large captures: keep those of a few geometries only.
@lru_cache(maxsize=16)
def _frame(
    rows: int,
    cols: int,
    low: float,
    high: float,
    title: str,
    unit: str,
    legend: str | None,
    banner: str | None,
    lut_bytes: bytes,
) -> _Frame:
    """Return the capture without its panels: header texts, colour bar and its labels.

    Everything here depends on the panel size, the scale, the texts and the colour table
    only (per model and geometry), so it is drawn once; the pixels of texts that fall on a
    panel are kept to be drawn again over each capture's panels.
    """
    size = max(TEXT_SIZE, rows // 40)  # text grows with large images, to stay readable
    bar_width = max(_BAR_WIDTH, size + 3)
    line_h = text_size("Hg", size)[0] + 3
    labels = [format_value(v) for v in (high, (low + high) / 2, low)]
    label_w = max(text_size(t, size)[1] for t in [*labels, unit]) + 4
    extra = [
        (text, colour)
        for text, colour in ((banner, _BANNER_COLOUR), (legend, _TEXT_COLOUR))
        if text
    ]
    header_h = (2 + len(extra)) * line_h + _MARGIN
    body_w = 2 * cols + 2 * _GAP + bar_width + label_w
    width = 2 * _MARGIN + max(
        body_w, *(text_size(text, size)[1] for text in [WARNING, title, *(t for t, _ in extra)])
    )
    height = header_h + line_h + rows + _MARGIN
    canvas = np.zeros((height, width, 3), dtype=np.uint8)

    top = header_h + line_h
    x_overlay = _MARGIN + cols + _GAP
    x_bar = x_overlay + cols + _GAP
    canvas[top : top + rows, x_bar : x_bar + bar_width] = _colour_bar(rows, bar_width, lut_bytes)

    text_h = text_size("0", size)[0]
    x_label = x_bar + bar_width + 3
    positions = (top, top + (rows - text_h) // 2, top + rows - text_h)
    header = [(WARNING, _WARNING_COLOUR), (banner, _BANNER_COLOUR), (title, _TEXT_COLOUR)]
    header += [(legend, _TEXT_COLOUR)]
    header = [(text, colour) for text, colour in header if text]
    lines = [
        (text, _MARGIN // 2 + k * line_h, _MARGIN, colour)
        for k, (text, colour) in enumerate(header)
    ]
    lines.append((unit, header_h, x_bar, _TEXT_COLOUR))
    lines += [(label, y, x_label, _TEXT_COLOUR) for label, y in zip(labels, positions, strict=True)]
    burn_texts(canvas, lines, size)

    written = burn_texts(
        np.zeros_like(canvas), [(t, y, x, (255, 255, 255)) for t, y, x, _ in lines], size
    )[..., 0].astype(bool)
    on_panels = np.zeros(written.shape, dtype=bool)
    on_panels[top : top + rows, _MARGIN : _MARGIN + cols] = True
    on_panels[top : top + rows, x_overlay : x_overlay + cols] = True
    text_index = np.flatnonzero(written & on_panels)
    text_colour = canvas.reshape(-1, 3)[text_index]
    for array in (canvas, text_index, text_colour):
        array.flags.writeable = False
    return _Frame(canvas, top, x_overlay, text_index, text_colour)


@lru_cache(maxsize=8)
def _diagonal(rows: int, cols: int) -> NDArray[np.bool_]:
    """Return the hatching pattern: one diagonal line every ``_HATCH_PERIOD`` pixels."""
    pattern = (np.arange(rows)[:, None] + np.arange(cols)[None, :]) % _HATCH_PERIOD == 0
    pattern.flags.writeable = False
    return pattern
