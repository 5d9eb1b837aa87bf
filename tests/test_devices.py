"""`sswe-node train --devices 2`: MirroredStrategy on two logical CPU devices follows the same
loss curve as one device (same recipe, same global batch)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.toydata import write_toy_dataset

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "training" / "configs"

# Logical devices must be made before TensorFlow initialises: each run is a new interpreter.
_RUN = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from training.train import load_config, train
config = load_config(sys.argv[1])
result = train(config, sys.argv[2], sys.argv[3], epochs=int(sys.argv[4]), evaluate=False,
               progress=False, devices=sys.argv[5])
print("HISTORY " + json.dumps(result.history))
"""


def _config(tmp_path: Path) -> Path:
    text = (CONFIGS / "demo.toml").read_text()
    text = text.replace("batch_size = 64", "batch_size = 8")  # global batch: 4 per replica
    text = text.replace("filters = 32", "filters = 8").replace("dropout = 0.5", "dropout = 0.0")
    text = text.replace("augment = true", "augment = false")
    text = text.replace("learning_rate = 0.001", "learning_rate = 0.003")
    text = re.sub(r"(?m)^split = .*$", "split = [0.75, 0.25, 0.0]", text)
    path = tmp_path / "devices.toml"
    path.write_text(text)
    return path


def _train(tmp_path: Path, config: Path, dataset: Path, devices: str) -> dict[str, list[float]]:
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(config), str(dataset), str(tmp_path / f"m{devices}"),
         "4", devices],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("HISTORY "))
    return json.loads(line[len("HISTORY ") :]), done.stderr


@pytest.mark.slow
def test_two_logical_devices_follow_the_one_device_loss_curve(tmp_path: Path) -> None:
    dataset = write_toy_dataset(tmp_path / "toy.h5", patients=8, per_patient=4)
    config = _config(tmp_path)
    one, _ = _train(tmp_path, config, dataset, "1")
    two, log = _train(tmp_path, config, dataset, "2")
    assert "MirroredStrategy on" in log and "replicas in sync: 2" in log, log[-3000:]
    assert len(one["loss"]) == len(two["loss"]) == 4
    assert one["loss"][-1] < 0.97 * one["loss"][0]  # it learns, so the curves say something
    # Same curve within 6 %: the replicas' RMSE is reduced per half batch, float sums differ.
    for key in ("loss", "val_loss", "rmse", "val_rmse"):
        np.testing.assert_allclose(two[key], one[key], rtol=0.06, err_msg=key)
