"""`sswe-node train` end to end on a small synthetic dataset file (few epochs)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from sswe_node.cli import main
from sswe_node.errors import ConfigError
from sswe_node.model import load_model
from tests.toydata import write_toy_dataset

keras = pytest.importorskip("keras")

from training.train import load_config  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "training" / "configs"


def _config(tmp_path: Path, epochs: int = 6) -> Path:
    text = re.sub(r"(?m)^epochs = \d+", f"epochs = {epochs}", (CONFIGS / "demo.toml").read_text())
    text = text.replace("batch_size = 64", "batch_size = 4")
    text = text.replace("learning_rate = 0.001", "learning_rate = 0.002")
    text = text.replace("split = [0.7, 0.1, 0.2]", "split = [0.6, 0.2, 0.2]")
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


def _history(work: Path) -> list[dict[str, str]]:
    with open(work / "history.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_train_end_to_end_loss_decreases_and_package_reloads_identically(tmp_path, capsys):
    dataset = write_toy_dataset(tmp_path / "toy.h5", patients=8, per_patient=4, other_scanner=6)
    out = tmp_path / "models" / "toy-sim"
    argv = ["train", "--config", str(_config(tmp_path)), "--dataset", str(dataset)]
    argv += ["--out", str(out), "--work-dir", str(tmp_path / "work")]
    assert main(argv) == 0
    assert "toy-sim" in capsys.readouterr().out

    history = _history(tmp_path / "work")
    losses = [float(row["loss"]) for row in history]
    assert len(losses) == 6
    assert min(losses[-2:]) < 0.85 * losses[0], losses
    assert (tmp_path / "work" / "logs").is_dir()  # TensorBoard
    assert (tmp_path / "work" / "checkpoints" / "best.keras").is_file()

    model = load_model("toy-sim", models_dir=tmp_path / "models")
    m = model.manifest
    assert m.parameters == 102_017 and m.quantity == "youngs-modulus"
    assert m.training["split"]["by"] == "patient" and m.training["split"]["seed"] == 0
    assert m.training["split"]["test_patients"] == 2
    assert "from dataset file toy.h5" in m.trained_on and "ToyScanner" in m.trained_on
    assert {"train", "validation", "test_per_patient"} <= set(m.metrics)
    assert (out / "evaluation" / "report.md").is_file()

    best = keras.saving.load_model(tmp_path / "work" / "checkpoints" / "best.keras", compile=False)
    images = np.random.default_rng(0).random((5, 96, 64), dtype=np.float32)
    expected = np.asarray(best(images[..., None], training=False))[..., 0] * 100
    model.configure(pad=0)  # the packaged network itself (the node pads against the rim)
    np.testing.assert_allclose(model.predict(images), expected, rtol=1e-5, atol=1e-4)
    again = load_model(out)
    again.configure(pad=0)
    np.testing.assert_array_equal(again.predict(images), model.predict(images))
    assert load_model(out).trust is not None and m.inference["sd_scale"] > 0  # at packaging


@pytest.mark.slow
def test_resume_continues_from_the_backup(tmp_path):
    dataset = write_toy_dataset(tmp_path / "toy.h5", patients=6, per_patient=3)
    config = _config(tmp_path, epochs=2)
    common = ["--config", str(config), "--dataset", str(dataset), "--out", str(tmp_path / "m")]
    common += ["--work-dir", str(tmp_path / "work"), "--no-evaluate", "--no-augment"]
    assert main(["train", *common]) == 0
    assert len(_history(tmp_path / "work")) == 2
    assert main(["train", *common, "--epochs", "3", "--resume"]) == 0
    rows = _history(tmp_path / "work")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]  # only epoch 2 was run again
    manifest = load_model(tmp_path / "m").manifest
    assert manifest.training["recipe"]["augment"] is False


def test_paper_recipe_is_the_default_config():
    config = load_config(CONFIGS / "paper.toml")
    t = config.training
    assert (t.epochs, t.batch_size, t.learning_rate, t.plateau_patience) == (2100, 64, 1e-3, 10)
    assert t.augment and config.augment.fraction == 0.9 and config.augment.shift_lateral == 0.5
    assert (config.model.depth, config.model.filters, config.model.dropout) == (2, 32, 0.5)


def test_bad_config_key_names_the_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[training]\nepoch = 3\n")
    with pytest.raises(ConfigError, match="training.epoch"):
        load_config(path)
    path.write_text("[training]\nepochs = 'many'\n")
    with pytest.raises(ConfigError, match="wrong type"):
        load_config(path)


def test_trained_on_comes_from_the_dataset() -> None:
    import numpy as np

    from training.train import describe_training_data

    class Data:
        meta = {
            "manufacturer": np.array(["SSWE Simulator", "SSWE Simulator", "ACME"]),
            "model_name": np.array(["SWE-Sim", "SWE-Sim", "X1"]),
            "patient_key": np.array(["a", "b", "c"]),
        }

    simulated = describe_training_data(Data(), [0, 1], "sim.h5")
    assert simulated.startswith("SIMULATED data only")
    assert "2 labelled images of 2 patients" in simulated
    real = describe_training_data(Data(), [2], "hospital.h5", "note")
    assert "SIMULATED" not in real and "ACME X1" in real and real.endswith("note")
    assert describe_training_data(Data(), [0, 2], "mix.h5").startswith("MIXED")
