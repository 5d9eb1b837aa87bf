"""Turn a colour-coded SWE box into values by inverting the colour bar found in the same image.

The bar is sampled row by row (top = scale maximum, bottom = minimum) and every pixel of the box
is given the value of the nearest bar colour in CIELAB. A lookup table over a quantised RGB cube
(64 levels per channel, filled lazily for the cells in use) makes this one indexing operation
per pixel; tables are cached per bar.

Semi-transparent overlays are unmixed first: a scanner shows
``observed = a * colour + (1 - a) * grey`` where ``grey`` is the B-mode under the box, known
from the matching pixel of the plain B-mode panel. The opacity ``a`` is estimated once per box
as the value that brings the unmixed colours closest to the bar.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from scipy.spatial import cKDTree
from skimage.color import rgb2lab

from sswe_node.errors import ElastogramDecodeError
from sswe_node.imaging.colour_bar import along_bar
from sswe_node.imaging.colour_bar import chroma as _chroma

logger = logging.getLogger(__name__)

__all__ = [
    "ColourBar",
    "Elastogram",
    "sample_colour_bar",
    "decode_elastogram",
    "read_ssi_quantification",
]

_LEVELS = 64
_STEP = 256 // _LEVELS
#: Lab distance at which the confidence of a decoded pixel reaches 0.
_CONFIDENCE_DISTANCE = 25.0
#: Median Lab distance above which a box does not match its colour bar at all.
_MAX_MEDIAN_DISTANCE = 12.0


@dataclass(frozen=True)
class ColourBar:
    """A sampled colour bar: one RGB colour per step along the bar, maximum first."""

    colours: NDArray[np.float32]
    scale: tuple[float, float]

    @property
    def values(self) -> NDArray[np.float64]:
        """Value of each sampled row (top = scale maximum, bottom = minimum)."""
        lo, hi = self.scale
        return np.linspace(hi, lo, len(self.colours))

    @functools.cached_property
    def values32(self) -> NDArray[np.float32]:
        """:attr:`values` as float32."""
        return self.values.astype(np.float32)

    @functools.cached_property
    def chroma(self) -> NDArray[np.float32]:
        """Colour content (max - min of R, G, B) of each sampled colour."""
        return _chroma(self.colours)

    @functools.cached_property
    def key(self) -> bytes:
        """The colours as bytes: the cache key of the lookup table."""
        return np.ascontiguousarray(self.colours, dtype=np.float32).tobytes()


@dataclass(frozen=True)
class Elastogram:
    """A decoded SWE box.

    Attributes
    ----------
    values : numpy.ndarray
        float32 values in the unit of the scale, NaN where void.
    confidence : numpy.ndarray
        float32 0-1 (0 where void).
    opacity : float
        The estimated overlay opacity (1 for opaque overlays).
    source : str
        ``"colour-bar"`` or ``"ssi-private"``.
    """

    values: NDArray[np.float32]
    confidence: NDArray[np.float32]
    opacity: float
    source: str = "colour-bar"


def sample_colour_bar(bar_pixels: NDArray[np.floating], scale: tuple[float, float]) -> ColourBar:
    """Sample a colour bar: the median colour across the middle of the bar at each step.

    Parameters
    ----------
    bar_pixels : numpy.ndarray
        ``(h, w, 3)`` RGB pixels of the bar, 0-255: vertical (maximum at the top) or, when
        wider than tall, horizontal (maximum on the right).
    scale : tuple of float
        ``(min, max)`` values of the bottom (left) and top (right) of the bar.

    Returns
    -------
    ColourBar
    """
    lo, hi = scale
    if not hi > lo:
        raise ElastogramDecodeError(f"the colour bar scale must increase, got {scale}")
    bar_pixels = along_bar(bar_pixels)
    w = bar_pixels.shape[1]
    core = bar_pixels[:, w // 4 : w - w // 4 or w]
    colours = np.median(core, axis=1).astype(np.float32)
    return ColourBar(colours, (float(lo), float(hi)))


class _CubeTable:
    """Nearest bar row and its Lab distance per cell of the quantised RGB cube, filled lazily.

    Only the cells that pixels actually fall in are computed (a few thousand per image), so a
    new bar (e.g. one re-sampled from a JPEG capture) costs milliseconds, not a full cube.
    """

    def __init__(self, colours: NDArray[np.float32]) -> None:
        self.tree = cKDTree(rgb2lab(colours[None, :, :] / 255.0)[0])
        self.index = np.full(_LEVELS**3, -1, dtype=np.int32)
        self.dist = np.zeros(_LEVELS**3, dtype=np.float32)

    def lookup(self, cell: NDArray[np.int32]) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        index = self.index[cell]
        missing = index < 0
        if missing.any():
            todo = np.unique(cell[missing])
            levels = np.stack([todo >> 12, (todo >> 6) & 63, todo & 63], axis=-1)
            centres = (levels.astype(np.float32) * _STEP + (_STEP - 1) / 2.0) / 255.0
            dist, nearest = self.tree.query(rgb2lab(centres[None])[0], workers=1)
            self.index[todo] = nearest
            self.dist[todo] = dist
            index = self.index[cell]
        return index, self.dist[cell]


@functools.lru_cache(maxsize=16)
def _cube_table(colours_key: bytes, n: int) -> _CubeTable:
    return _CubeTable(np.frombuffer(colours_key, dtype=np.float32).reshape(n, 3))


def _lookup(
    bar: ColourBar, rgb: NDArray[np.floating] | NDArray[np.uint8]
) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """Nearest bar row and Lab distance for RGB pixels (``(..., 3)``, 0-255)."""
    if rgb.dtype == np.uint8:
        q = [rgb[..., c] >> 2 for c in range(3)]
    else:
        q = [np.clip(rgb[..., c], 0.0, 255.0).astype(np.uint8) >> 2 for c in range(3)]
    return _lookup_levels(bar, q)


def _lookup_levels(
    bar: ColourBar, q: list[NDArray[np.uint8]]
) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """Like :func:`_lookup`, from the three quantised channels (0-63)."""
    cell = (q[0].astype(np.int32) << 12) | (q[1].astype(np.int32) << 6) | q[2]
    return _cube_table(bar.key, len(bar.colours)).lookup(cell)


def _unmixed_levels(
    overlay: NDArray[np.uint8], grey: NDArray[np.float32], a: float
) -> list[NDArray[np.uint8]]:
    """Quantised unmixed colours ``(observed - (1 - a) * grey) / a`` through a 256 x 256 table."""
    levels = np.arange(256, dtype=np.float32)
    table = (levels[:, None] - np.float32(1.0 - a) * levels[None, :]) * np.float32(1.0 / a)
    table = (np.clip(np.rint(table), 0.0, 255.0).astype(np.uint8) >> 2).ravel()
    g = np.clip(np.rint(grey), 0, 255).astype(np.intp)
    return [table[overlay[..., c].astype(np.intp) * 256 + g] for c in range(3)]


def decode_elastogram(
    overlay: NDArray[np.floating] | NDArray[np.uint8],
    underlay: NDArray[np.floating] | None,
    bar: ColourBar,
    *,
    opacity: float | None = None,
) -> Elastogram:
    """Decode the pixels of a SWE box.

    Parameters
    ----------
    overlay : numpy.ndarray
        ``(h, w, 3)`` RGB pixels of the SWE box, 0-255 (uint8 or float).
    underlay : numpy.ndarray, optional
        ``(h, w)`` grey pixels of the plain B-mode panel at the same place; needed for
        semi-transparent overlays. None assumes an opaque overlay.
    bar : ColourBar
        The sampled colour bar.
    opacity : float, optional
        The overlay opacity if known; estimated otherwise.

    Returns
    -------
    Elastogram

    Raises
    ------
    ElastogramDecodeError
        The box has no coloured pixels or its colours do not match the bar.
    """
    ch = _chroma(overlay)
    coloured = ch > 12
    if np.count_nonzero(coloured) < 16:
        raise ElastogramDecodeError("the SWE box has no colour-coded pixels to decode")
    grey = None if underlay is None else underlay.astype(np.float32, copy=False)
    if opacity is None:
        if grey is None:
            opacity = 1.0
        else:
            # A sparse grid of pixels is plenty for one global opacity.
            step = max(1, int(np.sqrt(coloured.size / 3000)))
            few = coloured[::step, ::step]
            obs_c = overlay[::step, ::step][few].astype(np.float32)
            opacity = _estimate_opacity(obs_c, grey[::step, ::step][few][:, None], bar)
    a = float(np.clip(opacity, 0.05, 1.0))
    if a >= 0.999 or grey is None:
        index, dist = _lookup(bar, overlay)
    elif overlay.dtype == np.uint8:
        index, dist = _lookup_levels(bar, _unmixed_levels(overlay, grey, a))
    else:
        unmixed = (overlay - np.float32(1.0 - a) * grey[..., None]) * np.float32(1.0 / a)
        index, dist = _lookup(bar, unmixed)
    grey_limit = max(10.0, 0.3 * a * 128.0)
    # Grey pixels are voids, unless the bar itself is that grey there (black or white ends).
    void = (ch < grey_limit) & (bar.chroma[index] * np.float32(a) >= 2.0 * grey_limit)
    if grey is not None:
        diff = np.abs(overlay[..., 0] - grey)
        for c in (1, 2):
            np.maximum(diff, np.abs(overlay[..., c] - grey), out=diff)
        void |= diff < 6.0 * a
    step = max(1, int(np.sqrt(void.size / 6000)))
    valid_dist = dist[::step, ::step][~void[::step, ::step]]
    median = float(np.median(valid_dist)) if valid_dist.size else float("inf")
    if median > _MAX_MEDIAN_DISTANCE:
        raise ElastogramDecodeError(
            "the colours in the SWE box do not match the colour bar "
            f"(median colour distance of the coloured pixels {median:.1f} in CIELAB)"
        )
    values = bar.values32[index]
    values[void] = np.nan
    confidence = np.clip(1.0 - dist * np.float32(1.0 / _CONFIDENCE_DISTANCE), 0.0, 1.0)
    confidence[void] = 0.0
    return Elastogram(values, confidence.astype(np.float32, copy=False), a)


def _estimate_opacity(obs: NDArray[np.float32], grey: NDArray[np.float32], bar: ColourBar) -> float:
    """Opacity bringing unmixed colours closest to the bar (coarse grid, then refined).

    Unmixing with too low an opacity pushes colours outside the RGB cube; that overshoot is
    added to the colour distance so that the minimum is well defined.
    """
    if len(obs) > 1500:
        pick = np.linspace(0, len(obs) - 1, 1500).astype(np.intp)
        obs, grey = obs[pick], grey[pick]

    def costs(alphas: NDArray[np.floating]) -> NDArray[np.float64]:
        a = alphas.astype(np.float32)[:, None, None]
        colour = (obs[None] - (1.0 - a) * grey[None]) / a
        overshoot = np.maximum(colour - 255.0, 0.0) + np.maximum(-colour, 0.0)
        _, dist = _lookup(bar, colour)
        return dist.mean(axis=1) + 0.25 * overshoot.mean(axis=(1, 2))

    if costs(np.array([1.0]))[0] < 3.0:
        return 1.0
    coarse = np.linspace(0.1, 1.0, 10)
    best = float(coarse[int(np.argmin(costs(coarse)))])
    fine = np.clip(np.linspace(best - 0.05, best + 0.05, 11), 0.05, 1.0)
    return float(fine[int(np.argmin(costs(fine)))])


#: SuperSonic Imagine keeps raw quantification data in a private block of group 8FF1.
SSI_PRIVATE_CREATOR = "SSI Rich Quantification Group"
_SSI_GROUP = 0x8FF1


def read_ssi_quantification(
    ds: Dataset, shape: tuple[int, int]
) -> tuple[NDArray[np.float32], NDArray[np.float32]] | None:
    """Read raw SWE values and their quality map from the SSI private block, when present.

    The layout assumed (no public specification exists): element ``(8FF1,xx01)`` holds the
    elastogram of the SWE box as little-endian float32 (row-major, the box's shape, kPa or m/s
    as displayed), and ``(8FF1,xx02)`` the quality map (float32, 0-1) of the same shape. Data of
    another size is ignored with a log message, and colour decoding is used instead.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The instance.
    shape : tuple of int
        ``(rows, cols)`` of the SWE box in source pixels.

    Returns
    -------
    tuple of numpy.ndarray or None
        ``(values, quality)`` or None when absent or unusable.
    """
    try:
        block = ds.private_block(_SSI_GROUP, SSI_PRIVATE_CREATOR)
    except KeyError:
        return None
    arrays = []
    for offset in (0x01, 0x02):
        if offset not in block:
            return None
        raw = block[offset].value
        if not isinstance(raw, bytes | bytearray):
            return None
        data = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<f4")
        if data.size != shape[0] * shape[1]:
            logger.info(
                "SSI quantification data of %d values does not fit the %dx%d SWE box; ignored",
                data.size,
                *shape,
            )
            return None
        arrays.append(data.reshape(shape).astype(np.float32))
    values, quality = arrays
    values = np.where(np.isfinite(values) & (values >= 0), values, np.nan).astype(np.float32)
    quality = np.clip(np.nan_to_num(quality, nan=0.0), 0.0, 1.0).astype(np.float32)
    return values, quality
