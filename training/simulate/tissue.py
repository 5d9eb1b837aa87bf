"""Generative tissue model of one image plane: stiffness, echogenicity and texture maps.

The model is analytic (ellipses with soft edges plus smooth random fields written as sums of
random cosines), so that each scanner rendering rasterises the same plane at its own pixel grid.
Coordinates are in millimetres: ``x`` lateral (0 under the probe centre), ``z`` depth (0 at the
probe face).

Generative model (parameters in :data:`ORGANS`)
------------------------------------------------
Tissue classes (``label``): 0 background (periprostatic / perithyroid soft tissue), 1 peripheral
zone (prostate) or thyroid parenchyma, 2 transition zone (prostate only), 3 stiff lesion
(carcinoma / nodule), 4 cyst (fluid), 5 calcification.

* Geometry. The gland is an ellipse (semi-axes ``gland_axes_mm``, centre depth ``gland_depth_mm``,
  tilt up to 12 degrees); the transition zone is a concentric, deeper ellipse at ``tz_scale`` of the
  gland. Per plane: ``lesions`` stiff lesions (radius ``lesion_radius_mm``, 80 % inside the gland),
  ``cysts`` fluid cysts and ``calcifications`` small bright foci. Edges are logistic with a
  0.4-1.0 mm width. The gland capsule is a bright rim (``capsule_db``); periprostatic fat is
  brighter than the gland (``background_echo_db``).
* Young's modulus ``E`` (kPa): background ``background_kpa``, gland zones ``pz_kpa`` / ``tz_kpa``,
  lesions ``lesion_kpa``, calcifications ``calc_kpa``, fluid 0 kPa (no shear wave). Each region is
  modulated by a smooth multiplicative field of 8 % standard deviation.
* Echogenicity (mean scatterer amplitude in dB, 0 dB = reference soft tissue)::

      echo_db = -slope_db_per_octave * log2(E / ref_kpa) + region_offset + texture_field

  with ``slope_db_per_octave`` ~ 5 dB, a random offset per region (``echo_jitter_db`` standard
  deviation) and a smooth field (``texture_db``). A fraction ``isoechoic_fraction`` of lesions has
  the opposite sign of the slope (iso- or hyperechoic lesions), so echogenicity predicts
  stiffness strongly but imperfectly. Cysts are anechoic (-45 dB), calcifications +22 dB.
* Texture: scatterer density (per mm^2) ``density_ref * (E / ref_kpa) ** -density_exponent``,
  clipped to ``density_range``: stiff tissue has sparser, coarser speckle; fluid has none.
* Shadowing (``transmission``, 0-1 of the intensity reaching a point): each calcification casts a
  shadow below it (``shadow_db`` darker, soft lateral edges); each cyst gives posterior
  enhancement (``enhancement_db``).

For the thyroid (``organ="thyroid"``) the same classes are used (no transition zone); the scanner
reports shear-wave speed ``c = sqrt(E / 3 rho)`` with ``rho = 1000 kg/m^3``, i.e.
``c [m/s] = sqrt(E [kPa] / 3)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.linalg.blas import sgemm as _sgemm

__all__ = [
    "ORGANS",
    "OrganSpec",
    "Phantom",
    "TissueMaps",
    "make_phantom",
    "modulus_to_speed",
    "PatientTraits",
    "draw_patient_traits",
    "LESION_ECHO_SHARES",
]

logger = logging.getLogger(__name__)

BACKGROUND, GLAND, TRANSITION, LESION, CYST, CALCIFICATION = range(6)
CLASS_NAMES = ("background", "gland", "transition-zone", "lesion", "cyst", "calcification")


@dataclass(frozen=True)
class OrganSpec:
    """Parameters of the generative model for one organ (see the module docstring)."""

    name: str
    quantity: str
    unit: str
    scale: tuple[float, float]
    gland_axes_mm: tuple[tuple[float, float], tuple[float, float]]
    gland_depth_mm: tuple[float, float]
    tz_scale: float | None
    background_kpa: tuple[float, float]
    pz_kpa: tuple[float, float]
    tz_kpa: tuple[float, float]
    lesion_kpa: tuple[float, float]
    calc_kpa: tuple[float, float]
    lesions: tuple[int, int]
    lesion_radius_mm: tuple[float, float]
    cysts: tuple[int, int]
    cyst_radius_mm: tuple[float, float]
    calcifications: tuple[int, int]
    calc_radius_mm: tuple[float, float]
    ref_kpa: float = 25.0
    slope_db_per_octave: float = 5.0
    echo_jitter_db: float = 2.5
    texture_db: float = 1.5
    isoechoic_fraction: float = 0.2
    density_ref: float = 30.0
    density_exponent: float = 0.8
    density_range: tuple[float, float] = (3.0, 60.0)
    background_echo_db: float = 3.0
    capsule_db: float = 7.0
    shadow_db: float = 18.0
    enhancement_db: float = 4.0


ORGANS: dict[str, OrganSpec] = {
    "prostate": OrganSpec(
        name="prostate",
        quantity="youngs-modulus",
        unit="kPa",
        scale=(0.0, 70.0),
        gland_axes_mm=((17.0, 24.0), (11.0, 16.0)),
        gland_depth_mm=(22.0, 30.0),
        tz_scale=0.6,
        background_kpa=(15.0, 35.0),
        pz_kpa=(18.0, 32.0),
        tz_kpa=(25.0, 45.0),
        lesion_kpa=(50.0, 120.0),
        calc_kpa=(150.0, 300.0),
        lesions=(0, 3),
        lesion_radius_mm=(2.5, 8.0),
        cysts=(0, 2),
        cyst_radius_mm=(1.5, 4.5),
        calcifications=(0, 3),
        calc_radius_mm=(0.4, 1.1),
    ),
    "thyroid": OrganSpec(
        name="thyroid",
        quantity="shear-wave-speed",
        unit="m/s",
        scale=(0.0, 10.0),
        gland_axes_mm=((12.0, 18.0), (7.0, 11.0)),
        gland_depth_mm=(14.0, 20.0),
        tz_scale=None,
        background_kpa=(10.0, 25.0),
        pz_kpa=(12.0, 28.0),
        tz_kpa=(12.0, 28.0),
        lesion_kpa=(30.0, 150.0),
        calc_kpa=(150.0, 300.0),
        lesions=(0, 2),
        lesion_radius_mm=(2.5, 7.0),
        cysts=(0, 2),
        cyst_radius_mm=(1.0, 4.0),
        calcifications=(0, 4),
        calc_radius_mm=(0.3, 1.0),
    ),
}


def modulus_to_speed(modulus_kpa: NDArray[np.floating]) -> NDArray[np.float32]:
    """Convert Young's modulus (kPa) to shear-wave speed (m/s), ``c = sqrt(E / 3 rho)``."""
    return np.sqrt(np.maximum(np.asarray(modulus_kpa, dtype=np.float32), 0.0) / 3.0)


@dataclass
class _Field:
    """A smooth random field, a sum of random cosines (zero mean, unit standard deviation)."""

    kx: NDArray[np.float64]
    kz: NDArray[np.float64]
    phase: NDArray[np.float64]

    @classmethod
    def random(
        cls, rng: np.random.Generator, n: int = 10, wavelength_mm: tuple[float, float] = (4, 25)
    ) -> _Field:
        wl = rng.uniform(*wavelength_mm, n)
        theta = rng.uniform(0, np.pi, n)
        k = 2 * np.pi / wl
        return cls(k * np.cos(theta), k * np.sin(theta), rng.uniform(0, 2 * np.pi, n))

    def _factors(
        self, x: NDArray[np.float64], z: NDArray[np.float64], scale: float
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        # cos(a + b) = cos a cos b - sin a sin b: one matrix product over all terms
        az = np.outer(z, self.kz) + self.phase
        ax = np.outer(x, self.kx)
        gain = scale * math.sqrt(2.0 / len(self.kx))
        left = np.concatenate([np.cos(az), -np.sin(az)], axis=1) * gain
        right = np.concatenate([np.cos(ax), np.sin(ax)], axis=1)
        return left.astype(np.float32), right.astype(np.float32)

    def __call__(self, x: NDArray[np.float64], z: NDArray[np.float64]) -> NDArray[np.float32]:
        left, right = self._factors(x, z, 1.0)
        return left @ right.T

    def add_to(
        self,
        out: NDArray[np.float32],
        x: NDArray[np.float64],
        z: NDArray[np.float64],
        scale: float,
    ) -> None:
        """Add ``scale`` times the field on the grid to ``out`` (C-contiguous), in place."""
        left, right = self._factors(x, z, scale)
        # out += left @ right.T as one BLAS call on the Fortran view of out: no temporary
        result = _sgemm(1.0, right, left, beta=1.0, c=out.T, trans_b=True, overwrite_c=True)
        if not np.shares_memory(result, out):  # the wrapper had to copy: write back
            out[...] = result.T


@dataclass
class _Ellipse:
    label: int
    x0: float
    z0: float
    a: float
    b: float
    angle: float
    edge_mm: float
    modulus_kpa: float
    echo_offset_db: float
    slope_sign: float = 1.0
    echogenicity: str = ""

    def weight(self, x: NDArray[np.float64], z: NDArray[np.float64]) -> NDArray[np.float32]:
        """Soft membership 0-1 on the grid ``z`` (rows) by ``x`` (columns)."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        dx = (x - self.x0).astype(np.float32)[None, :]
        dz = (z - self.z0).astype(np.float32)[:, None]
        u = dx * np.float32(c / self.a) + dz * np.float32(s / self.a)
        v = dx * np.float32(-s / self.b) + dz * np.float32(c / self.b)
        # in place: these boxes cover much of the image, and fresh arrays cost page faults
        u *= u
        v *= v
        u += v
        r = np.sqrt(u, out=u)
        # signed distance to the edge, approximately in mm, over the edge width: (1 - r) * k
        k = np.float32(min(self.a, self.b) / self.edge_mm)
        d = np.multiply(r, -k, out=r)
        d += k
        w = np.tanh(d, out=d)
        w *= np.float32(0.5)
        w += np.float32(0.5)
        return w

    def bounds(self) -> tuple[float, float, float, float]:
        r = max(self.a, self.b) + 3 * self.edge_mm
        return self.x0 - r, self.x0 + r, self.z0 - r, self.z0 + r


class _Window:
    """The bounding window (row and column slices) of a union of boxes."""

    def __init__(self) -> None:
        self.bounds: list[int] | None = None

    def __bool__(self) -> bool:
        return self.bounds is not None

    def add(self, rows: slice, cols: slice) -> None:
        box = [rows.start, rows.stop, cols.start, cols.stop]
        if self.bounds is None:
            self.bounds = box
            return
        b = self.bounds
        self.bounds = [min(b[0], box[0]), max(b[1], box[1]), min(b[2], box[2]), max(b[3], box[3])]

    def slices(self) -> tuple[slice, slice]:
        assert self.bounds is not None
        r0, r1, c0, c1 = self.bounds
        return slice(r0, r1), slice(c0, c1)


@dataclass
class TissueMaps:
    """Rasterised maps of one plane on a grid (rows = depth, columns = lateral).

    Attributes
    ----------
    modulus_kpa : ndarray float32
        True Young's modulus (kPa); 0 in fluid.
    echo_db : ndarray float32
        Mean scatterer amplitude in dB relative to reference tissue.
    density : ndarray float32
        Scatterers per mm^2.
    fluid : ndarray float32
        Fluid fraction 0-1 (cysts).
    transmission : ndarray float32
        Fraction of the intensity reaching each point (shadows < 1, enhancement > 1).
    label : ndarray uint8
        Dominant tissue class (see ``CLASS_NAMES``).
    spacing_mm : tuple of float
        (row, column) spacing.
    z_mm, x_mm : ndarray
        Depth of each row and lateral position of each column.
    """

    modulus_kpa: NDArray[np.float32]
    echo_db: NDArray[np.float32]
    density: NDArray[np.float32]
    fluid: NDArray[np.float32]
    transmission: NDArray[np.float32]
    label: NDArray[np.uint8]
    spacing_mm: tuple[float, float]
    z_mm: NDArray[np.float64]
    x_mm: NDArray[np.float64]


@dataclass
class Phantom:
    """One image plane of a synthetic patient: the analytic tissue description."""

    organ: OrganSpec
    background_kpa: float
    regions: list[_Ellipse] = field(default_factory=list)
    stiffness_field: _Field | None = None
    texture_field: _Field | None = None
    echo_slope_db_per_octave: float | None = None
    traits: PatientTraits | None = None

    def record(self) -> dict[str, object]:
        """Return what was drawn for this plane (for ``archive.json``)."""
        slope = self.echo_slope_db_per_octave
        return {
            "echo_slope_db_per_octave": round(
                float(self.organ.slope_db_per_octave if slope is None else slope), 3
            ),
            "background_kpa": round(self.background_kpa, 2),
            "lesions": [
                {
                    "x_mm": round(r.x0, 2),
                    "z_mm": round(r.z0, 2),
                    "radius_mm": round(0.5 * (r.a + r.b), 2),
                    "modulus_kpa": round(r.modulus_kpa, 1),
                    "echogenicity": r.echogenicity,
                }
                for r in self.regions
                if r.label == LESION
            ],
            "cysts": sum(1 for r in self.regions if r.label == CYST),
            "calcifications": sum(1 for r in self.regions if r.label == CALCIFICATION),
            "patient": None if self.traits is None else self.traits.record(),
        }

    def lesion_count(self) -> int:
        """Return the number of stiff lesions in the plane."""
        return sum(1 for r in self.regions if r.label == LESION)

    def maps(self, x_mm: NDArray[np.float64], z_mm: NDArray[np.float64]) -> TissueMaps:
        """Rasterise the plane on a grid.

        Parameters
        ----------
        x_mm : ndarray
            Lateral positions of the columns (mm).
        z_mm : ndarray
            Depths of the rows (mm).

        Returns
        -------
        TissueMaps
        """
        x = np.asarray(x_mm, dtype=np.float64)
        z = np.asarray(z_mm, dtype=np.float64)
        shape = (z.size, x.size)
        spec = self.organ
        # every full-size operation costs a memory pass: regions, cysts, calcifications and the
        # capsule touch only their bounding windows, and arrays are updated in place
        log_e = np.full(shape, math.log(self.background_kpa), dtype=np.float32)
        label = np.zeros(shape, dtype=np.uint8)
        fluid = np.zeros(shape, dtype=np.float32)
        calc = np.zeros(shape, dtype=np.float32)
        slope: NDArray[np.float32] | None = None  # all ones until an inverted lesion
        offset = np.full(shape, spec.background_echo_db, dtype=np.float32)
        capsules: list[tuple[slice, slice, NDArray[np.float32]]] = []
        fluid_win = _Window()
        calc_win = _Window()
        for region in self.regions:
            x0, x1, z0, z1 = region.bounds()
            ci = np.nonzero((x >= x0) & (x <= x1))[0]
            ri = np.nonzero((z >= z0) & (z <= z1))[0]
            if ci.size == 0 or ri.size == 0:
                continue
            rs = slice(ri[0], ri[-1] + 1)
            cs = slice(ci[0], ci[-1] + 1)
            w = region.weight(x[cs], z[rs])
            if region.label == CYST:
                np.maximum(fluid[rs, cs], w, out=fluid[rs, cs])
                fluid_win.add(rs, cs)
                continue
            if region.label == CALCIFICATION:
                np.maximum(calc[rs, cs], w, out=calc[rs, cs])
                calc_win.add(rs, cs)
            if region.label == GLAND:
                capsules.append((rs, cs, np.float32(4.0) * w * (np.float32(1.0) - w)))
            target = np.float32(math.log(region.modulus_kpa))
            view = log_e[rs, cs]
            view += w * (target - view)
            view = offset[rs, cs]
            view += w * (np.float32(region.echo_offset_db) - view)
            if slope is None and region.slope_sign != 1.0:
                slope = np.ones(shape, dtype=np.float32)
            if slope is not None:
                view = slope[rs, cs]
                view += w * (np.float32(region.slope_sign) - view)
            label[rs, cs][w > 0.5] = region.label
        if self.stiffness_field is not None:
            self.stiffness_field.add_to(log_e, x, z, 0.08)
        modulus = np.exp(log_e)
        rel = log_e  # ln(E / ref), in place
        rel -= np.float32(math.log(spec.ref_kpa))
        slope_db = self.echo_slope_db_per_octave
        if slope_db is None:
            slope_db = spec.slope_db_per_octave
        echo = rel * np.float32(-slope_db / math.log(2.0))
        if slope is not None:
            echo *= slope
        echo += offset
        if self.texture_field is not None:
            self.texture_field.add_to(echo, x, z, spec.texture_db)
        for rs, cs, cap in capsules:
            echo[rs, cs] += np.float32(spec.capsule_db) * cap
        density = rel * np.float32(-spec.density_exponent)
        np.exp(density, out=density)
        density *= np.float32(spec.density_ref)
        np.clip(density, *spec.density_range, out=density)
        if calc_win:
            win = calc_win.slices()
            view = echo[win]
            view += calc[win] * (np.float32(22.0) - view)
        if fluid_win:
            win = fluid_win.slices()
            f = fluid[win]
            view = echo[win]
            view += f * (np.float32(-45.0) - view)
            solid = np.float32(1.0) - f
            density[win] *= solid
            modulus[win] *= solid
            label[win][f > 0.5] = CYST
        if calc_win:
            win = calc_win.slices()
            density[win] += calc[win] * np.float32(60.0)
        transmission = self._transmission(x, z)
        return TissueMaps(
            modulus_kpa=modulus.astype(np.float32, copy=False),
            echo_db=echo.astype(np.float32, copy=False),
            density=density.astype(np.float32, copy=False),
            fluid=fluid,
            transmission=transmission,
            label=label,
            spacing_mm=(float(np.mean(np.diff(z))), float(np.mean(np.diff(x)))),
            z_mm=z,
            x_mm=x,
        )

    def _transmission(self, x: NDArray[np.float64], z: NDArray[np.float64]) -> NDArray[np.float32]:
        spec = self.organ
        out = np.ones((z.size, x.size), dtype=np.float32)
        shadows: list[tuple[slice, NDArray[np.float32], NDArray[np.float32]]] = []
        window = _Window()
        for region in self.regions:
            if region.label not in (CALCIFICATION, CYST):
                continue
            half = region.a * 0.9
            cols = np.nonzero(np.abs(x - region.x0) < half + 2.5)[0]
            if cols.size == 0:
                continue
            cs = slice(cols[0], cols[-1] + 1)
            lateral = 0.5 * (1 + np.tanh((half - np.abs(x[cs] - region.x0)) / 0.4))
            below = 0.5 * (1 + np.tanh((z - region.z0 - 0.5 * region.b) / 0.5))
            if region.label == CALCIFICATION:
                profile = -spec.shadow_db * below
            else:
                profile = spec.enhancement_db * below * np.exp(-np.maximum(z - region.z0, 0) / 15.0)
            shadows.append((cs, profile.astype(np.float32), lateral.astype(np.float32)))
            window.add(slice(0, z.size), cs)
        if not window:
            return out
        _, win = window.slices()
        t_db = np.zeros((z.size, win.stop - win.start), dtype=np.float32)
        for cs, profile, lateral in shadows:
            t_db[:, cs.start - win.start : cs.stop - win.start] += np.outer(profile, lateral)
        t_db *= np.float32(0.1)
        out[:, win] = np.power(np.float32(10.0), t_db, out=t_db)
        return out


#: Share of hypo-, iso- and hyperechoic stiff lesions (population level). Prostate carcinoma:
#: about 60 % hypoechoic, 30-35 % isoechoic, a few percent hyperechoic on TRUS; thyroid
#: nodules: about 55 % hypo-, 30 % iso-, 15 % hyperechoic.
LESION_ECHO_SHARES: dict[str, tuple[float, float, float]] = {
    "prostate": (0.62, 0.32, 0.06),
    "thyroid": (0.55, 0.30, 0.15),
}


_ECHO_KINDS = ("hypo", "iso", "hyper")


@dataclass(frozen=True)
class PatientTraits:
    """The stiffness-echogenicity relation of one patient (drawn by :func:`draw_patient_traits`).

    Attributes
    ----------
    echo_slope_db_per_octave : float
        How much darker tissue gets per doubling of Young's modulus in this patient.
    lesion_shares : tuple of float
        Probabilities of a stiff lesion being hypo-, iso- or hyperechoic.
    gland_echo_db : float
        Offset of the gland's mean echogenicity (patient-level: age, inflammation, BPH).
    """

    echo_slope_db_per_octave: float
    lesion_shares: tuple[float, float, float]
    gland_echo_db: float = 0.0

    def record(self) -> dict[str, object]:
        """Return the traits as a JSON-able dict."""
        return {
            "echo_slope_db_per_octave": round(self.echo_slope_db_per_octave, 3),
            "lesion_shares": {
                name: round(self.lesion_shares[i], 3) for i, name in enumerate(_ECHO_KINDS)
            },
            "gland_echo_db": round(self.gland_echo_db, 2),
        }


def draw_patient_traits(rng: np.random.Generator, organ: str, vary: bool = True) -> PatientTraits:
    """Draw one patient's stiffness-echogenicity relation.

    The slope is drawn from N(5, 1.5) dB per octave clipped to [1.5, 9]; the gland offset from
    N(0, 2) dB; the lesion shares are the population's (:data:`LESION_ECHO_SHARES`). With
    ``vary=False``, the organ's nominal slope, no offset.
    """
    spec = ORGANS[organ]
    shares = LESION_ECHO_SHARES[organ]
    if not vary:
        return PatientTraits(spec.slope_db_per_octave, shares, 0.0)
    slope = float(np.clip(rng.normal(spec.slope_db_per_octave, 1.5), 1.5, 9.0))
    return PatientTraits(slope, shares, float(rng.normal(0.0, 2.0)))


def make_phantom(
    rng: np.random.Generator, organ: str = "prostate", traits: PatientTraits | None = None
) -> Phantom:
    """Draw one random image plane.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness (the plane is a pure function of its state).
    organ : {"prostate", "thyroid"}
        Which parameter set of :data:`ORGANS` to use.
    traits : PatientTraits, optional
        The patient's stiffness-echogenicity relation. Without it, the organ's nominal slope
        and a fraction ``isoechoic_fraction`` of inverted (iso/hyperechoic) lesions.

    Returns
    -------
    Phantom
    """
    if organ not in ORGANS:
        raise ValueError(f"unknown organ {organ!r}; expected one of {sorted(ORGANS)}")
    spec = ORGANS[organ]
    u = rng.uniform
    phantom = Phantom(
        organ=spec,
        background_kpa=float(u(*spec.background_kpa)),
        stiffness_field=_Field.random(rng, wavelength_mm=(6, 30)),
        texture_field=_Field.random(rng, wavelength_mm=(2, 12)),
        echo_slope_db_per_octave=None if traits is None else traits.echo_slope_db_per_octave,
        traits=traits,
    )
    slope_db = spec.slope_db_per_octave if traits is None else traits.echo_slope_db_per_octave
    gland_offset = 0.0 if traits is None else traits.gland_echo_db
    a = float(u(*spec.gland_axes_mm[0]))
    b = float(u(*spec.gland_axes_mm[1]))
    gx, gz = float(u(-4, 4)), float(u(*spec.gland_depth_mm))
    angle = float(u(-0.2, 0.2))

    def jitter() -> float:
        return float(rng.normal(0.0, spec.echo_jitter_db))

    gland = _Ellipse(
        GLAND, gx, gz, a, b, angle, float(u(0.5, 1.0)), float(u(*spec.pz_kpa)),
        jitter() + gland_offset,
    )  # fmt: skip
    phantom.regions.append(gland)
    if spec.tz_scale is not None:
        s = spec.tz_scale
        phantom.regions.append(
            _Ellipse(
                TRANSITION, gx, gz + 0.25 * b, s * a, s * b, angle, float(u(0.6, 1.2)),
                float(u(*spec.tz_kpa)), jitter(),
            )
        )  # fmt: skip

    def inside_point(frac: float) -> tuple[float, float]:
        r = frac * math.sqrt(u(0, 1))
        t = u(0, 2 * math.pi)
        return gx + r * a * math.cos(t), gz + r * b * math.sin(t)

    for _ in range(int(rng.integers(spec.lesions[0], spec.lesions[1] + 1))):
        rad = float(u(*spec.lesion_radius_mm))
        if u(0, 1) < 0.8:
            px, pz = inside_point(0.75)
        else:
            px, pz = float(u(-25, 25)), float(u(8, 50))
        kpa = float(u(*spec.lesion_kpa))
        offset = jitter()
        if traits is None:
            inverted = u(0, 1) < spec.isoechoic_fraction
            sign, kind = (-1.0, "inverted") if inverted else (1.0, "hypo")
        else:
            kind = str(rng.choice(("hypo", "iso", "hyper"), p=traits.lesion_shares))
            if kind == "iso":
                # as bright as the gland around it, whatever its stiffness
                sign = 0.0
                offset = (
                    -slope_db * math.log2(gland.modulus_kpa / spec.ref_kpa)
                    + gland.echo_offset_db
                    + float(rng.normal(0.0, 1.0))
                )
            elif kind == "hyper":
                sign, offset = -0.5, offset + 2.0
            else:
                sign = 1.0
        phantom.regions.append(
            _Ellipse(
                LESION, px, pz, rad * float(u(0.7, 1.3)), rad * float(u(0.7, 1.3)),
                float(u(0, math.pi)), float(u(0.4, 1.0)), kpa, offset, sign, kind,
            )
        )  # fmt: skip
    for _ in range(int(rng.integers(spec.cysts[0], spec.cysts[1] + 1))):
        rad = float(u(*spec.cyst_radius_mm))
        px, pz = inside_point(0.8)
        phantom.regions.append(
            _Ellipse(
                CYST, px, pz, rad * float(u(0.8, 1.2)), rad * float(u(0.8, 1.2)),
                float(u(0, math.pi)), 0.3, 0.0, 0.0,
            )
        )  # fmt: skip
    for _ in range(int(rng.integers(spec.calcifications[0], spec.calcifications[1] + 1))):
        rad = float(u(*spec.calc_radius_mm))
        px, pz = inside_point(0.9)
        phantom.regions.append(
            _Ellipse(
                CALCIFICATION, px, pz, rad * float(u(1.0, 2.0)), rad, float(u(-0.3, 0.3)), 0.2,
                float(u(*spec.calc_kpa)), 0.0,
            )
        )  # fmt: skip
    logger.debug("phantom: %d regions", len(phantom.regions))
    return phantom
