"""One rule for the colour-bar scale, the same in the reading core, the node pipeline and datasets.

The capture of these tests has its bar labelled "180 kPa" (the simulator draws the maximum per
acquisition; seed 0 gives 180 kPa for the first plane, 70 kPa for the second).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pydicom
import pytest

from sswe_node.cli import main
from sswe_node.config import load_settings
from sswe_node.errors import ScaleMismatchError
from sswe_node.imaging import read_instance
from sswe_node.imaging.scale import ScaleSetting, choose_scale
from sswe_node.imaging.scale_labels import BarLabels
from sswe_node.model import load_model
from sswe_node.pipeline import process_batch
from training.datafile import read_dataset
from training.dataset import BuildOptions, build_from_folder
from training.pseudonym import PseudonymKey

KEY = PseudonymKey(b"scale-rule-tests", "test")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two prostate planes: dual captures labelled 0-180 kPa and 0-70 kPa, and their B-modes."""
    from training.simulate import write_archive

    root = tmp_path_factory.mktemp("scales") / "archive"
    write_archive(root, patients=1, seed=0, images_per_patient=2, scales="random",
                  opacity=1.0, other_scanner=False)  # fmt: skip
    return root


def _duals(root: Path) -> dict[float, dict]:
    index = json.loads((root / "archive.json").read_text())
    return {e["scale_max"]: e for e in index["instances"] if e["kind"] == "dual"}


@pytest.fixture(scope="module")
def capture_180(archive: Path) -> tuple[pydicom.Dataset, np.ndarray]:
    entry = _duals(archive)[180.0]
    with h5py.File(archive / "ground_truth.h5", "r") as gt:
        truth = gt[entry["sop_uid"]]["swe"][()]
    return pydicom.dcmread(archive / entry["path"]), truth


def _median_error(reading, truth: np.ndarray, scale: tuple[float, float]) -> float:
    expected = np.clip(truth, *scale)  # the scanner's colours saturate at the bar's ends
    both = np.isfinite(expected) & np.isfinite(reading.swe) & (reading.confidence > 0)
    return float(np.median(np.abs(reading.swe[both] - expected[both])))


def test_the_rule() -> None:
    labels = BarLabels(0.0, 180.0, "kPa")
    fallback = ScaleSetting(0.0, 70.0, "manifest", explicit=False)
    configured = ScaleSetting(0.0, 70.0, "config")
    assert choose_scale(unit="kPa", setting=fallback, labels=labels).source == "image-labels"
    with pytest.raises(ScaleMismatchError, match="labelled 0-180 kPa but 0-70 kPa"):
        choose_scale(unit="kPa", setting=configured, labels=labels)
    agreeing = ScaleSetting(0.0, 180.0, "option")
    assert choose_scale(unit="kPa", setting=agreeing, labels=labels).scale == (0.0, 180.0)
    with pytest.raises(ScaleMismatchError, match="labelled in kPa"):
        choose_scale(unit="m/s", setting=None, labels=labels)
    private = choose_scale(unit="kPa", setting=configured, labels=labels, private=True)
    assert private.source == "private-data"  # the stored values need no scale
    assert choose_scale(unit="kPa", setting=configured, labels=None).source == "config"
    assert choose_scale(unit="kPa", setting=None, labels=None).scale is None


def test_a_180_kpa_capture_is_decoded_at_180_without_configuration(capture_180) -> None:
    ds, truth = capture_180
    (reading,) = read_instance(ds)
    assert reading.scale == (0.0, 180.0) and reading.scale_source == "image-labels"
    assert _median_error(reading, truth, reading.scale) <= 2.0
    # decoding it at the 0-70 kPa default of earlier versions was ~19 kPa off (the issue):
    with pytest.raises(ScaleMismatchError, match="0-180 kPa but 0-70 kPa is given"):
        read_instance(ds, scale=(0.0, 70.0))
    (trusted,) = read_instance(ds, scale=(0.0, 70.0), read_labels=False)
    assert _median_error(trusted, truth, (0.0, 180.0)) > 10.0


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path):
    return load_model(tiny_model_dir, device="cpu")


def test_the_node_uses_the_labels_and_refuses_a_configured_mismatch(capture_180, model) -> None:
    ds, _ = capture_180
    (done,) = process_batch([ds], model, load_settings())  # the default: colour_bar 0 / 0
    assert done.status == "done", done.message
    assert (done.scale_min, done.scale_max, done.scale_unit, done.scale_source) == (
        0.0, 180.0, "kPa", "image-labels",
    )  # fmt: skip
    pm = done.outputs[0]
    shared = pm.SharedFunctionalGroupsSequence[0]
    groups = (
        shared
        if "RealWorldValueMappingSequence" in shared
        else (pm.PerFrameFunctionalGroupsSequence[0])
    )
    mapping = groups.RealWorldValueMappingSequence[0]
    assert mapping.DoubleFloatRealWorldValueLastValueMapped >= 180.0
    assert float(shared.FrameVOILUTSequence[0].WindowWidth) == 180.0
    assert "0-180 kPa, from the labels printed beside" in pm.DerivationDescription
    assert "0-180 kPa" in done.outputs[1].DerivationDescription  # the Secondary Capture
    configured = load_settings(
        overrides={"reading.colour_bar_min": 0.0, "reading.colour_bar_max": 70.0}
    )
    (refused,) = process_batch([ds], model, configured)
    assert (refused.status, refused.reason) == ("skipped", "scale-mismatch")
    assert "labelled 0-180 kPa but 0-70 kPa is configured" in refused.message
    assert refused.outputs == []


def test_dataset_build_decodes_at_the_labels_and_counts_mismatches(archive, tmp_path) -> None:
    report = build_from_folder(
        archive / "dicom", tmp_path / "labels.h5", KEY, BuildOptions(workers=1)
    )
    assert report.labelled == 2 and not report.rejections
    data = read_dataset(tmp_path / "labels.h5")
    labelled = data.meta["labelled"]
    assert sorted(data.meta["scale_max"][labelled]) == [70.0, 180.0]
    assert set(data.meta["scale_source"][labelled]) == {"image-labels"}
    assert set(data.meta["scale_unit"][labelled]) == {"kPa"}
    assert set(data.meta["scale_source"][~labelled]) == {""}  # B-mode rows have no scale

    given = BuildOptions(workers=1, scale=(0.0, 70.0))
    report = build_from_folder(archive / "dicom", tmp_path / "option.h5", KEY, given)
    assert report.rejections == {"scale-mismatch": 1}  # the 180 kPa capture
    data = read_dataset(tmp_path / "option.h5")
    assert list(data.meta["scale_source"][data.meta["labelled"]]) == ["image-labels"]


def test_dataset_build_command_reports_the_mismatch(archive, tmp_path, capsys) -> None:
    (tmp_path / "key").write_text("scale-rule-key\n")
    key = str(tmp_path / "key")
    argv = ["dataset", "build", str(tmp_path / "cli.h5"), "--folder", str(archive / "dicom"),
            "--scale", "0", "70", "--workers", "1", "--key-file", key]  # fmt: skip
    assert main(argv) == 0
    assert "rejected scale-mismatch: 1" in capsys.readouterr().out
