"""Scanner profiles and the acquisition settings drawn from them per image.

A :class:`ScannerProfile` is one way of imaging an organ: the SWE scanner's dual display (its
B-mode formed inside the shear-wave sequence: plane-wave transmit, no transmit focus), the same
scanner's full-screen "B-mode-only protocol" (focused transmit at the gland, zoom, more probe
pressure, a convex field of view) and the second scanner without SWE (another probe, frequency,
gain, speckle and an endocavity sector). Every acquisition draws its own settings from the
profile (:func:`draw_acquisition`): centre frequency, bandwidth, f-number, focus depth, gain,
dynamic range, TGC slope and sliders, noise, speckle density, zoom (pixel spacing) and probe
pressure. All draws come from the generator given, so an archive stays a pure function of its
seed; :meth:`Acquisition.record` is what ``archive.json`` stores.

``vary=False`` gives the nominal acquisition of each profile without any draw: linear
geometry, no transmit focus, no pressure, the scanner's nominal display (the simulator's
behaviour before profiles existed).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from training.simulate.bmode import Display, Probe
from training.simulate.scanners import SETUPS, Geometry, Scanner
from training.simulate.tissue import GLAND, Phantom, TissueMaps

__all__ = ["ScannerProfile", "Acquisition", "PROFILES", "draw_acquisition", "gland_depth"]


@dataclass(frozen=True)
class ScannerProfile:
    """How one kind of image is acquired (nominal values and the spread of each setting).

    Attributes
    ----------
    name : str
        Profile name recorded in ``archive.json``.
    scanner : Scanner
        Identity, nominal probe and display.
    geometry : Geometry
        Nominal image grid and shape (linear, convex, endocavity).
    focus : {"none", "gland"}
        ``"none"``: plane-wave transmit (uniform lateral resolution); ``"gland"``: transmit
        focus at the gland centre (+-2 mm).
    f_number, lateral_factor, depth_of_field_mm : float
        Nominal beamforming; a focused transmit gives a narrower lateral PSF at the focus
        (``lateral_factor`` < 1.05) that widens away from it.
    speckle_density : (float, float)
        Range of the relative scatterer density per resolution cell.
    zoom : (float, float)
        Range of the pixel-spacing factor (1 = nominal spacing).
    frequency_spread : float
        Relative half-range of the centre frequency and bandwidth (uniform).
    gain_sd_db, dynamic_range_db, tgc_sd_db_cm, tgc_slider_sd_db, noise_range_db : float
        Spread of gain (normal), dynamic range (+- uniform), TGC slope (normal), each of the
        six TGC sliders (normal) and the noise floor (+- uniform).
    compression, shift_mm : (float, float)
        Range of the axial compression by probe pressure (fraction) and of the resulting
        shift of the tissue towards the probe (mm).
    """

    name: str
    scanner: Scanner
    geometry: Geometry
    focus: str = "none"
    f_number: float = 1.5
    lateral_factor: float = 1.05
    depth_of_field_mm: float = 15.0
    speckle_density: tuple[float, float] = (0.9, 1.1)
    zoom: tuple[float, float] = (1.0, 1.0)
    frequency_spread: float = 0.08
    gain_sd_db: float = 2.5
    dynamic_range_db: float = 3.0
    tgc_sd_db_cm: float = 0.5
    tgc_slider_sd_db: float = 1.0
    noise_range_db: float = 3.0
    compression: tuple[float, float] = (0.0, 0.0)
    shift_mm: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class Acquisition:
    """The settings of one image (drawn from a profile)."""

    profile: str
    probe: Probe
    display: Display
    geometry: Geometry
    compression: float = 0.0
    shift_mm: float = 0.0

    def tissue_axes(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Return the tissue coordinates ``(x_mm, z_mm)`` seen by each column and row.

        Probe pressure compresses the tissue axially (by ``compression``) and pushes it
        towards the probe (by ``shift_mm``); it bulges laterally by half the compression.
        """
        x, z = self.geometry.axes()
        if self.compression == 0.0 and self.shift_mm == 0.0:
            return x, z
        return x / (1.0 + 0.5 * self.compression), z * (1.0 + self.compression) + self.shift_mm

    def maps(self, phantom: Phantom, lateral_shift: float = 0.0) -> TissueMaps:
        """Rasterise the phantom as this acquisition sees it, on the display grid.

        ``lateral_shift`` (mm) moves the probe sideways. With probe pressure the tissue
        coordinates differ from the image grid; the maps keep the image's depths and spacing.
        """
        x_disp, z_disp = self.geometry.axes()
        x, z = self.tissue_axes()
        maps = phantom.maps(x + lateral_shift, z)
        if x is x_disp and z is z_disp and lateral_shift == 0.0:
            return maps
        spacing = (self.geometry.spacing_mm, self.geometry.spacing_mm)
        return replace(maps, z_mm=z_disp, x_mm=x_disp, spacing_mm=spacing)

    def record(self) -> dict[str, object]:
        """Return the settings as a JSON-able dict (``archive.json``)."""
        p, d, g = self.probe, self.display, self.geometry
        return {
            "profile": self.profile,
            "probe": p.name,
            "geometry": g.kind,
            "apex_mm": round(g.apex_mm, 2),
            "half_angle_deg": round(g.half_angle_deg, 2) if g.kind != "linear" else None,
            "centre_frequency_mhz": round(p.centre_frequency_mhz, 3),
            "bandwidth": round(p.bandwidth, 3),
            "f_number": round(p.f_number, 3),
            "lateral_factor": round(p.lateral_factor, 3),
            "psf_sigma_mm": [round(v, 4) for v in p.psf_sigma_mm()],
            "focus_mm": None if p.focus_mm is None else round(p.focus_mm, 2),
            "depth_of_field_mm": round(p.depth_of_field_mm, 2),
            "speckle_density": round(p.speckle_density, 3),
            "gain_db": round(d.gain_db, 2),
            "dynamic_range_db": round(d.dynamic_range_db, 2),
            "tgc_db_cm": round(d.tgc_db_cm, 3),
            "tgc_curve_db": [round(v, 2) for v in d.tgc_curve_db],
            "noise_db": round(d.noise_db, 2),
            "spacing_mm": round(g.spacing_mm, 5),
            "compression": round(self.compression, 4),
            "shift_mm": round(self.shift_mm, 3),
        }


def _profiles(organ: str) -> dict[str, ScannerProfile]:
    setup = SETUPS[organ]
    if organ == "prostate":
        full = replace(setup.full, kind="convex", apex_mm=30.0, half_angle_deg=40.0)
        other = replace(setup.other, kind="endocavity", apex_mm=8.0, half_angle_deg=65.0)
    else:  # thyroid: linear probes throughout
        full, other = setup.full, setup.other
    return {
        "dual": ScannerProfile(
            name=f"{organ}-swe-dual", scanner=setup.swe_scanner, geometry=setup.dual,
            focus="none", f_number=setup.swe_scanner.probe.f_number, lateral_factor=1.05,
            speckle_density=(0.9, 1.1), zoom=(0.95, 1.05),
        ),
        "bmode": ScannerProfile(
            name=f"{organ}-swe-bmode-only", scanner=setup.swe_scanner, geometry=full,
            focus="gland", f_number=1.2, lateral_factor=0.85, depth_of_field_mm=14.0,
            speckle_density=(0.95, 1.3), zoom=(0.95, 1.05), gain_sd_db=3.0,
            compression=(0.04, 0.12), shift_mm=(1.0, 4.0),
        ),
        "other-scanner": ScannerProfile(
            name=f"{organ}-other-scanner", scanner=setup.other_scanner, geometry=other,
            focus="gland", f_number=setup.other_scanner.probe.f_number, lateral_factor=1.0,
            depth_of_field_mm=12.0, speckle_density=(0.6, 0.9), zoom=(0.93, 1.07),
            frequency_spread=0.12, gain_sd_db=3.5, dynamic_range_db=5.0, tgc_sd_db_cm=0.8,
            tgc_slider_sd_db=2.0, compression=(0.0, 0.08), shift_mm=(0.0, 3.0),
        ),
    }  # fmt: skip


#: Per organ, the profile of each kind of image (``dual``, ``bmode``, ``other-scanner``).
PROFILES: dict[str, dict[str, ScannerProfile]] = {o: _profiles(o) for o in SETUPS}


def gland_depth(phantom: Phantom) -> float:
    """Return the depth of the gland centre of a phantom (mm)."""
    return next((r.z0 for r in phantom.regions if r.label == GLAND), 25.0)


def draw_acquisition(
    profile: ScannerProfile,
    rng: np.random.Generator,
    gland_depth_mm: float,
    vary: bool = True,
) -> Acquisition:
    """Draw the settings of one acquisition from a profile.

    Parameters
    ----------
    profile : ScannerProfile
        The profile.
    rng : numpy.random.Generator
        Source of the draws (the acquisition is a pure function of its state).
    gland_depth_mm : float
        Depth of the gland centre in the tissue (where a focused transmit is placed).
    vary : bool
        False: the nominal acquisition, no draws (see the module docstring).

    Returns
    -------
    Acquisition
    """
    probe, display = profile.scanner.probe, profile.scanner.display
    if not vary:
        geometry = replace(profile.geometry, kind="linear", apex_mm=0.0, half_angle_deg=90.0)
        return Acquisition(profile.name, probe, display, geometry)
    u = rng.uniform
    f = profile.frequency_spread
    compression = float(u(*profile.compression))
    shift = float(u(*profile.shift_mm))
    geometry = replace(profile.geometry, spacing_mm=profile.geometry.spacing_mm * u(*profile.zoom))
    focus = None
    if profile.focus == "gland":
        # where the gland appears on screen (pressure moves it), +-2 mm of operator placement
        focus = (gland_depth_mm - shift) / (1.0 + compression) + float(rng.normal(0.0, 2.0))
        focus = float(np.clip(focus, 5.0, geometry.top_mm + geometry.rows * geometry.spacing_mm))
    probe = replace(
        probe,
        centre_frequency_mhz=probe.centre_frequency_mhz * u(1 - f, 1 + f),
        bandwidth=float(np.clip(probe.bandwidth * u(1 - f, 1 + f), 0.3, 1.0)),
        f_number=profile.f_number * u(0.9, 1.15),
        lateral_factor=profile.lateral_factor,
        focus_mm=focus,
        depth_of_field_mm=profile.depth_of_field_mm * u(0.8, 1.25),
        apex_mm=geometry.apex_mm,
        speckle_density=float(u(*profile.speckle_density)),
    )
    display = replace(
        display,
        gain_db=display.gain_db + float(rng.normal(0.0, profile.gain_sd_db)),
        dynamic_range_db=display.dynamic_range_db
        + float(u(-profile.dynamic_range_db, profile.dynamic_range_db)),
        tgc_db_cm=display.tgc_db_cm + float(rng.normal(0.0, profile.tgc_sd_db_cm)),
        noise_db=display.noise_db + float(u(-profile.noise_range_db, profile.noise_range_db)),
        tgc_curve_db=tuple(float(v) for v in rng.normal(0.0, profile.tgc_slider_sd_db, 6)),
    )
    return Acquisition(profile.name, probe, display, geometry, compression, shift)
