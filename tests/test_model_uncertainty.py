"""MC dropout, reflection padding, trust statistics and alignment of a packaged model (issue 12)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from sswe_node.errors import ModelError
from sswe_node.model import MANIFEST_NAME, SsweModel, load_model
from sswe_node.trust import FeatureStats, Gaussian, alignment

pytest.importorskip("keras")

from tests.toydata import blob_frames  # noqa: E402
from training.package import compute_statistics, dumps_toml, write_package, write_statistics  # noqa: E402
from training.unet import build_unet  # noqa: E402


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    folder = tmp_path_factory.mktemp("models") / "tiny-mc"
    # Larger kernels than the default so that dropout visibly moves the output.
    network = build_unet((96, 64), filters=8, seed=5, init_range=0.5)
    write_package(
        network, folder, name="tiny-mc", version="0.0.1", organ="prostate",
        quantity="youngs-modulus", trained_on="untrained test network", status="provisional",
    )  # fmt: skip
    model = load_model(folder, device="cpu")
    images = blob_frames(60)
    stats = compute_statistics(model, images, ["SIM A"] * 60, {"split": "train"})
    write_statistics(folder, stats, sd_scale=2.0)
    return network, folder


def test_mc_dropout_gives_mean_and_sd_reproducibly(packaged) -> None:
    _, folder = packaged
    model = load_model(folder, device="cpu", batch_size=16)
    assert isinstance(model, SsweModel)
    assert model.inference.mc_passes == 8 and model.inference.sd_scale == 2.0
    images = blob_frames(5, seed=1)
    result = model.infer(images)
    assert result.passes == 8
    assert result.values.shape == result.sd.shape == (5, 96, 64)
    assert float(result.sd.mean()) > 0.01  # dropout is on
    deterministic = model.predict(images)
    assert not np.allclose(result.values, deterministic, atol=1e-3)
    # The same fixed masks for every frame: a frame's result does not depend on its batch.
    alone = model.infer(images[3:4])
    np.testing.assert_allclose(alone.values[0], result.values[3], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(alone.sd[0], result.sd[3], rtol=1e-4, atol=1e-4)
    one = model.infer(images, passes=1)
    assert one.sd is None
    np.testing.assert_allclose(one.values, deterministic, rtol=1e-5, atol=1e-4)


def test_mc_sd_matches_keras_dropout_in_expectation(packaged) -> None:
    network, folder = packaged
    model = load_model(folder, device="cpu")
    model.configure(pad=0, sd_scale=1.0)
    images = blob_frames(4, seed=2)
    ours = model.infer(images, passes=64)
    runs = np.stack(
        [np.asarray(network(images[..., None], training=True))[..., 0] for _ in range(64)]
    )
    keras_sd = runs.std(axis=0, ddof=1).mean() * 100
    assert ours.sd.mean() == pytest.approx(keras_sd, rel=0.15)
    assert ours.values.mean() == pytest.approx(runs.mean() * 100, rel=0.02)


def test_padding_zero_is_the_plain_network(packaged) -> None:
    network, folder = packaged
    model = load_model(folder, device="cpu")
    model.configure(pad=0)
    images = blob_frames(3, seed=4)
    expected = np.asarray(network(images[..., None], training=False))[..., 0] * 100
    np.testing.assert_allclose(model.predict(images), expected, rtol=1e-5, atol=1e-4)
    padded = load_model(folder, device="cpu").predict(images)
    assert np.abs(padded - expected)[:, :3].mean() > np.abs(padded - expected)[:, 40:56].mean()


def test_ood_scores_of_training_like_and_unlike_frames(packaged) -> None:
    _, folder = packaged
    model = load_model(folder, device="cpu")
    like = model.infer(blob_frames(40, seed=7), passes=1).ood_score
    unlike = model.infer(blob_frames(10, seed=8, bright=0.5), passes=1).ood_score
    assert np.mean(like > 99) <= 0.1
    assert np.all(unlike > 99)


def test_trust_table_and_reference_are_checksummed(packaged, tmp_path: Path) -> None:
    import shutil

    _, folder = packaged
    copy = tmp_path / "tampered"
    shutil.copytree(folder, copy)
    raw = tomllib.loads((copy / MANIFEST_NAME).read_text())
    raw["trust"]["latent"]["mean"][0] += 1.0
    (copy / MANIFEST_NAME).write_text(dumps_toml(raw))
    with pytest.raises(ModelError, match="SHA-256"):
        load_model(copy)
    shutil.rmtree(copy)
    shutil.copytree(folder, copy)
    data = bytearray((copy / "trust.npz").read_bytes())
    data[-100] ^= 0xFF
    (copy / "trust.npz").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256"):
        load_model(copy)


def test_feature_stats_merge_and_alignment() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(2, 3, (30, 7)), rng.normal(2, 3, (50, 7))
    merged = FeatureStats.from_frames(a).merge(FeatureStats.from_frames(b))
    both = np.concatenate([a, b])
    np.testing.assert_allclose(merged.mean, both.mean(axis=0))
    np.testing.assert_allclose(merged.variance, both.var(axis=0))
    target = FeatureStats.from_frames(rng.normal(-1, 0.5, (200, 7)))
    reference = FeatureStats.from_frames(both)
    scale, shift = alignment(target, reference, eps=0)
    np.testing.assert_allclose(target.mean * scale + shift, reference.mean, rtol=1e-5)
    np.testing.assert_allclose(target.variance * scale**2, reference.variance, rtol=1e-4)


def test_gaussian_percentiles_are_out_of_fold() -> None:
    rng = np.random.default_rng(1)
    train, fresh = rng.normal(size=(150, 10)), rng.normal(size=(2000, 10))
    gauss = Gaussian.fit(train)
    # Out-of-fold training scores make fresh frames of the same distribution rank like them.
    assert np.mean(gauss.percentile(fresh) > 95) < 0.12
    assert np.all(gauss.percentile(rng.normal(4, 1, (20, 10))) == 100)


def test_aligner_waits_for_enough_frames(packaged) -> None:
    from sswe_node.alignment import MemoryScannerStats, make_aligner

    _, folder = packaged
    model = load_model(folder, device="cpu")
    store = MemoryScannerStats()
    images = blob_frames(10, seed=9, bright=0.2)
    first = model.infer(
        images, passes=1, aligner=make_aligner(model, ["B X"] * 10, store, min_frames=16)
    )
    assert not first.aligned.any()
    second = model.infer(
        images, passes=1, aligner=make_aligner(model, ["B X"] * 10, store, min_frames=16)
    )
    assert second.aligned.all() and store.get("tiny-mc", "B X").count == 20
    assert not np.allclose(first.values, second.values)
    plain = model.infer(images, passes=1)
    np.testing.assert_allclose(plain.values, first.values, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("pad", [16, 0])
def test_mc_decoder_equals_the_networks_decoder(packaged, pad: int) -> None:
    """The MC decoder (level-0 skip half once per frame, only the needed region) gives the
    network's own decoder output on the repeated skip features, cropped."""
    from keras import ops

    _, folder = packaged
    model = load_model(folder, device="cpu")
    model.configure(pad=pad)
    graph, passes, n = model._graph, 3, 2
    size = (96 + 2 * pad, 64 + 2 * pad)
    plan = graph.plan(size, (pad, pad + 96), (pad, pad + 64))
    assert (plan is None) == (pad == 0)  # no padding: the whole map (the network's borders)
    rng = np.random.default_rng(4)
    latent = rng.normal(size=(n * passes, size[0] // 4, size[1] // 4, 8)).astype(np.float32)
    skip0 = rng.normal(size=(n, *size, 8)).astype(np.float32)
    skip1 = rng.normal(size=(n * passes, size[0] // 2, size[1] // 2, 8)).astype(np.float32)
    whole = graph.decoder([latent, np.repeat(skip0, passes, axis=0), skip1], training=False)
    whole = np.asarray(whole)[:, pad : pad + 96, pad : pad + 64]
    got = np.asarray(ops.convert_to_tensor(graph.decode(latent, [skip0, skip1], passes, plan)))
    if plan is None:
        got = got[:, pad : pad + 96, pad : pad + 64]
    np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-6)
