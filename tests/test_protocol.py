"""The paper's evaluation protocol end to end on a tiny simulated archive (2 epochs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sswe_node.cli import main

pytest.importorskip("pytesseract")


def test_tiny_protocol_run_writes_every_report_section(tmp_path: Path) -> None:
    archive, dataset = tmp_path / "archive", tmp_path / "ds.h5"
    assert main(["simulate", "--patients", "6", "--images-per-patient", "2", "--seed", "4",
                 "--qse", "--out", str(archive), "--no-progress"]) == 0  # fmt: skip
    assert main(["dataset", "build", str(dataset), "--folder", str(archive), "--scale", "0",
                 "70", "--organ", "prostate", "--no-progress"]) == 0  # fmt: skip
    from training.protocol import main as protocol

    out = tmp_path / "report"
    assert protocol(["--archive", str(archive), "--dataset", str(dataset), "--out", str(out),
                     "--model", str(tmp_path / "m"), "--ablation-model", str(tmp_path / "n"),
                     "--train", "--epochs", "2", "--figures", "2"]) == 0  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["models"]["model"]["augment"] is True
    assert report["models"]["ablation"]["augment"] is False
    assert report["models"]["model"]["epochs_run"] == 2
    swe = report["swe_test"]
    assert swe["patients"] >= 1 and set(swe["model"]["summary"]) == {"rmse", "mae", "me"}
    assert "baseline" in swe and set(swe["ablation_t_test"]) == {"rmse", "mae", "me"}
    assert set(report["truth"]) == {"dual", "bmode", "other-scanner"}
    for scored in report["truth"].values():
        assert scored["model"]["summary"]["mae"]["mean"] > 0 and "ablation" in scored
    assert set(report["tsne"]) == {"other-scanner", "bmode"}
    assert set(report["fan_filled"]["truth"]) == {"other-scanner", "bmode"}
    qse = report["qse"]
    assert qse["images"] >= 1 and len(qse["per_image"]) == qse["images"]
    assert -1.0 <= qse["ceiling"]["mean"] <= 1.0 and "model" in qse and "ablation" in qse
    text = (out / "report.md").read_text()
    for heading in ("## 1. SWE-scanner test patients", "## 2. Generalisation",
                    "## 3. Latent overlap", "### 3b. Diagnostic", "## 4. Augmentation ablation",
                    "## 5. QSE comparison"):  # fmt: skip
        assert heading in text
    assert (out / "fig6-1.png").is_file()
