"""Packaged models: manifest, checksum, lookup by name or path, batched compiled predict."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from sswe_node.errors import ModelError
from sswe_node.model import MANIFEST_NAME, load_model, resolve_model_dir

keras = pytest.importorskip("keras")

from training.package import dumps_toml, write_package  # noqa: E402
from training.unet import build_unet  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _package(folder: Path, quantity: str = "youngs-modulus", filters: int = 4):
    model = build_unet((96, 64), filters=filters, seed=3)
    manifest = write_package(
        model,
        folder,
        name=folder.name,
        version="0.0.1",
        organ="prostate",
        quantity=quantity,
        trained_on="untrained test network",
        status="provisional",
        training={"train_mean": 30.0, "split": {"seed": 0, "fractions": [0.5, 0.0, 0.5]}},
    )
    return model, manifest


@pytest.fixture
def packaged(tmp_path):
    return _package(tmp_path / "models" / "tiny")


def test_package_round_trip_predicts_like_the_network(packaged, tmp_path):
    network, manifest = packaged
    assert manifest.unit == "kPa" and manifest.scale == 100.0 and manifest.grid == (96, 64)
    assert manifest.parameters == sum(int(np.prod(w.shape)) for w in network.trainable_weights)
    model = load_model("tiny", models_dir=tmp_path / "models", batch_size=8)
    images = np.random.default_rng(0).random((19, 96, 64), dtype=np.float32)
    expected = np.asarray(network(images[..., None], training=False))[..., 0] * 100.0
    values = model.predict(images)  # 19 images: batches of 8, 8 and 3
    assert values.shape == (19, 96, 64) and values.dtype == np.float32
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(model.predict(images[4]), values[4], rtol=1e-5, atol=1e-4)
    assert model.latent(images[:3]).shape == (3, 24, 16, 4)
    by_path = load_model(tmp_path / "models" / "tiny")
    assert by_path.manifest == model.manifest


def test_wrong_image_shape_is_a_model_error(packaged, tmp_path):
    model = load_model(tmp_path / "models" / "tiny")
    with pytest.raises(ModelError, match="expects"):
        model.predict(np.zeros((2, 64, 96), np.float32))


def test_tampered_weights_fail_the_checksum(packaged, tmp_path):
    weights = tmp_path / "models" / "tiny" / "model.keras"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256") as info:
        load_model(tmp_path / "models" / "tiny")
    assert info.value.reason == "model-checksum"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("unit", "m/s", "quantity"),
        ("format", "other", "not an sSWE model"),
        ("grid", [96], "malformed"),
        ("intended_use", "", "intended_use"),
    ],
)
def test_bad_manifest_is_a_model_error(packaged, tmp_path, key, value, message):
    path = tmp_path / "models" / "tiny" / MANIFEST_NAME
    raw = tomllib.loads(path.read_text())
    raw[key] = value
    path.write_text(dumps_toml(raw))
    with pytest.raises(ModelError, match=message):
        load_model(path.parent)


def test_missing_model_names_the_places_tried(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model("no-such-model", models_dir=tmp_path)


def test_manifest_grid_must_match_the_network(packaged, tmp_path):
    path = tmp_path / "models" / "tiny" / MANIFEST_NAME
    raw = tomllib.loads(path.read_text())
    raw["grid"] = [64, 64]
    path.write_text(dumps_toml(raw))
    with pytest.raises(ModelError, match="does not match manifest grid"):
        load_model(path.parent)


def test_shear_wave_speed_package_uses_10_m_per_s(tmp_path):
    _, manifest = _package(tmp_path / "thyroid-tiny", quantity="shear-wave-speed")
    assert (manifest.unit, manifest.scale, manifest.colour_bar) == ("m/s", 10.0, (0.0, 10.0))


def test_toml_writer_round_trips_nested_tables():
    data = {"a": 1, "b": 'x "q" \\ y', "c": [1.5, 2.0], "t": {"u": True, "v": {"w": "z"}}}
    assert tomllib.loads(dumps_toml(data)) == data


SHIPPED = [
    ("prostate-sim", "youngs-modulus", "kPa", 100.0),
    ("thyroid-sim", "shear-wave-speed", "m/s", 10.0),
]


@pytest.mark.parametrize(("name", "quantity", "unit", "scale"), SHIPPED)
def test_shipped_models_are_found_from_anywhere_and_labelled_synthetic(
    tmp_path, monkeypatch, name, quantity, unit, scale
):
    if not (REPO / "models" / name / MANIFEST_NAME).is_file():
        pytest.skip(f"models/{name} has not been packaged yet")
    monkeypatch.chdir(tmp_path)
    assert resolve_model_dir(name) == REPO / "models" / name
    model = load_model(name)
    m = model.manifest
    assert (m.quantity, m.unit, m.scale, m.grid) == (quantity, unit, scale, (96, 64))
    assert m.parameters == 102_017
    assert "not for diagnosis" in m.intended_use
    assert "simulated" in m.trained_on.lower() or "synthetic" in m.trained_on.lower()
    values = model.predict(np.full((2, 96, 64), 0.4, np.float32))
    assert np.isfinite(values).all() and 0 <= values.min() and values.max() <= scale
