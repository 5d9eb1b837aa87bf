"""Colour maps for elastograms: values to colours (rendering) and the shared jet-like table.

Decoding colours back to values is done against the colour bar found in each image (see
``sswe_node.imaging.elastogram``), not against this table alone: scanners differ.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["jet_lut", "values_to_rgb", "render_colour_bar"]


def jet_lut(n: int = 256) -> NDArray[np.uint8]:
    """Return a jet-like colour table as SWE scanners display it (dark blue to dark red).

    Parameters
    ----------
    n : int
        Number of entries.

    Returns
    -------
    numpy.ndarray
        ``(n, 3)`` uint8 RGB table, entry 0 for the lowest value.
    """
    x = np.linspace(0.0, 1.0, n)
    r = np.clip(1.5 - np.abs(4.0 * x - 3.0), 0.0, 1.0)
    g = np.clip(1.5 - np.abs(4.0 * x - 2.0), 0.0, 1.0)
    b = np.clip(1.5 - np.abs(4.0 * x - 1.0), 0.0, 1.0)
    return np.round(np.stack([r, g, b], axis=1) * 255.0).astype(np.uint8)


def values_to_rgb(
    values: NDArray[np.floating],
    vmin: float,
    vmax: float,
    lut: NDArray[np.uint8] | None = None,
) -> NDArray[np.uint8]:
    """Map values onto a colour table.

    Parameters
    ----------
    values : numpy.ndarray
        Values of any shape (NaN maps to black).
    vmin, vmax : float
        The scale: ``vmin`` maps to the first entry, ``vmax`` (and above) to the last.
    lut : numpy.ndarray, optional
        ``(n, 3)`` uint8 table; default :func:`jet_lut`.

    Returns
    -------
    numpy.ndarray
        ``values.shape + (3,)`` uint8 RGB.
    """
    if vmax <= vmin:
        raise ValueError(f"vmax ({vmax}) must be greater than vmin ({vmin})")
    lut = jet_lut() if lut is None else lut
    values = np.asarray(values, dtype=np.float64)
    frac = np.clip((values - vmin) / (vmax - vmin), 0.0, 1.0)
    index = np.round(np.nan_to_num(frac, nan=0.0) * (len(lut) - 1)).astype(np.intp)
    rgb = lut[index]
    rgb[np.isnan(values)] = 0
    return rgb


def render_colour_bar(
    height: int, width: int, lut: NDArray[np.uint8] | None = None
) -> NDArray[np.uint8]:
    """Draw a vertical colour bar, highest value at the top.

    Parameters
    ----------
    height, width : int
        Size of the bar in pixels.
    lut : numpy.ndarray, optional
        ``(n, 3)`` uint8 table; default :func:`jet_lut`.

    Returns
    -------
    numpy.ndarray
        ``(height, width, 3)`` uint8 RGB.
    """
    lut = jet_lut() if lut is None else lut
    frac = np.linspace(1.0, 0.0, height)
    index = np.round(frac * (len(lut) - 1)).astype(np.intp)
    return np.repeat(lut[index][:, None, :], width, axis=1)
