"""Quasi-static strain elastography (QSE) of the second scanner, and its dual screen.

The non-SWE scanner of the paper (Philips iU22) offers quasi-static elastography: the operator
compresses and releases the tissue with the probe and the scanner shows the *relative* strain
(tissue deformation), soft tissue deforming more than stiff tissue. Model, on the strain box's
pixel grid (drawn per acquisition by :meth:`StrainSettings.draw`, recorded in ``archive.json``):

* stress: uniform axial stress from the probe decaying with depth, ``exp(-depth /
  stress_decay_mm)`` (the operator's compression is not uniform either);
* strain = stress x compliance (``1 / E``, E floored at 2 kPa; fluid decorrelates: cysts get
  noisy, unreliable strain), smoothed by the displacement estimator's kernel
  (``smoothing_mm``), with correlated multiplicative noise (``noise``, growing with depth);
* display: the scanner normalises by the mean strain in the box (relative, never absolute:
  ``relative = strain / mean``), then maps ``0.5 + gain * log2(relative) / 4`` to its colour
  table, ``gain`` being the operator-dependent contrast (how hard and how evenly they pressed).

The screen (:func:`render_strain_dual`) is a dual display like the SWE scanner's: strain over
the B-mode in the left panel (blended with ``opacity``), the plain B-mode on the right, and a
colour bar labelled "SOFT" / "HARD" (or "Soft" / "Hard", "S" / "H", "+" / "-") without any
kPa or m/s scale. Colour tables: ``"bgr"``
(hard blue, intermediate green, soft red, Hitachi-like) or ``"gr"`` (hard red, yellow, soft
green to teal).
All synthetic: not for diagnosis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw
from scipy import ndimage

from training.simulate.render import SYNTHETIC_NOTE, Box, Layout, _depth_ruler, _font, _outline
from training.simulate.tissue import TissueMaps

__all__ = ["StrainSettings", "StrainImage", "simulate_strain", "render_strain_dual", "strain_lut"]

_TEXT = (225, 225, 225)
#: Words at the (soft, hard) ends of strain colour bars, and how often each is drawn.
BAR_LABELS: tuple[tuple[str, str], ...] = (
    ("SOFT", "HARD"),
    ("Soft", "Hard"),
    ("S", "H"),
    ("+", "-"),
)
BAR_LABEL_SHARES = (0.6, 0.15, 0.1, 0.15)


@dataclass(frozen=True)
class StrainSettings:
    """One QSE acquisition (see the module docstring)."""

    stress_decay_mm: float = 40.0
    smoothing_mm: float = 2.0
    noise: float = 0.12
    noise_per_cm: float = 0.03
    gain: float = 1.0
    opacity: float = 0.7
    colour_map: str = "bgr"
    soft_on_top: bool = True
    labels: tuple[str, str] = ("SOFT", "HARD")

    @classmethod
    def draw(
        cls, rng: np.random.Generator, label_rng: np.random.Generator | None = None
    ) -> StrainSettings:
        """Draw the operator's and the scanner's settings of one acquisition.

        ``label_rng`` (a stream of its own, so that adding it changed no other draw) picks the
        bar's words from :data:`BAR_LABELS`; without it, "SOFT" / "HARD".
        """
        u = rng.uniform
        labels = ("SOFT", "HARD")
        if label_rng is not None:
            labels = BAR_LABELS[int(label_rng.choice(len(BAR_LABELS), p=BAR_LABEL_SHARES))]
        return cls(
            stress_decay_mm=float(u(25.0, 60.0)),
            smoothing_mm=float(u(1.5, 3.0)),
            noise=float(u(0.08, 0.2)),
            noise_per_cm=float(u(0.02, 0.05)),
            gain=float(u(0.6, 1.6)),
            opacity=float(u(0.55, 0.9)),
            colour_map=str(rng.choice(("bgr", "gr"))),
            soft_on_top=bool(u() < 0.7),
            labels=labels,
        )

    def record(self) -> dict[str, object]:
        """Return the settings as a JSON-able dict."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class StrainImage:
    """A QSE acquisition on the box grid: relative strain and its display index (0-1)."""

    relative: NDArray[np.float32]
    display: NDArray[np.float32]


def simulate_strain(
    maps: TissueMaps, rng: np.random.Generator, settings: StrainSettings
) -> StrainImage:
    """Simulate quasi-static strain over the maps (the strain box).

    Parameters
    ----------
    maps : TissueMaps
        Tissue on the strain box's grid.
    rng : numpy.random.Generator
        Source of the noise.
    settings : StrainSettings
        The acquisition.

    Returns
    -------
    StrainImage
    """
    s = settings
    dz, dx = maps.spacing_mm
    depth = (maps.z_mm - maps.z_mm[0]).astype(np.float32)[:, None]
    stress = np.exp(-depth / np.float32(s.stress_decay_mm))
    compliance = 1.0 / np.maximum(maps.modulus_kpa, 2.0)
    strain = ndimage.gaussian_filter(
        compliance * stress, (s.smoothing_mm / dz, s.smoothing_mm / dx), mode="nearest"
    )
    field = ndimage.gaussian_filter(
        rng.standard_normal(strain.shape, dtype=np.float32), (1.0 / dz, 1.0 / dx)
    )
    field /= max(float(field.std()), 1e-6)
    sd = s.noise + s.noise_per_cm * depth / 10.0 + 0.6 * maps.fluid  # fluid decorrelates
    strain = strain * np.exp(sd * field)
    relative = (strain / float(np.mean(strain))).astype(np.float32)
    display = np.clip(0.5 + s.gain * np.log2(relative) / 4.0, 0.0, 1.0).astype(np.float32)
    return StrainImage(relative, display)


def strain_lut(name: str, n: int = 256) -> NDArray[np.uint8]:
    """Return an ``(n, 3)`` colour table from hard (index 0) to soft (index n - 1)."""
    t = np.linspace(0.0, 1.0, n)
    if name == "bgr":  # hard blue, green, soft red
        knots = np.array([[0, 0, 200], [0, 200, 255], [0, 220, 0], [255, 230, 0], [230, 0, 0]])
    elif name == "gr":  # hard red, yellow, soft green (to teal)
        knots = np.array([[220, 0, 0], [255, 160, 0], [230, 230, 0], [40, 210, 0], [0, 190, 140]])
    else:
        raise ValueError(f"unknown strain colour map {name!r}")
    pos = np.linspace(0.0, 1.0, len(knots))
    lut = np.stack([np.interp(t, pos, knots[:, c]) for c in range(3)], axis=1)
    return np.round(lut).astype(np.uint8)


def render_strain_dual(
    bmode: NDArray[np.uint8],
    display: NDArray[np.float32],
    box: Box,
    settings: StrainSettings,
    *,
    spacing_mm: float,
    top_mm: float,
    header: str = "",
) -> tuple[NDArray[np.uint8], Layout]:
    """Render the dual B-mode / strain screen (strain panel left, plain B-mode right).

    Returns the RGB frame and a :class:`Layout` with ``strain_panel``, ``bmode_panel``,
    ``strain_box``, ``bmode_box`` and ``colour_bar``.
    """
    h, w = bmode.shape
    head, margin, gap, foot, bar_area = 50, 44, 18, 34, 96
    rows, cols = head + h + foot, margin + 2 * w + gap + bar_area
    strain_panel = Box(head, margin, head + h, margin + w)
    plain = strain_panel.shifted(0, w + gap)
    bar_h = min(200, h - 60)
    bar = Box(head + 30, plain.right + 34, head + 30 + bar_h, plain.right + 48)
    lut = strain_lut(settings.colour_map)

    frame = np.zeros((rows, cols, 3), dtype=np.uint8)
    grey = np.repeat(bmode[:, :, None], 3, axis=2)
    frame[plain.slices] = grey
    panel = grey.copy()
    region = panel[box.slices].astype(np.float32)
    colour = lut[np.round(display * (len(lut) - 1)).astype(np.intp)].astype(np.float32)
    region = (1.0 - settings.opacity) * region + settings.opacity * colour
    panel[box.slices] = np.round(region).astype(np.uint8)
    frame[strain_panel.slices] = panel
    ramp = lut[::-1] if settings.soft_on_top else lut  # top row first
    idx = np.linspace(0, len(lut) - 1, bar.height).round().astype(np.intp)
    frame[bar.slices] = ramp[idx][:, None, :]

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    for p in (strain_panel, plain):
        _outline(draw, p, (90, 90, 90))
        _outline(draw, box.shifted(p.top, p.left), (210, 210, 210))
        _depth_ruler(draw, p, spacing_mm, top_mm, side="right" if p is plain else "left")
    draw.text((margin, 8), "ELASTO  " + header, fill=_TEXT, font=_font(14))
    draw.text((margin, 28), SYNTHETIC_NOTE, fill=(200, 200, 90), font=_font(11))
    soft, hard = settings.labels
    top_word, bottom_word = (soft, hard) if settings.soft_on_top else (hard, soft)
    draw.text((bar.left - 6, bar.top - 20), top_word, fill=_TEXT, font=_font(13))
    draw.text((bar.left - 6, bar.bottom + 6), bottom_word, fill=_TEXT, font=_font(13))
    frame = np.asarray(image)
    layout = Layout(rows, cols)
    layout.boxes = {
        "strain_panel": strain_panel,
        "bmode_panel": plain,
        "strain_box": box.shifted(strain_panel.top, strain_panel.left),
        "bmode_box": box.shifted(plain.top, plain.left),
        "colour_bar": bar,
    }
    return frame, layout
