"""B-mode formation from tissue maps: a fast PSF-convolution engine and the pymust (SIMUS) engine.

Both engines share the probe (:class:`Probe`) and the display chain: attenuation, electronic
noise, time-gain compensation (TGC), envelope detection and log compression to 8-bit grey.

* ``"fast"``: scatterers on the pixel grid (Poisson number per pixel, from the density map, each
  with a complex Gaussian amplitude scaled by the echogenicity), convolved with the analytic
  complex-baseband point-spread function of the probe: axial Gaussian envelope from the centre
  frequency and the pulse-echo -6 dB bandwidth, lateral Gaussian of FWHM ``lateral_factor *
  wavelength * f_number`` (receive-only focusing of a plane-wave transmit). ``axial_factor``
  and ``lateral_factor`` were calibrated once against pymust's speckle grain size (autocorrelation
  FWHM in a homogeneous region, 6 MHz probe: pymust 0.22 x 0.38 mm). The convolution is
  separable (two 1-D Gaussian filters). Attenuation is applied to the scatterers and the white
  receiver noise is added before the convolution, so the noise has the PSF's grain. For speed
  (a full-screen image in ~30 CPU-ms) the counts are drawn by inverse-CDF sampling
  (:func:`poisson_counts`), the Gaussians by Box-Muller (:func:`gaussian_pair`), and all
  full-size arithmetic is float32 and in place; the distributions are unchanged.
* ``"pymust"``: scatterers drawn from the same maps (at most ``max_scatterers``), RF simulated with
  ``pymust.simus`` for one plane wave, beamformed with ``pymust.rf2iq`` + ``pymust.dasmtx``
  (delay-and-sum on the pixel grid, 10 mm strips with sub-apertures of at most 128 elements) and
  envelope-detected; attenuation and (white) noise are applied to the envelope. Faithful but
  slow: ~3 CPU-s for a 5 x 5 mm image, ~2 CPU-min for 20 x 30 mm, many minutes for a full
  display; meant for checks and small images.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from training.simulate.tissue import TissueMaps

__all__ = [
    "Probe",
    "Display",
    "form_bmode",
    "envelope_fast",
    "envelope_pymust",
    "gaussian_pair",
    "log_compress",
    "poisson_counts",
]

logger = logging.getLogger(__name__)

SPEED_OF_SOUND = 1540.0  # m/s
REFERENCE_DENSITY = 30.0  # scatterers / mm^2 of reference tissue (tissue.OrganSpec.density_ref)


@dataclass(frozen=True)
class Probe:
    """A linear array probe and its beamforming.

    Attributes
    ----------
    centre_frequency_mhz : float
    bandwidth : float
        Pulse-echo -6 dB fractional bandwidth (0-1).
    pitch_mm : float
    elements : int
    f_number : float
        Receive f-number of the delay-and-sum beamformer.
    attenuation_db_cm_mhz : float
        Tissue attenuation used by both engines.
    lateral_factor : float
        Lateral FWHM in units of ``wavelength * f_number`` (fast engine only).
    axial_factor : float
        Axial widening of the Gaussian-spectrum pulse (fast engine only): pymust's pulse-echo
        spectrum (one-cycle excitation through the probe response) is narrower.
    focus_mm : float or None
        Transmit focus depth (fast engine only). None: plane-wave transmit (the SWE mode's
        B-mode), the same lateral resolution at every depth. Otherwise the lateral FWHM grows
        away from the focus as ``sqrt(1 + ((z - focus) / depth_of_field_mm) ** 2)``, capped at
        3x, and in a sector (``apex_mm`` > 0) also with the beam spread ``(apex + z) / (apex +
        focus)``.
    depth_of_field_mm : float
        See ``focus_mm``.
    apex_mm : float
        Distance of the virtual apex of a sector probe (convex, endocavity) behind the face;
        0 for a linear array.
    speckle_density : float
        Scatterers per resolution cell relative to the tissue model (fast engine only): below
        1 the speckle is sparser (less fully developed), above 1 denser. Mean brightness is kept.
    """

    name: str = "SL10-2"
    centre_frequency_mhz: float = 6.0
    bandwidth: float = 0.7
    pitch_mm: float = 0.2
    elements: int = 192
    f_number: float = 1.5
    attenuation_db_cm_mhz: float = 0.5
    lateral_factor: float = 1.05
    axial_factor: float = 1.37
    focus_mm: float | None = None
    depth_of_field_mm: float = 15.0
    apex_mm: float = 0.0
    speckle_density: float = 1.0

    def lateral_widening(self, z_mm: NDArray[np.float64]) -> NDArray[np.float64]:
        """Return the lateral PSF width at each depth relative to the width at the focus."""
        z = np.asarray(z_mm, dtype=np.float64)
        if self.focus_mm is None:
            return np.ones_like(z)
        out = np.sqrt(1.0 + ((z - self.focus_mm) / self.depth_of_field_mm) ** 2)
        if self.apex_mm > 0:
            out *= (self.apex_mm + np.maximum(z, 0.0)) / (self.apex_mm + self.focus_mm)
        return np.clip(out, 0.6, 3.0)

    @property
    def wavelength_mm(self) -> float:
        """Wavelength at the centre frequency."""
        return SPEED_OF_SOUND / (self.centre_frequency_mhz * 1e6) * 1e3

    def psf_sigma_mm(self) -> tuple[float, float]:
        """Return the (axial, lateral) standard deviations of the envelope PSF in mm."""
        bw_hz = self.bandwidth * self.centre_frequency_mhz * 1e6
        sigma_f = bw_hz / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        sigma_t = 1.0 / (2.0 * math.pi * sigma_f)
        axial = self.axial_factor * SPEED_OF_SOUND * sigma_t / 2.0 * 1e3
        fwhm_lat = self.lateral_factor * self.wavelength_mm * self.f_number
        return axial, fwhm_lat / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclass(frozen=True)
class Display:
    """The scanner's display chain after envelope detection.

    Attributes
    ----------
    gain_db : float
        Overall gain: reference tissue (0 dB echogenicity) is displayed at
        ``255 * (1 - (-gain_db) / dynamic_range_db)``.
    dynamic_range_db : float
    tgc_db_cm : float
        TGC slope (compensates the two-way attenuation, not exactly).
    noise_db : float
        Electronic noise power relative to reference tissue at the probe face.
    tgc_curve_db : tuple of float
        The operator's TGC sliders: gain offsets (dB) at equally spaced depths from the top to
        the bottom of the image, interpolated linearly (empty: none).
    """

    gain_db: float = -22.0
    dynamic_range_db: float = 60.0
    tgc_db_cm: float = 5.4
    noise_db: float = -58.0
    tgc_curve_db: tuple[float, ...] = ()


def envelope_fast(
    maps: TissueMaps,
    probe: Probe,
    rng: np.random.Generator,
    display: Display | None = None,
) -> NDArray[np.float32]:
    """Return the echo envelope on the maps' grid (fast engine).

    Parameters
    ----------
    maps : TissueMaps
        Tissue on the image grid.
    probe : Probe
        Probe whose point-spread function is used.
    rng : numpy.random.Generator
        Source of the scatterers.
    display : Display, optional
        When given, the echoes are attenuated with depth and the receiver noise of the display
        chain is added before beamforming (so the noise has the PSF's grain); without it, the
        bare envelope (used for speckle statistics).

    Returns
    -------
    ndarray float32
        Envelope amplitude, scaled so that dense reference tissue has unit mean power.
    """
    power = _power_fast(maps, probe, rng, display)
    return np.sqrt(power, out=power)


def _power_fast(
    maps: TissueMaps,
    probe: Probe,
    rng: np.random.Generator,
    display: Display | None,
) -> NDArray[np.float32]:
    """Echo power (squared envelope) of the fast engine, reference tissue at unit mean."""
    dz, dx = maps.spacing_mm
    expected = maps.density * np.float32(dz * dx * probe.speckle_density)
    np.maximum(expected, np.float32(0.0), out=expected)
    counts = poisson_counts(expected, rng)
    sz, sx = probe.psf_sigma_mm()
    # sub-pixel PSFs are widened a little: scan conversion interpolates between samples
    sigma = (math.hypot(sz / dz, 0.35), math.hypot(sx / dx, 0.35))
    ref_n = REFERENCE_DENSITY * dz * dx * probe.speckle_density
    ref = _reference_power(sigma, ref_n)
    # per-pixel variance of each quadrature component, in place: every fresh full-size array
    # costs page faults and a memory pass
    power = maps.echo_db * np.float32(math.log(10.0) / 10.0)
    np.exp(power, out=power)
    power *= counts
    power *= maps.transmission
    if display is not None:
        power *= _attenuation_gain(maps.z_mm, probe)
        # white receiver noise whose filtered power is noise_db below reference tissue
        power += np.float32(10.0 ** (display.noise_db / 10.0) * ref_n)
    amp = np.sqrt(power, out=power)
    re, im = gaussian_pair(amp.shape, rng)
    re *= amp
    im *= amp
    # the separable PSF: two 1-D filters per quadrature component (what gaussian_filter does)
    kernel = _gaussian_kernel(sigma[0])
    for part in (re, im):
        ndimage.correlate1d(part, kernel, axis=0, output=part, mode="nearest")
    # lateral filtering acts along rows only, so each band of depths can have its own width
    # (transmit focus, sector beam spread) at no extra cost
    for rows, s in _lateral_bands(maps.z_mm, probe, sx / dx):
        kernel = _gaussian_kernel(math.hypot(s, 0.35))
        for part in (re, im):
            ndimage.correlate1d(part[rows], kernel, axis=1, output=part[rows], mode="nearest")
    if probe.focus_mm is not None:
        # the reference power was computed for the focal width: keep mean brightness per band
        power_scale = _band_power_scale(maps.z_mm, probe, sigma, sx / dx)
        re *= power_scale
        im *= power_scale
    re *= re
    im *= im
    re += im
    re *= np.float32(1.0 / ref)
    return re


def poisson_counts(expected: NDArray[np.float32], rng: np.random.Generator) -> NDArray[np.float32]:
    """Draw Poisson counts of the given (small) means by inverse-CDF sampling.

    Exact in distribution (up to float32 rounding of the CDF) and several times faster than
    ``Generator.poisson`` for means below one: one uniform per pixel, then only the pixels
    still above the running CDF are visited, a geometrically shrinking set.

    Parameters
    ----------
    expected : ndarray float32
        Mean count per pixel (non-negative).
    rng : numpy.random.Generator
        Source of the uniforms.

    Returns
    -------
    ndarray float32, the shape of ``expected``
    """
    lam = np.ascontiguousarray(expected, dtype=np.float32).ravel()
    if lam.size == 0 or float(lam.max()) > _POISSON_INVERSION_MAX:
        return rng.poisson(expected).astype(np.float32)
    u = rng.random(lam.size, dtype=np.float32)
    # counts 0 and 1 (nearly all pixels) on the whole grid, the rest on the few pixels left
    p0 = np.exp(-lam)
    cdf1 = p0 * lam
    cdf1 += p0
    counts = (u >= p0).astype(np.float32)
    above = u >= cdf1
    counts += above
    idx = np.flatnonzero(above)  # pixels with at least two scatterers
    lam_s = lam[idx].astype(np.float64)
    term = p0[idx] * lam_s * lam_s / 2.0
    cdf = cdf1[idx] + term
    u_s = u[idx].astype(np.float64)
    k = 2
    while idx.size and k < _POISSON_MAX_COUNT:
        keep = u_s >= cdf
        idx, term, cdf, lam_s, u_s = idx[keep], term[keep], cdf[keep], lam_s[keep], u_s[keep]
        k += 1
        counts[idx] = k
        term *= lam_s / k
        cdf += term
    return counts.reshape(expected.shape)


def gaussian_pair(
    shape: tuple[int, ...], rng: np.random.Generator
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Draw two independent standard normal float32 arrays (Box-Muller transform).

    Exact in distribution up to float32 rounding (the radius from a 24-bit uniform reaches
    5.8 standard deviations) and about twice as fast as two ``standard_normal`` calls.

    Parameters
    ----------
    shape : tuple of int
        Shape of each array.
    rng : numpy.random.Generator
        Source of the two uniforms per element.

    Returns
    -------
    (ndarray float32, ndarray float32)
    """
    radius = rng.random(shape, dtype=np.float32)
    angle = rng.random(shape, dtype=np.float32)
    np.subtract(np.float32(1.0), radius, out=radius)  # (0, 1]: the logarithm stays finite
    np.log(radius, out=radius)
    radius *= np.float32(-2.0)
    np.sqrt(radius, out=radius)
    angle *= np.float32(2.0 * math.pi)
    first = np.cos(angle)
    second = np.sin(angle, out=angle)
    first *= radius
    second *= radius
    return first, second


def _lateral_bands(
    z_mm: NDArray[np.float64], probe: Probe, sigma_px: float, bands: int = 8
) -> list[tuple[slice, float]]:
    """Split the rows into depth bands, each with its lateral PSF sigma in pixels."""
    widen = probe.lateral_widening(z_mm)
    if probe.focus_mm is None or len(z_mm) < bands:
        return [(slice(0, len(z_mm)), float(sigma_px * widen.mean()))]
    edges = np.linspace(0, len(z_mm), bands + 1).round().astype(int)
    return [
        (slice(a, b), float(sigma_px * widen[a:b].mean()))
        for a, b in zip(edges[:-1], edges[1:], strict=True)
        if b > a
    ]


def _band_power_scale(
    z_mm: NDArray[np.float64], probe: Probe, sigma: tuple[float, float], sigma_px: float
) -> NDArray[np.float32]:
    """Amplitude factor per row that keeps reference tissue at unit power in every band."""
    axial = float((_gaussian_kernel(sigma[0]) ** 2).sum())
    focal = float((_gaussian_kernel(sigma[1]) ** 2).sum())
    out = np.ones(len(z_mm), dtype=np.float32)
    for rows, s in _lateral_bands(z_mm, probe, sigma_px):
        lateral = float((_gaussian_kernel(math.hypot(s, 0.35)) ** 2).sum())
        out[rows] = math.sqrt(focal / lateral) if lateral > 0 and axial > 0 else 1.0
    return out[:, None]


#: Above this mean, inverse-CDF sampling loses its edge (and float32 exp(-mean) its precision).
_POISSON_INVERSION_MAX = 8.0
_POISSON_MAX_COUNT = 64


def _gaussian_kernel(sigma: float, truncate: float = 3.0) -> NDArray[np.float64]:
    """Return the sampled Gaussian of ``scipy.ndimage.gaussian_filter`` (same radius, unit sum)."""
    r = int(truncate * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return k / k.sum()


def _attenuation_gain(z_mm: NDArray[np.float64], probe: Probe) -> NDArray[np.float32]:
    """Two-way intensity attenuation factor, a column vector over depth."""
    return (10.0 ** (-_attenuation_db(z_mm, probe) / 10.0)).astype(np.float32)


def _attenuation_db(z_mm: NDArray[np.float64], probe: Probe) -> NDArray[np.float32]:
    """Two-way attenuation at the centre frequency, a column vector over depth."""
    z_cm = (np.asarray(z_mm, dtype=np.float32) / 10.0)[:, None]
    return 2.0 * probe.attenuation_db_cm_mhz * probe.centre_frequency_mhz * z_cm


def _reference_power(sigma: tuple[float, float], ref_n: float) -> float:
    """Mean power of reference tissue (``ref_n`` scatterers per pixel) through the PSF."""
    total = 1.0
    for s in sigma:  # sum of the squared sampled Gaussian kernel, per axis
        total *= float((_gaussian_kernel(s) ** 2).sum())
    return 2.0 * ref_n * total


def envelope_pymust(
    maps: TissueMaps,
    probe: Probe,
    rng: np.random.Generator,
    max_scatterers: int = 60000,
    chunk: int = 800,
    strip_mm: float = 10.0,
    max_elements: int = 128,
) -> NDArray[np.float32]:
    """Return the echo envelope simulated by pymust (SIMUS plane wave + delay-and-sum).

    Wide images are formed strip by strip, as a linear array scans with sub-apertures: each
    lateral strip of ``strip_mm`` is insonified by a plane wave from a sub-aperture of at most
    ``max_elements`` elements centred on it, from the scatterers within the strip and a margin.

    Parameters
    ----------
    maps : TissueMaps
        Tissue maps on the output grid (rows = depth from the probe, columns lateral).
    probe : Probe
        Probe geometry and pulse given to pymust.
    rng : numpy.random.Generator
        Source of the scatterers.
    max_scatterers : int
        Cap on the number of point scatterers (the density is scaled down above it, which makes
        the speckle of large images sparser than the fast engine's).
    chunk : int
        Scatterers simulated per ``simus`` call.
    strip_mm : float
        Width of the strips of wide images.
    max_elements : int
        Largest sub-aperture.

    Returns
    -------
    ndarray float32
        Envelope on the maps' grid, scaled to the fast engine's reference power by a single
        gain fitted on the expected echo power.
    """
    import pymust  # slow to import and only needed here

    dz, dx = maps.spacing_mm
    expected = maps.density * dz * dx
    total = float(expected.sum())
    n = int(min(rng.poisson(total), max_scatterers))
    env = np.zeros(maps.density.shape, dtype=np.float64)
    if n == 0:
        return env.astype(np.float32)
    p = (expected / total).ravel()
    idx = rng.choice(p.size, size=n, p=p)
    rows, cols = np.unravel_index(idx, expected.shape)
    z = maps.z_mm[rows] + rng.uniform(-0.5, 0.5, n) * dz
    x = maps.x_mm[cols] + rng.uniform(-0.5, 0.5, n) * dx
    amp = 10.0 ** (maps.echo_db[rows, cols] / 20.0) * np.sqrt(maps.transmission[rows, cols])
    rc = amp * rng.standard_normal(n)

    margin = 2.0  # mm of scatterers beyond a strip that still reach its pixels
    n_strips = max(1, int(math.ceil((maps.x_mm[-1] - maps.x_mm[0] + dx) / strip_mm)))
    col_groups = np.array_split(np.arange(maps.x_mm.size), n_strips)
    for group in col_groups:
        x0, x1 = maps.x_mm[group[0]], maps.x_mm[group[-1]]
        centre = 0.5 * (x0 + x1)
        sel = (x >= x0 - margin) & (x <= x1 + margin)
        if not sel.any():
            continue
        param = _pymust_param(pymust, probe, x1 - x0 + 2 * margin, maps.z_mm[-1], max_elements)
        rf = _simulate_rf(pymust, (x[sel] - centre) * 1e-3, z[sel] * 1e-3, rc[sel], param, chunk)
        iq = pymust.rf2iq(rf, param)
        iq_vec = iq.flatten(order="F")
        xs = (maps.x_mm[group] - centre) * 1e-3
        # beamform in row blocks: the DAS matrix of a whole strip would take gigabytes
        for r0 in range(0, maps.z_mm.size, 96):
            zr = maps.z_mm[r0 : r0 + 96] * 1e-3
            xi, zi = np.meshgrid(xs, zr)
            das = pymust.dasmtx(iq, xi, zi, param)
            block = (das @ iq_vec).reshape(xi.shape, order="F")
            env[r0 : r0 + zr.size, group[0] : group[-1] + 1] = np.abs(block)
    # one gain: match the mean power to the expected echo power (same reference as the fast engine)
    exp_power = expected * 10.0 ** (maps.echo_db / 10.0) * maps.transmission
    exp_power = ndimage.uniform_filter(exp_power, 9)
    valid = exp_power >= np.percentile(exp_power, 20)
    gain = math.sqrt(float(np.mean(exp_power[valid])) / float(np.mean(env[valid] ** 2) + 1e-30))
    ref_n = REFERENCE_DENSITY * dz * dx
    return (env * gain / math.sqrt(ref_n)).astype(np.float32)


def _simulate_rf(
    pymust: Any,
    x: NDArray[np.float64],
    z: NDArray[np.float64],
    rc: NDArray[np.float64],
    param: Any,
    chunk: int,
) -> NDArray[np.float64]:
    delays = pymust.txdelay(param, 0.0)
    options = pymust.utils.Options()
    options.dBThresh = -40.0  # spectrum kept to -40 dB: speckle statistics are unchanged
    options.ElementSplitting = 1  # elements are narrower than a wavelength
    rf: NDArray[np.float64] | None = None
    # simus is linear in the scatterers; chunks bound its memory (and its super-linear cost)
    for start in range(0, x.size, chunk):
        sl = slice(start, start + chunk)
        part, _ = pymust.simus(x[sl], z[sl], rc[sl], delays, param, options)
        if rf is None:
            rf = part
        else:
            length = max(rf.shape[0], part.shape[0])
            rf = np.pad(rf, ((0, length - rf.shape[0]), (0, 0)))
            rf += np.pad(part, ((0, length - part.shape[0]), (0, 0)))
    assert rf is not None
    return rf


def _pymust_param(
    pymust: Any, probe: Probe, width_mm: float, depth_mm: float, max_elements: int
) -> Any:
    # enough elements to open the receive aperture (depth / f-number) over the strip, if possible
    aperture_mm = float(depth_mm) / probe.f_number
    elements = int(math.ceil((width_mm + aperture_mm) / probe.pitch_mm)) + 2
    param = pymust.utils.Param()
    param.fc = probe.centre_frequency_mhz * 1e6
    param.bandwidth = probe.bandwidth * 100.0
    param.pitch = probe.pitch_mm * 1e-3
    param.width = probe.pitch_mm * 0.9e-3
    param.kerf = probe.pitch_mm * 0.1e-3
    param.Nelements = min(elements, max_elements)
    param.radius = math.inf
    param.height = 5e-3
    param.focus = 20e-3
    param.c = SPEED_OF_SOUND
    param.attenuation = 0.0  # attenuation and TGC are applied by the shared display chain
    param.fnumber = probe.f_number
    param.fs = 4.0 * param.fc
    return param


def log_compress(
    envelope: NDArray[np.float32],
    z_mm: NDArray[np.float64],
    probe: Probe,
    display: Display,
    rng: np.random.Generator | None = None,
) -> NDArray[np.uint8]:
    """Apply the display chain and log compression; return 8-bit grey.

    Parameters
    ----------
    envelope : ndarray
        Envelope normalised to reference tissue (unit mean power).
    z_mm : ndarray
        Depth of each row.
    probe : Probe
        The probe (attenuation at its centre frequency).
    display : Display
        Gain, dynamic range, TGC and noise.
    rng : numpy.random.Generator, optional
        When given, the envelope is taken as unattenuated: attenuation and white receiver noise
        are applied here (pymust engine). Without it, the envelope already carries both (fast
        engine, see :func:`envelope_fast`).

    Returns
    -------
    ndarray uint8
    """
    total = envelope
    if rng is not None:
        signal = envelope * (10.0 ** (-_attenuation_db(z_mm, probe) / 20.0))
        noise_amp = 10.0 ** (display.noise_db / 20.0) / math.sqrt(2.0)
        n_re = rng.standard_normal(envelope.shape, dtype=np.float32) * noise_amp
        n_im = rng.standard_normal(envelope.shape, dtype=np.float32) * noise_amp
        total = np.sqrt((signal + n_re) ** 2 + n_im**2)
    power = np.square(total, dtype=np.float32)
    return _grey_from_power(power, z_mm, display)


def _grey_from_power(
    power: NDArray[np.float32], z_mm: NDArray[np.float64], display: Display
) -> NDArray[np.uint8]:
    """Log-compress echo power to 8-bit grey (overwrites ``power``).

    ``255 * (1 + (10 log10(power) + tgc + gain) / dynamic range)``, one pass per operation.
    """
    scale = np.float32(255.0 * 10.0 / display.dynamic_range_db)
    z = np.asarray(z_mm, dtype=np.float64)
    tgc_db = display.tgc_db_cm * (z / 10.0) + display.gain_db
    if display.tgc_curve_db and len(z) > 1:
        knots = np.linspace(z[0], z[-1], len(display.tgc_curve_db))
        tgc_db = tgc_db + np.interp(z, knots, np.asarray(display.tgc_curve_db, np.float64))
    row_offset = (255.0 * (1.0 + tgc_db / display.dynamic_range_db)).astype(np.float32)[:, None]
    grey = power
    grey += np.float32(1e-24)  # the old amplitude floor of 1e-12, squared
    np.log10(grey, out=grey)
    grey *= scale
    grey += row_offset
    np.clip(grey, 0.0, 255.0, out=grey)
    return grey.astype(np.uint8)


def form_bmode(
    maps: TissueMaps,
    probe: Probe,
    display: Display,
    rng: np.random.Generator,
    engine: str = "fast",
) -> NDArray[np.uint8]:
    """Form an 8-bit B-mode image of the maps with the chosen engine.

    Parameters
    ----------
    maps : TissueMaps
        Tissue on the image grid.
    probe : Probe
        The probe.
    display : Display
        The display chain (gain, dynamic range, TGC, noise).
    rng : numpy.random.Generator
        Source of scatterers and noise.
    engine : {"fast", "pymust"}
        Which B-mode engine.

    Returns
    -------
    ndarray uint8, the maps' shape
    """
    if engine == "fast":
        return _grey_from_power(_power_fast(maps, probe, rng, display), maps.z_mm, display)
    if engine == "pymust":
        return log_compress(envelope_pymust(maps, probe, rng), maps.z_mm, probe, display, rng)
    raise ValueError(f"unknown engine {engine!r}; expected 'fast' or 'pymust'")
