"""Compose the Secondary Capture picture: B-mode, sSWE overlay, colour bar and warning."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from sswe_node.imaging.colormap import jet_lut, render_colour_bar, values_to_rgb
from sswe_node.outputs.labels import TEXT_SIZE, WARNING, draw_texts, format_value, text_size

__all__ = ["render_capture", "OVERLAY_ALPHA", "MIN_PANEL_ROWS", "MAX_PANEL_COLUMNS"]

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


def _grey(bmode: NDArray[np.floating]) -> NDArray[np.uint8]:
    grey = np.clip(np.nan_to_num(np.asarray(bmode, dtype=np.float32), nan=0.0), 0, 255)
    return np.repeat(np.round(grey).astype(np.uint8)[..., None], 3, axis=2)


def render_capture(
    bmode: NDArray[np.floating],
    values: NDArray[np.floating],
    scale: tuple[float, float],
    *,
    title: str,
    unit: str,
    lut: NDArray[np.uint8] | None = None,
) -> NDArray[np.uint8]:
    """Render the picture of a Secondary Capture.

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

    Returns
    -------
    numpy.ndarray
        ``(rows, columns, 3)`` uint8 RGB: a header with the warning and ``title``, then the
        plain B-mode, the B-mode with the colour overlay and a labelled colour bar.
    """
    bmode = np.asarray(bmode, dtype=np.float32)
    values = np.asarray(values, dtype=np.float32)
    if bmode.ndim != 2 or bmode.shape != values.shape:
        raise ValueError(f"bmode {bmode.shape} and values {values.shape} must be equal 2D shapes")
    low, high = (float(v) for v in scale)
    lut = jet_lut() if lut is None else lut

    grey = _grey(bmode)
    colour = values_to_rgb(values, low, high, lut)
    blended = np.float32(1 - OVERLAY_ALPHA) * grey + np.float32(OVERLAY_ALPHA) * colour
    overlay = np.where(np.isfinite(values)[..., None], np.round(blended).astype(np.uint8), grey)

    # Enlarge small regions, but never beyond MAX_PANEL_COLUMNS (thin, wide regions).
    factor = min(math.ceil(MIN_PANEL_ROWS / bmode.shape[0]), MAX_PANEL_COLUMNS // bmode.shape[1])
    factor = max(1, factor)
    if factor > 1:
        grey = grey.repeat(factor, axis=0).repeat(factor, axis=1)
        overlay = overlay.repeat(factor, axis=0).repeat(factor, axis=1)
    rows, cols = grey.shape[:2]

    size = max(TEXT_SIZE, rows // 40)  # text grows with large images, to stay readable
    bar_width = max(_BAR_WIDTH, size + 3)
    line_h = text_size("Hg", size)[0] + 3
    labels = [format_value(v) for v in (high, (low + high) / 2, low)]
    label_w = max(text_size(t, size)[1] for t in [*labels, unit]) + 4
    header_h = 2 * line_h + _MARGIN
    body_w = 2 * cols + 2 * _GAP + bar_width + label_w
    width = 2 * _MARGIN + max(body_w, text_size(WARNING, size)[1], text_size(title, size)[1])
    height = header_h + line_h + rows + _MARGIN
    canvas = np.zeros((height, width, 3), dtype=np.uint8)

    top = header_h + line_h
    canvas[top : top + rows, _MARGIN : _MARGIN + cols] = grey
    x_overlay = _MARGIN + cols + _GAP
    canvas[top : top + rows, x_overlay : x_overlay + cols] = overlay
    x_bar = x_overlay + cols + _GAP
    canvas[top : top + rows, x_bar : x_bar + bar_width] = render_colour_bar(rows, bar_width, lut)

    text_h = text_size("0", size)[0]
    x_label = x_bar + bar_width + 3
    positions = (top, top + (rows - text_h) // 2, top + rows - text_h)
    lines = [
        (WARNING, _MARGIN // 2, _MARGIN, _WARNING_COLOUR),
        (title, _MARGIN // 2 + line_h, _MARGIN, _TEXT_COLOUR),
        (unit, header_h, x_bar, _TEXT_COLOUR),
    ]
    lines += [(label, y, x_label, _TEXT_COLOUR) for label, y in zip(labels, positions, strict=True)]
    return draw_texts(canvas, lines, size)
