"""Simulator variability: scanner profiles, patient relations, SWE artefacts; seeded, recorded."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from training.simulate import write_archive
from training.simulate.bmode import form_bmode
from training.simulate.profiles import PROFILES, draw_acquisition
from training.simulate.swe import SweSettings, acquire_swe
from training.simulate.tissue import (
    LESION,
    LESION_ECHO_SHARES,
    ORGANS,
    Phantom,
    TissueMaps,
    draw_patient_traits,
    make_phantom,
)


def _index(root: Path) -> dict:
    return json.loads((root / "archive.json").read_text())


def test_every_draw_is_recorded_and_a_seed_repeats_it(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_archive(tmp_path / name, patients=2, seed=9, images_per_patient=2, qse=True)
    a, b = _index(tmp_path / "a"), _index(tmp_path / "b")
    assert a == b and a["variability"] == "full" and a["qse"] is True
    for rec_a in a["instances"]:
        pixels_a = pydicom.dcmread(tmp_path / "a" / rec_a["path"]).pixel_array
        pixels_b = pydicom.dcmread(tmp_path / "b" / rec_a["path"]).pixel_array
        assert np.array_equal(pixels_a, pixels_b)
        acq = rec_a["acquisition"]
        assert acq["profile"].endswith({"dual": "swe-dual", "bmode": "swe-bmode-only",
                                        "other-scanner": "other-scanner",
                                        "strain": "other-scanner"}[rec_a["kind"]])  # fmt: skip
        assert len(acq["tgc_curve_db"]) == 6 and acq["psf_sigma_mm"][1] > 0
        assert rec_a["tissue"]["patient"]["echo_slope_db_per_octave"] > 0
        if rec_a["kind"] == "dual":
            assert {"edge_noise", "box_edge_bias", "precompression"} <= set(rec_a["swe_artefacts"])
    # one relation per patient, shared by all its planes; patients differ
    slopes: dict[str, set[float]] = {}
    for rec in a["instances"]:
        slopes.setdefault(rec["patient_id"], set()).add(
            rec["tissue"]["patient"]["echo_slope_db_per_octave"]
        )
    assert all(len(v) == 1 for v in slopes.values()) and len(set().union(*slopes.values())) == 2
    # acquisitions differ between planes of the same kind
    gains = {r["acquisition"]["gain_db"] for r in a["instances"] if r["kind"] == "dual"}
    assert len(gains) == 4


def test_profiles_differ_as_the_paper_describes() -> None:
    profiles = PROFILES["prostate"]
    draws = {
        kind: [draw_acquisition(p, np.random.default_rng([s, 3]), 26.0) for s in range(40)]
        for kind, p in profiles.items()
    }
    # the dual panel's B-mode is a plane-wave image: no transmit focus; the others focus at
    # the gland (which pressure brings closer on the full-screen protocol)
    assert all(a.probe.focus_mm is None for a in draws["dual"])
    full_focus = np.mean([a.probe.focus_mm for a in draws["bmode"]])
    other_focus = np.mean([a.probe.focus_mm for a in draws["other-scanner"]])
    assert 17.0 < full_focus < other_focus < 26.0
    assert all(a.compression > 0.03 for a in draws["bmode"])
    assert {a.geometry.kind for a in draws["dual"]} == {"linear"}
    assert {a.geometry.kind for a in draws["bmode"]} == {"convex"}
    assert {a.geometry.kind for a in draws["other-scanner"]} == {"endocavity"}
    # resolution: PSF widths (mm) and pixel spacing differ by profile
    lateral = {k: np.mean([a.probe.psf_sigma_mm()[1] for a in v]) for k, v in draws.items()}
    assert (
        lateral["bmode"] < 0.8 * lateral["dual"]
        and lateral["other-scanner"] > 1.3 * lateral["dual"]
    )
    spacing = {k: np.mean([a.geometry.spacing_mm for a in v]) for k, v in draws.items()}
    assert spacing["bmode"] < spacing["other-scanner"] < spacing["dual"]
    density = {k: np.mean([a.probe.speckle_density for a in v]) for k, v in draws.items()}
    assert density["other-scanner"] < 0.85 < 1.0 < density["bmode"]
    # settings are drawn per acquisition, within the profile's spread
    gains = [a.display.gain_db for a in draws["other-scanner"]]
    assert 1.5 < np.std(gains) < 6.0
    nominal = draw_acquisition(profiles["bmode"], np.random.default_rng(0), 26.0, vary=False)
    assert nominal.geometry.kind == "linear" and nominal.probe.focus_mm is None


def _homogeneous(rows: int, cols: int, spacing: float) -> TissueMaps:
    shape = (rows, cols)
    return TissueMaps(
        modulus_kpa=np.full(shape, 25.0, np.float32),
        echo_db=np.zeros(shape, np.float32),
        density=np.full(shape, 30.0, np.float32),
        fluid=np.zeros(shape, np.float32),
        transmission=np.ones(shape, np.float32),
        label=np.zeros(shape, np.uint8),
        spacing_mm=(spacing, spacing),
        z_mm=10.0 + np.arange(rows) * spacing,
        x_mm=(np.arange(cols) - cols / 2) * spacing,
    )


def _lateral_grain_mm(image: np.ndarray, spacing: float) -> float:
    """Autocorrelation FWHM along the rows, in mm."""
    x = image.astype(np.float64) - image.mean(axis=1, keepdims=True)
    spectrum = np.abs(np.fft.rfft(x, axis=1)) ** 2
    acf = np.fft.irfft(spectrum.mean(axis=0))
    acf /= acf[0]
    below = int(np.argmax(acf < 0.5))
    return 2 * below * spacing


def test_speckle_grain_and_focus_differ_measurably() -> None:
    profiles = PROFILES["prostate"]
    maps = _homogeneous(240, 400, 0.1)
    grains = {}
    for kind in ("dual", "other-scanner"):
        acq = draw_acquisition(profiles[kind], np.random.default_rng(1), 22.0, vary=False)
        probe = replace(acq.probe, focus_mm=None)
        image = form_bmode(
            maps, probe, replace(acq.display, tgc_db_cm=4.0), np.random.default_rng(2)
        )
        grains[kind] = _lateral_grain_mm(image, 0.1)
    assert grains["other-scanner"] > 1.3 * grains["dual"], grains
    # a focused transmit: finer lateral grain at the focus than far from it
    acq = draw_acquisition(profiles["bmode"], np.random.default_rng(1), 22.0)
    probe = replace(acq.probe, focus_mm=16.0, depth_of_field_mm=8.0, apex_mm=0.0)
    image = form_bmode(maps, probe, acq.display, np.random.default_rng(3))
    z = maps.z_mm
    near = image[(z > 13) & (z < 19)]
    far = image[z > 28]
    assert _lateral_grain_mm(far, 0.1) > 1.4 * _lateral_grain_mm(near, 0.1)


def test_sector_images_are_black_outside_the_fan(tmp_path: Path) -> None:
    write_archive(tmp_path, patients=1, seed=2, images_per_patient=1)
    import h5py

    for rec in _index(tmp_path)["instances"]:
        if rec["kind"] == "dual":
            continue
        pixels = pydicom.dcmread(tmp_path / rec["path"]).pixel_array
        if pixels.ndim == 3:
            pixels = pixels[..., 0]
        t, le, b, r = rec["boxes"]["imaging_region"]
        region = pixels[t:b, le:r]
        assert region[2, 2] == 0 and region[2, -3] == 0  # top corners: outside the sector
        assert region[region.shape[0] // 2, region.shape[1] // 2] > 0
        with h5py.File(tmp_path / "ground_truth.h5") as h5:
            true = h5[rec["sop_uid"]]["true_modulus"][()]
        assert np.isnan(true[2, 2]) and np.isfinite(true[-1, true.shape[1] // 2])


def test_patients_have_their_own_stiffness_echogenicity_relation() -> None:
    traits = [draw_patient_traits(np.random.default_rng([p, 9001]), "prostate") for p in range(300)]
    slopes = np.array([t.echo_slope_db_per_octave for t in traits])
    assert 4.5 < slopes.mean() < 5.5 and 1.0 < slopes.std() < 2.0 and slopes.min() >= 1.5
    kinds: list[str] = []
    contrast: dict[str, list[float]] = {"hypo": [], "iso": [], "hyper": []}
    for p in range(250):
        rng = np.random.default_rng([p, 1])
        phantom: Phantom = make_phantom(rng, "prostate", traits[p])
        x = np.linspace(-30, 30, 121)
        z = np.linspace(2, 55, 107)
        maps = phantom.maps(x, z)
        gland = maps.label == 1
        for region in phantom.regions:
            if region.label != LESION:
                continue
            kinds.append(region.echogenicity)
            ix = np.argmin(np.abs(x - region.x0))
            iz = np.argmin(np.abs(z - region.z0))
            if maps.label[iz, ix] == LESION and gland.sum() > 50:
                contrast[region.echogenicity].append(
                    float(maps.echo_db[iz, ix] - np.median(maps.echo_db[gland]))
                )
    shares = [kinds.count(k) / len(kinds) for k in ("hypo", "iso", "hyper")]
    assert np.allclose(shares, LESION_ECHO_SHARES["prostate"], atol=0.06), shares
    assert np.median(contrast["hypo"]) < -4.0
    assert abs(np.median(contrast["iso"])) < 2.5
    assert np.median(contrast["hyper"]) > 2.0


def test_swe_artefacts_edges_precompression_and_noisy_low_confidence() -> None:
    maps = _homogeneous(300, 300, 0.16)
    maps = replace(maps, z_mm=5.0 + np.arange(300) * 0.16)
    base = SweSettings(noise=0.0, noise_per_cm=0.0, half_depth_mm=200.0)
    plain = acquire_swe(maps, np.random.default_rng(4), settings=base)
    edged = acquire_swe(
        maps,
        np.random.default_rng(4),
        settings=replace(base, box_edge_mm=2.0, box_edge_bias=0.25, precompression=0.3),
    )
    centre = (slice(100, 200), slice(100, 200))
    assert np.nanmean(edged.confidence[:, :3]) < 0.6 * np.nanmean(edged.confidence[centre])
    assert np.nanmean(edged.swe[100:200, :3]) > 1.1 * np.nanmean(plain.swe[100:200, :3])
    top = edged.true_values[:5].mean()
    assert np.nanmean(edged.swe[:5, 100:200]) > 1.15 * top  # stiffer under the probe
    assert math.isclose(float(np.nanmean(edged.swe[centre])), 25.0, rel_tol=0.05)
    # noise grows where the confidence is low
    noisy = replace(SweSettings(half_depth_mm=40.0), edge_noise=0.8)
    acq = acquire_swe(maps, np.random.default_rng(5), settings=noisy)
    measured = acq.swe
    conf = acq.confidence
    hi = np.log(measured[(conf > 0.8) & np.isfinite(measured)])
    lo = np.log(measured[(conf > 0.35) & (conf < 0.55) & np.isfinite(measured)])
    assert lo.std() > 1.5 * hi.std()


@pytest.mark.parametrize("organ", ["prostate", "thyroid"])
def test_variability_none_is_the_nominal_simulator(tmp_path: Path, organ: str) -> None:
    write_archive(tmp_path, patients=1, seed=1, images_per_patient=1, organ=organ,
                  variability="none")  # fmt: skip
    index = _index(tmp_path)
    assert index["variability"] == "none"
    spec = ORGANS[organ]
    for rec in index["instances"]:
        acq = rec["acquisition"]
        assert acq["geometry"] == "linear" and acq["focus_mm"] is None
        assert acq["tgc_curve_db"] == [] and acq["compression"] == 0.0
        assert rec["tissue"]["patient"]["echo_slope_db_per_octave"] == spec.slope_db_per_octave
