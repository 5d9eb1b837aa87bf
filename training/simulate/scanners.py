"""The simulated scanners: identity, probe, display chain and image geometry of each rendering."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from training.simulate.bmode import Display, Probe

__all__ = [
    "Geometry",
    "Scanner",
    "SWE_SCANNER",
    "OTHER_SCANNER",
    "DUAL_GEOMETRY",
    "FULL_GEOMETRY",
    "OTHER_GEOMETRY",
    "SETUPS",
    "Setup",
    "SIMULATOR_MANUFACTURER",
]

#: Manufacturer (0008,0070) of every simulated scanner; tells simulated training data apart.
SIMULATOR_MANUFACTURER = "SSWE Simulator"


@dataclass(frozen=True)
class Geometry:
    """Pixel grid of an imaging region: ``rows`` x ``cols`` at ``spacing_mm``, from ``top_mm``.

    ``kind`` is the probe's image shape: ``"linear"`` (a rectangle), ``"convex"`` or
    ``"endocavity"`` (a sector from a virtual apex ``apex_mm`` behind the probe face, of half
    opening angle ``half_angle_deg``; pixels outside the fan are black).
    """

    rows: int
    cols: int
    spacing_mm: float
    top_mm: float = 1.0
    kind: str = "linear"
    apex_mm: float = 0.0
    half_angle_deg: float = 90.0

    def axes(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Return ``(x_mm, z_mm)``: lateral position of each column, depth of each row."""
        x = (np.arange(self.cols) - (self.cols - 1) / 2.0) * self.spacing_mm
        z = self.top_mm + np.arange(self.rows) * self.spacing_mm
        return x, z

    def fan_mask(self) -> NDArray[np.bool_] | None:
        """Return the pixels inside the sector (None for a linear probe: all of them)."""
        if self.kind == "linear":
            return None
        x, z = self.axes()
        ax = np.abs(x)
        depth = z + self.apex_mm
        limit = depth * np.tan(np.radians(self.half_angle_deg))
        # |x| <= depth * tan(angle) decides all but the pixels right on the fan's edge, where
        # the angles themselves are compared (the result of comparing angles everywhere)
        inside = ax[None, :] <= limit[:, None]
        order = np.argsort(ax, kind="stable")
        sorted_ax = ax[order]
        lo = np.searchsorted(sorted_ax, limit * (1 - 1e-9) - 1e-9, side="left")
        hi = np.searchsorted(sorted_ax, limit * (1 + 1e-9) + 1e-9, side="right")
        for row in np.flatnonzero(hi > lo):
            cols = order[lo[row] : hi[row]]
            angle = np.degrees(np.arctan2(ax[cols], depth[row]))
            inside[row, cols] = angle <= self.half_angle_deg
        if depth[0] <= self.apex_mm:  # rows at or above the probe face: the radius decides too
            inside &= np.hypot(x[None, :], depth[:, None]) >= self.apex_mm
        return inside


@dataclass(frozen=True)
class Scanner:
    """A simulated ultrasound system."""

    manufacturer: str
    model_name: str
    serial: str
    software: str
    station: str
    probe: Probe
    display: Display
    has_swe: bool


SWE_SCANNER = Scanner(
    manufacturer=SIMULATOR_MANUFACTURER,
    model_name="SWE-Sim Aixplorer-like",
    serial="SIM-SWE-0001",
    software="sswe-sim 1.0",
    station="SIMSWE01",
    probe=Probe(name="SE12-3-like", centre_frequency_mhz=6.0, bandwidth=0.7, f_number=1.5),
    display=Display(gain_db=-22.0, dynamic_range_db=60.0, tgc_db_cm=5.4, noise_db=-58.0),
    has_swe=True,
)

OTHER_SCANNER = Scanner(
    manufacturer=SIMULATOR_MANUFACTURER,
    model_name="BMode-Sim iU22-like",
    serial="SIM-BM-0002",
    software="sswe-sim 1.0",
    station="SIMBM02",
    probe=Probe(
        name="C10-3v-like", centre_frequency_mhz=4.5, bandwidth=0.6, pitch_mm=0.25, f_number=2.0
    ),
    display=Display(gain_db=-18.0, dynamic_range_db=55.0, tgc_db_cm=4.2, noise_db=-55.0),
    has_swe=False,
)

#: SWE scanner, each panel of the dual display (0.16 mm pixels, like the paper's Aixplorer data).
DUAL_GEOMETRY = Geometry(rows=520, cols=440, spacing_mm=0.16)
#: SWE scanner, full-screen B-mode (600 x 900 at 0.095 mm).
FULL_GEOMETRY = Geometry(rows=600, cols=900, spacing_mm=0.095)
#: Second scanner without SWE (450 x 300 at 0.12 mm: 300 rows, 450 columns).
OTHER_GEOMETRY = Geometry(rows=300, cols=450, spacing_mm=0.12)


@dataclass(frozen=True)
class Setup:
    """Scanners and image geometries used for one organ."""

    swe_scanner: Scanner
    other_scanner: Scanner
    dual: Geometry
    full: Geometry
    other: Geometry
    swe_half_depth_mm: float


THYROID_SWE_SCANNER = replace(
    SWE_SCANNER,
    probe=Probe(name="SL15-4-like", centre_frequency_mhz=8.0, bandwidth=0.7, f_number=1.5),
    display=Display(gain_db=-20.0, dynamic_range_db=60.0, tgc_db_cm=7.2, noise_db=-58.0),
)
THYROID_OTHER_SCANNER = replace(
    OTHER_SCANNER,
    model_name="BMode-Sim LOGIQ-like",
    probe=Probe(name="9L-like", centre_frequency_mhz=6.0, bandwidth=0.6, pitch_mm=0.23),
    display=Display(gain_db=-17.0, dynamic_range_db=55.0, tgc_db_cm=5.6, noise_db=-55.0),
)

#: Per organ: prostate as the paper's Aixplorer / iU22 data, thyroid a shallower linear set-up.
SETUPS: dict[str, Setup] = {
    "prostate": Setup(
        SWE_SCANNER, OTHER_SCANNER, DUAL_GEOMETRY, FULL_GEOMETRY, OTHER_GEOMETRY, 60.0
    ),
    "thyroid": Setup(
        THYROID_SWE_SCANNER,
        THYROID_OTHER_SCANNER,
        Geometry(rows=420, cols=480, spacing_mm=0.1, top_mm=0.5),
        Geometry(rows=600, cols=900, spacing_mm=0.065, top_mm=0.5),
        Geometry(rows=320, cols=480, spacing_mm=0.12, top_mm=0.5),
        38.0,
    ),
}
