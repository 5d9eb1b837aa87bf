"""Training end to end on a small simulated archive: simulate -> dataset build -> train."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np

from sswe_node.cli import main
from sswe_node.model import load_model
from training.datafile import read_dataset

ROOT = Path(__file__).resolve().parent.parent


def test_training_on_a_simulated_archive_learns_and_reloads(tmp_path: Path) -> None:
    archive, dataset, out = tmp_path / "sim", tmp_path / "sim.h5", tmp_path / "model"
    assert main(["simulate", "--patients", "8", "--images-per-patient", "3", "--seed", "5",
                 "--no-other-scanner", "--out", str(archive), "--no-progress"]) == 0  # fmt: skip
    assert main(["dataset", "build", str(dataset), "--folder", str(archive / "dicom"),
                 "--scale", "0", "70", "--organ", "prostate", "--no-progress"]) == 0  # fmt: skip
    config = tomllib.loads((ROOT / "training/configs/demo.toml").read_text())
    config["training"].update(epochs=12, batch_size=8)
    config_path = tmp_path / "small.toml"
    config_path.write_text(_to_toml(config))
    assert main(["train", "--config", str(config_path), "--dataset", str(dataset),
                 "--out", str(out), "--no-evaluate"]) == 0  # fmt: skip

    history = (out / "work" / "history.csv").read_text().splitlines()
    header = history[0].split(",")
    losses = [float(row.split(",")[header.index("loss")]) for row in history[1:]]
    assert len(losses) == 12
    assert min(losses[-3:]) < 0.8 * losses[0], losses

    manifest = (out / "model.toml").read_text()
    assert "SIMULATED data only" in manifest
    data = read_dataset(dataset)
    images = data.images[:5]
    first = load_model(out).predict(images)
    again = load_model(out).predict(images)
    np.testing.assert_array_equal(first, again)
    assert np.isfinite(first).all() and first.shape == images.shape


def _to_toml(config: dict) -> str:
    lines = []
    for section, values in config.items():
        tables = {k: v for k, v in values.items() if isinstance(v, dict)}
        lines.append(f"[{section}]")
        lines += [f"{k} = {_value(v)}" for k, v in values.items() if k not in tables]
        for name, table in tables.items():
            lines.append(f"[{section}.{name}]")
            lines += [f"{k} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return repr(value)
