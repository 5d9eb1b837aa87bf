"""The out-of-distribution gate and the rim, with the shipped simulated models (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from sswe_node.config import load_settings
from sswe_node.model import load_model
from sswe_node.outputs.render import OOD_BANNER
from sswe_node.pipeline import OUT_OF_DISTRIBUTION, pre_process, process_batch

pytest.importorskip("keras")

#: pydicom-data ultrasound files the reading core processes (the others are colour Doppler).
REAL_ULTRASOUND = (
    "gdcm-US-ALOKA-16.dcm",
    "examples_ybr_color.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm",
    "OBXXXX1A.dcm",
)


@pytest.fixture(scope="module")
def prostate():
    return load_model("prostate-sim", device="cpu")


def _archive(
    folder: Path, organ: str, seed: int, patients: int, variability: str = "full"
) -> dict[str, list[Path]]:
    from training.simulate import write_archive

    # prostate-sim was trained on the varied simulator ("full"), thyroid-sim on nominal ones.
    write_archive(
        folder, patients=patients, seed=seed, organ=organ, images_per_patient=3,
        variability=variability,
    )  # fmt: skip
    index = json.loads((folder / "archive.json").read_text())
    kinds: dict[str, list[Path]] = {}
    for item in index["instances"]:
        kinds.setdefault(item["kind"], []).append(folder / item["path"])
    return kinds


@pytest.fixture(scope="module")
def prostate_archive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    return _archive(tmp_path_factory.mktemp("prostate"), "prostate", seed=31, patients=3)


def test_real_ultrasound_is_flagged_and_bannered(prostate, dciodvfy_errors, tmp_path) -> None:
    settings = load_settings()
    datasets = [pydicom.dcmread(get_testdata_file(name)) for name in REAL_ULTRASOUND]
    results = process_batch(datasets, prostate, settings)
    for name, result in zip(REAL_ULTRASOUND, results, strict=True):
        assert result.status == "done", (name, result.message)
        assert OUT_OF_DISTRIBUTION in result.warnings, (name, result.ood_score)
        assert result.ood_score > settings.trust.ood_percentile
        assert result.model_name == "prostate-sim"
        pm, sc = result.outputs[:2]
        assert pm.NumberOfFrames == 2  # values and their MC dropout sd
        assert OOD_BANNER in sc.ImageComments
        for kind, derived in (("pm", pm), ("sc", sc)):
            path = tmp_path / f"{name}-{kind}.dcm"
            derived.save_as(path, enforce_file_format=True)
            assert dciodvfy_errors(path) == [], (name, kind)
        back = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(tmp_path / f"{name}-pm.dcm"))
        assert back.pixel_array.shape[0] == 2 and float(np.nanmin(back.pixel_array[1])) >= 0
        assert np.array_equal(np.isnan(back.pixel_array[0]), np.isnan(back.pixel_array[1]))


def test_own_simulated_captures_pass_and_other_tissue_is_flagged(
    prostate, prostate_archive, tmp_path: Path
) -> None:
    settings = load_settings()
    own = [pydicom.dcmread(p) for p in prostate_archive["dual"]]
    results = process_batch(own, prostate, settings)
    assert all(r.status == "done" for r in results)
    flagged = [OUT_OF_DISTRIBUTION in r.warnings for r in results]
    assert sum(flagged) <= 1, [r.ood_score for r in results]
    assert all(
        OOD_BANNER not in r.outputs[1].ImageComments
        for r, f in zip(results, flagged, strict=True)
        if not f
    )
    # The thyroid captures' colour bars are in m/s (refused by a kPa model): their full-screen
    # B-modes (the thyroid second scanner's are flagged about two times in three:
    # benchmarks/bench_trust.py).
    thyroid = _archive(tmp_path / "thyroid", "thyroid", seed=32, patients=1, variability="none")
    other = [pydicom.dcmread(p) for p in thyroid["bmode"]]
    results = process_batch(other, prostate, settings)
    assert all(r.status == "done" for r in results), [r.message for r in results]
    assert all(OUT_OF_DISTRIBUTION in r.warnings for r in results), [r.ood_score for r in results]


def test_gate_can_be_switched_off(prostate) -> None:
    settings = load_settings(overrides={"trust.ood_percentile": 100.0})
    ds = pydicom.dcmread(get_testdata_file("gdcm-US-ALOKA-16.dcm"))
    result = process_batch([ds], prostate, settings)[0]
    assert result.status == "done" and result.warnings == [] and result.ood_score == 100.0


def test_out_of_distribution_outputs_can_stay_home() -> None:
    from sswe_node.node.case_warnings import sendable
    from sswe_node.node.records import CaseOutcome

    flagged = CaseOutcome("done", warnings=(OUT_OF_DISTRIBUTION,))
    keep_home = load_settings(overrides={"processing.send_out_of_distribution": False})
    assert sendable(flagged, load_settings())
    assert not sendable(flagged, keep_home)
    assert sendable(CaseOutcome("done"), keep_home)


def test_no_rim_on_simulated_test_captures(prostate, prostate_archive) -> None:
    """Outer 3 px of the maps within 1 kPa of the 5 px inside them (reflection padding)."""
    from training.trust_eval import rim

    settings = load_settings()
    inputs = np.concatenate(
        [pre_process(pydicom.dcmread(p), prostate, settings)[1] for p in prostate_archive["dual"]]
    )
    padded = rim(prostate.infer(inputs).values)
    assert abs(padded["difference"]) <= 1.0, padded


def _other_phantoms(count: int, seed: int) -> np.ndarray:
    """Another phantom generator: Rayleigh speckle over smooth maps with round cysts, log
    compressed on the model grid, without the simulator's point-spread function and TGC."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:96, 0:64]
    images = []
    for _ in range(count):
        density = gaussian_filter(rng.random((96, 64)), sigma=rng.uniform(3, 10))
        density = 0.3 + (density - density.min()) / (np.ptp(density) + 1e-9)
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.uniform(0, 96), rng.uniform(0, 64), rng.uniform(4, 14)
            density[(y - cy) ** 2 + (x - cx) ** 2 < r**2] *= rng.uniform(0.05, 0.3)
        db = 20 * np.log10(density * rng.rayleigh(1.0, (96, 64)) + 1e-3)
        span = rng.uniform(40, 70)
        images.append(np.clip((db - db.max() + span) / span, 0, 1))
    return np.asarray(images, np.float32)


@pytest.mark.parametrize("name", ["prostate-sim", "thyroid-sim"])
def test_another_phantom_generator_is_flagged(name: str) -> None:
    """Speckle without a point-spread function: the speckle statistics see it (bench_trust)."""
    model = load_model(name, device="cpu")
    scores = model.infer(_other_phantoms(40, seed=7), passes=1).ood_score
    assert np.mean(scores > load_settings().trust.ood_percentile) >= 0.95, scores


def test_other_organ_second_scanner_is_flagged_by_its_field_of_view(tmp_path: Path) -> None:
    """The prostate archive's second-scanner B-modes look like thyroid frames on the grid;
    their grid cells (mm) do not: the node's field-of-view score flags them."""
    thyroid = load_model("thyroid-sim", device="cpu")
    settings = load_settings()
    prostate = _archive(tmp_path / "p", "prostate", seed=33, patients=1, variability="none")
    other = [pydicom.dcmread(p) for p in prostate["other-scanner"]]
    results = process_batch(other, thyroid, settings)
    assert all(r.status == "done" for r in results), [r.message for r in results]
    assert all(OUT_OF_DISTRIBUTION in r.warnings for r in results), [r.ood_score for r in results]
