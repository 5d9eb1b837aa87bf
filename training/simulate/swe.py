"""The simulated shear-wave elastography acquisition: blurred, noisy modulus and its confidence.

Model, on the SWE box's pixel grid:

* resolution: the true Young's modulus blurred by a Gaussian of ``resolution_mm`` (SWE pixels
  are ~1-2 mm; small stiff lesions are under-estimated, as on real scanners);
* noise: multiplicative, spatially correlated (``noise_corr_mm``), standard deviation
  ``noise + noise_per_cm * depth``;
* confidence (0-1): a logistic fall-off with depth (half at ``half_depth_mm``, +-6 mm per
  acquisition and +-4 mm smoothly across the box), times
  ``1 - fluid`` (no shear waves in fluid), times ``sqrt(transmission)`` in shadows, times random
  low-quality patches, reduced in very stiff tissue (> 100 kPa) where waves attenuate;
* artefacts (:meth:`SweSettings.draw` draws them per acquisition; 0 = off): noise grows where
  the confidence is low (``edge_noise`` x (1 - confidence), noisy low-confidence edges of
  voids), the lateral edges of the box are biased by ``box_edge_bias`` and lose confidence over
  ``box_edge_mm`` (shear waves enter the box from its sides), probe pressure stiffens the
  tissue right under the top of the box (``precompression``, decaying over 4 mm), and shadows
  void the signal below calcifications (confidence x ``transmission ** shadow_exponent``);
* display: pixels with confidence below ``display_threshold`` are void (no colour, NaN in
  ``swe``).

Values are Young's modulus in kPa (``quantity="youngs-modulus"``) or shear-wave speed in m/s
(``quantity="shear-wave-speed"``, ``c = sqrt(E / 3)``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from training.simulate.tissue import TissueMaps, modulus_to_speed

__all__ = ["SweSettings", "SweAcquisition", "acquire_swe"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweSettings:
    """Parameters of the SWE acquisition model (see the module docstring)."""

    resolution_mm: float = 1.2
    noise: float = 0.06
    noise_per_cm: float = 0.025
    noise_corr_mm: float = 1.0
    half_depth_mm: float = 60.0
    depth_width_mm: float = 6.0
    display_threshold: float = 0.35
    edge_noise: float = 0.0
    box_edge_mm: float = 0.0
    box_edge_bias: float = 0.0
    precompression: float = 0.0
    shadow_exponent: float = 0.5

    @classmethod
    def draw(cls, rng: np.random.Generator, half_depth_mm: float) -> SweSettings:
        """Draw the artefacts and quality of one acquisition."""
        u = rng.uniform
        return cls(
            noise=float(u(0.04, 0.09)),
            noise_per_cm=float(u(0.015, 0.035)),
            half_depth_mm=half_depth_mm * float(u(0.85, 1.1)),
            edge_noise=float(u(0.15, 0.45)),
            box_edge_mm=float(u(1.0, 3.0)),
            box_edge_bias=float(u(-0.25, 0.25)),
            precompression=float(u(0.0, 0.35)),
            shadow_exponent=float(u(0.5, 1.2)),
        )

    def record(self) -> dict[str, float]:
        """Return the settings as a JSON-able dict."""
        return {k: round(float(v), 4) for k, v in self.__dict__.items()}


@dataclass
class SweAcquisition:
    """An SWE acquisition on the box grid.

    Attributes
    ----------
    true_values : ndarray float32
        The true stiffness in ``unit`` (0 in fluid).
    swe : ndarray float32
        The scanner's estimate in ``unit``; NaN where void (not displayed).
    confidence : ndarray float32
        0-1.
    quantity, unit : str
    """

    true_values: NDArray[np.float32]
    swe: NDArray[np.float32]
    confidence: NDArray[np.float32]
    quantity: str
    unit: str


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, ...], sigma_px: tuple[float, float]
) -> NDArray[np.float32]:
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_px)
    std = float(field.std())
    return field / std if std > 0 else field


def acquire_swe(
    maps: TissueMaps,
    rng: np.random.Generator,
    quantity: str = "youngs-modulus",
    settings: SweSettings | None = None,
) -> SweAcquisition:
    """Simulate the SWE acquisition over the maps (the SWE box).

    Parameters
    ----------
    maps : TissueMaps
        Tissue on the SWE box's pixel grid.
    rng : numpy.random.Generator
        Source of the noise.
    quantity : {"youngs-modulus", "shear-wave-speed"}
        What the scanner reports.
    settings : SweSettings, optional
        Model parameters (defaults: :class:`SweSettings`).

    Returns
    -------
    SweAcquisition
    """
    s = settings or SweSettings()
    dz, dx = maps.spacing_mm
    shape = maps.modulus_kpa.shape
    true_e = maps.modulus_kpa
    blurred = ndimage.gaussian_filter(
        true_e, (s.resolution_mm / dz, s.resolution_mm / dx), mode="nearest"
    )
    depth_cm = (maps.z_mm / 10.0).astype(np.float32)[:, None]
    corr = (s.noise_corr_mm / dz, s.noise_corr_mm / dx)
    sd = s.noise + s.noise_per_cm * depth_cm
    noise = _smooth_noise(rng, shape, corr)

    # penetration varies across the box (coupling, tissue): +-4 mm smooth lateral variation
    lateral = ndimage.gaussian_filter1d(rng.standard_normal(shape[1]), 3.0 / dx, mode="nearest")
    lateral = 4.0 * lateral / max(float(lateral.std()), 1e-6)
    half = s.half_depth_mm + float(rng.uniform(-6.0, 6.0)) + lateral[None, :]
    depth = 1.0 / (1.0 + np.exp((maps.z_mm[:, None] - half) / s.depth_width_mm))
    fluid = ndimage.gaussian_filter(maps.fluid, (0.8 / dz, 0.8 / dx))
    patches = np.clip(1.2 + 0.35 * _smooth_noise(rng, shape, (4.0 / dz, 4.0 / dx)), 0.0, 1.0)
    stiff = np.clip(1.0 - (blurred - 100.0) / 150.0, 0.5, 1.0)
    shadow = np.minimum(maps.transmission, 1) ** s.shadow_exponent
    conf = depth * np.clip(1.0 - 1.5 * fluid, 0.0, 1.0) * shadow
    conf = np.clip(conf * patches * stiff, 0.0, 1.0).astype(np.float32)
    bias = np.ones(shape, dtype=np.float32)
    if s.box_edge_mm > 0:
        cols = np.arange(shape[1]) * dx
        edge = np.exp(-np.minimum(cols, cols[-1] - cols) / s.box_edge_mm)[None, :]
        bias *= (1.0 + s.box_edge_bias * edge).astype(np.float32)
        conf *= (1.0 - 0.6 * edge).astype(np.float32)
    if s.precompression > 0:
        below_top = (maps.z_mm - maps.z_mm[0])[:, None]
        bias *= (1.0 + s.precompression * np.exp(-below_top / 4.0)).astype(np.float32)
    sd = sd + s.edge_noise * (1.0 - conf)
    measured = blurred * bias * np.exp(sd * noise)

    if quantity == "youngs-modulus":
        true_v, meas_v, unit = true_e.astype(np.float32), measured.astype(np.float32), "kPa"
    elif quantity == "shear-wave-speed":
        true_v, meas_v, unit = modulus_to_speed(true_e), modulus_to_speed(measured), "m/s"
    else:
        raise ValueError(f"unknown quantity {quantity!r}")
    swe = np.where(conf >= s.display_threshold, meas_v, np.nan).astype(np.float32)
    return SweAcquisition(true_v, swe, conf, quantity, unit)
