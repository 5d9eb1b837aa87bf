"""`sswe-node evaluate`: per-patient metrics, baseline, paired t-test, figures, t-SNE, report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import ttest_rel

from sswe_node.cli import main
from tests.toydata import write_toy_dataset
from training.evaluate import paired_t_tests, per_patient_metrics, summarise

keras = pytest.importorskip("keras")

from training.package import write_package  # noqa: E402
from training.unet import build_unet  # noqa: E402


def test_per_patient_metrics_by_hand():
    labels = np.array([[10.0, 20.0], [30.0, 40.0], [50.0, 0.0]])
    preds = np.array([[12.0, 20.0], [27.0, 40.0], [50.0, 99.0]])
    weights = np.array([[True, True], [True, False], [True, False]])
    patients = np.array(["a", "a", "b"])
    result = per_patient_metrics(preds, labels, weights, patients)
    # patient a: errors (label - prediction) -2, 0, 3; patient b: 0 (the 99 is unconfident)
    assert result["a"]["mae"] == pytest.approx(5 / 3)
    assert result["a"]["me"] == pytest.approx(1 / 3)
    assert result["a"]["rmse"] == pytest.approx(np.sqrt(13 / 3))
    assert result["b"] == {"rmse": 0.0, "mae": 0.0, "me": 0.0, "pixels": 1}
    summary = summarise(result)
    assert summary["mae"]["mean"] == pytest.approx(5 / 6)
    assert summary["mae"]["sd"] == pytest.approx(np.std([5 / 3, 0.0], ddof=1))


def test_paired_t_test_matches_scipy():
    rng = np.random.default_rng(0)
    a = {str(i): {"rmse": x, "mae": x / 2, "me": x - 1} for i, x in enumerate(rng.random(8))}
    b = {str(i): {"rmse": x, "mae": x / 3, "me": x} for i, x in enumerate(rng.random(8) + 0.3)}
    tests = paired_t_tests(a, b)
    keys = sorted(a)
    expected = ttest_rel([a[k]["mae"] for k in keys], [b[k]["mae"] for k in keys])
    assert tests["mae"]["p"] == pytest.approx(expected.pvalue)
    assert tests["mae"]["patients"] == 8


def _package(folder, seed, train_mean):
    write_package(
        build_unet((96, 64), filters=4, seed=seed),
        folder,
        name=folder.name,
        version="0.0.1",
        organ="prostate",
        quantity="youngs-modulus",
        trained_on="untrained test network (toy data)",
        training={
            "train_mean": train_mean,
            "split": {"seed": 0, "fractions": [0.5, 0.0, 0.5], "test_patients_sha256": "x"},
        },
    )


def test_evaluate_command_writes_report_figures_and_tsne(tmp_path, capsys):
    dataset = write_toy_dataset(tmp_path / "toy.h5", patients=6, per_patient=3, other_scanner=9)
    _package(tmp_path / "models" / "a", seed=1, train_mean=40.0)
    _package(tmp_path / "models" / "b", seed=2, train_mean=40.0)
    out = tmp_path / "report"
    argv = ["evaluate", "--model", "a", "--models-dir", str(tmp_path / "models")]
    argv += ["--dataset", str(dataset), "--out", str(out), "--compare", "b", "--figures", "2"]
    assert main(argv) == 0
    assert "on 3 patients" in capsys.readouterr().out

    report = json.loads((out / "report.json").read_text())
    assert report["split"] == "test" and report["patients"] == 3 and report["images"] == 9
    assert report["matches_training_split"] is False  # the digest above is not this dataset's
    assert set(report["model"]["summary"]) == {"rmse", "mae", "me"}
    assert report["baseline"]["summary"]["mae"]["mean"] > 0
    assert "relative" in report["mae_margin_vs_baseline"]
    assert set(report["comparison"]["t_test"]) == {"rmse", "mae", "me"}
    assert report["comparison"]["t_test"]["mae"]["patients"] == 3
    for name in report["figures"]:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert len(report["figures"]) == 2
    tsne = report["tsne"]
    assert sorted(tsne["scanners"]) == ["OtherScanner B", "ToyScanner A"]
    assert tsne["images_per_scanner"] == 9
    assert 0.0 <= tsne["knn_accuracy"] <= 1.0
    assert (out / "tsne.png").is_file()
    markdown = (out / "report.md").read_text()
    assert "not for diagnosis" in markdown and "MAE margin over the baseline" in markdown


def test_evaluate_all_rows_of_an_unseen_dataset(tmp_path):
    dataset = write_toy_dataset(tmp_path / "toy.h5", patients=3, per_patient=2)
    _package(tmp_path / "m", seed=1, train_mean=40.0)
    from training.evaluate import evaluate_model

    report = evaluate_model(tmp_path / "m", dataset, tmp_path / "r", split="all", tsne=False)
    assert report["split"] == "all" and report["patients"] == 3 and report["images"] == 6
    assert "tsne" not in report
