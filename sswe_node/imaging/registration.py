"""Register the two panels of a dual capture: the shift from the elastogram to the plain panel."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.fft import next_fast_len

from sswe_node.imaging.boxes import PixelBox
from sswe_node.imaging.overlay import COLOUR_FRACTION

__all__ = ["panel_shift"]


def panel_shift(
    grey: NDArray[np.floating],
    mask: NDArray[np.bool_],
    overlay: PixelBox,
    bar: PixelBox | None,
) -> tuple[int, int] | None:
    """Find the shift from the elastogram panel to the plain panel showing the same tissue.

    Both panels of a dual capture show the same B-mode image, so the grey image (colour,
    overlay box and colour bar blanked) correlates with itself at the panel shift. The peak is
    found on a half-resolution autocorrelation, then refined and checked at full resolution.
    """
    h, w = grey.shape
    g = grey.astype(np.float32).copy()
    g[mask] = 0.0
    g[overlay.expanded(2).clipped(g.shape).slices] = 0.0
    if bar is not None:
        g[bar.expanded(4).clipped(g.shape).slices] = 0.0
    k = max(2, int(np.ceil(max(h, w) / 300)))
    hh, ww = h // k, w // k
    small = g[: hh * k, : ww * k].reshape(hh, k, ww, k).mean(axis=(1, 3))
    valid = small > 0
    small = np.where(valid, small - small[valid].mean() if valid.any() else 0.0, 0.0)
    size = (next_fast_len(2 * hh, real=True), next_fast_len(2 * ww, real=True))
    # Normalised cross-correlation of the image with itself at every shift, by FFT: the
    # energies of both overlapping parts come from correlating the squares with the support.
    spec = np.fft.rfft2(small, s=size)
    vspec = np.fft.rfft2(valid.astype(np.float32), s=size)
    qspec = np.fft.rfft2(small * small, s=size)
    ac = np.fft.irfft2(spec * np.conj(spec), s=size)
    overlap = np.fft.irfft2(vspec * np.conj(vspec), s=size)
    energy = np.fft.irfft2(qspec * np.conj(vspec), s=size) * np.fft.irfft2(
        vspec * np.conj(qspec), s=size
    )
    ok = (overlap > 0.05 * valid.sum()) & (energy > 0)
    ac = np.where(ok, ac / np.sqrt(np.where(ok, energy, 1.0)), -np.inf)
    # The copy of the SWE box in the plain panel cannot overlap the box itself, and must lie
    # inside the frame (for one of the two signs the autocorrelation cannot tell apart).
    dy = np.fft.fftfreq(size[0], 1.0 / size[0]).round().astype(int)[:, None] * k
    dx = np.fft.fftfreq(size[1], 1.0 / size[1]).round().astype(int)[None, :] * k
    apart = (np.abs(dy) >= overlay.height - k) | (np.abs(dx) >= overlay.width - k)

    def fits(sy: NDArray[np.int_], sx: NDArray[np.int_]) -> NDArray[np.bool_]:
        return (
            (overlay.top + sy >= -k)
            & (overlay.bottom + sy <= h + k)
            & (overlay.left + sx >= -k)
            & (overlay.right + sx <= w + k)
        )

    ac[~(apart & (fits(dy, dx) | fits(-dy, -dx)))] = -np.inf
    best = np.unravel_index(int(np.argmax(ac)), ac.shape)
    cand = (int(dy[best[0], 0]), int(dx[0, best[1]]))
    for sign in (1, -1):
        s = (cand[0] * sign, cand[1] * sign)
        refined = _refine_shift(g, overlay, s, radius=k)
        if refined is not None:
            roi = overlay.shifted(*refined)
            if roi.inside(g.shape) and mask[roi.slices].mean() < 2 * COLOUR_FRACTION:
                return refined
    return None


def _refine_shift(
    g: NDArray[np.float32], overlay: PixelBox, shift: tuple[int, int], radius: int
) -> tuple[int, int] | None:
    """Refine a shift within ``radius`` by correlation around the overlay; None if no match."""
    ring = overlay.expanded(max(8, overlay.height // 6)).clipped(g.shape)
    rows, cols = np.nonzero(g[ring.slices] > 0)
    if len(rows) < 200:
        return None
    stride = max(1, len(rows) // 8000)
    rows, cols = rows[::stride] + ring.top, cols[::stride] + ring.left
    a = g[rows, cols]
    h, w = g.shape

    def score(s: tuple[int, int]) -> float:
        r2, c2 = rows + s[0], cols + s[1]
        inside = (r2 >= 0) & (r2 < h) & (c2 >= 0) & (c2 < w)
        b = g[r2[inside], c2[inside]]
        use = b > 0
        if use.sum() < 200:
            return -1.0
        x, y = a[inside][use], b[use]
        x, y = x - x.mean(), y - y.mean()
        denom = float(np.sqrt((x * x).sum() * (y * y).sum()))
        return float((x * y).sum() / denom) if denom > 0 else -1.0

    # coarse (every other shift), then the neighbours of the best one
    step = 2 if radius > 2 else 1
    coarse = [
        (shift[0] + dy, shift[1] + dx)
        for dy in range(-radius, radius + 1, step)
        for dx in range(-radius, radius + 1, step)
    ]
    best = max(coarse, key=score)
    if step > 1:
        fine = [(best[0] + dy, best[1] + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        best = max(fine, key=score)
    if score(best) < 0.6:
        return None
    return best
