"""The U-Net builder, the masked loss and the augmentation (TensorFlow, small and fast)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from training.augment import AugmentSettings, augment_batch  # noqa: E402
from training.losses import masked_mae_metric, masked_me_metric, masked_rmse, pack_targets  # noqa: E402
from training.unet import LATENT_LAYER, PAPER_PARAMETERS, build_unet, count  # noqa: E402


def test_paper_network_has_the_text_as_written_parameter_count():
    model = build_unet((96, 64), seed=0)
    assert count(model) == PAPER_PARAMETERS == 102_017
    assert model.output_shape == (None, 96, 64, 1)
    assert model.get_layer(LATENT_LAYER).output.shape[1:] == (24, 16, 32)


@pytest.mark.parametrize(("depth", "filters", "expected"), [(3, 32, 148_225), (4, 32, 194_433)])
def test_depth_and_filters_are_configurable(depth, filters, expected):
    model = build_unet((96, 64), depth=depth, filters=filters)
    assert count(model) == expected
    latent = model.get_layer(LATENT_LAYER).output.shape
    assert latent[1:3] == (96 // 2**depth, 64 // 2**depth)


def test_initialisation_is_uniform_and_biases_zero_and_output_is_sigmoid():
    model = build_unet((32, 32), filters=8, seed=1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = (np.asarray(w) for w in layer.get_weights())
            assert np.abs(kernel).max() <= 0.05 and np.abs(kernel).max() > 0.03
            assert not bias.any()
    out = np.asarray(model(np.random.default_rng(0).random((2, 32, 32, 1), np.float32)))
    assert ((out > 0) & (out < 1)).all()


def test_grid_must_be_divisible_by_the_pooling():
    with pytest.raises(ValueError, match="divisible"):
        build_unet((90, 64), depth=2)


def test_masked_loss_ignores_unconfident_and_unlabelled_pixels():
    rng = np.random.default_rng(0)
    labels = rng.uniform(0, 70, (2, 8, 8)).astype(np.float32)
    labels[0, :2] = np.nan
    confidence = rng.uniform(0, 1, (2, 8, 8)).astype(np.float32)
    targets = pack_targets(labels, confidence, 100.0)
    weight = targets[..., 1] > 0
    assert not weight[0, :2].any() and (weight == (np.isfinite(labels) & (confidence > 0.75))).all()
    pred = rng.uniform(0, 1, (2, 8, 8, 1)).astype(np.float32)
    expected = np.sqrt(np.mean((labels[weight] / 100 - pred[..., 0][weight]) ** 2))
    assert float(masked_rmse(targets, pred)) == pytest.approx(expected, rel=1e-4)
    changed = pred.copy()
    changed[..., 0][~weight] = 0.99  # predictions where no gradient flows do not matter
    assert float(masked_rmse(targets, changed)) == pytest.approx(expected, rel=1e-4)
    err = labels[weight] - 100 * pred[..., 0][weight]
    assert float(masked_mae_metric(100.0)(targets, pred)) == pytest.approx(np.abs(err).mean(), 1e-4)
    assert float(masked_me_metric(100.0)(targets, pred)) == pytest.approx(err.mean(), 1e-3)


def _batch(n=64, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, 96, 64, 1)).astype(np.float32)
    targets = np.stack([rng.random((n, 96, 64)), rng.random((n, 96, 64)) > 0.5], -1)
    return images, targets.astype(np.float32)


def test_augmentation_off_is_identity_and_mirror_is_joint():
    images, targets = _batch(8)
    seed = np.array([3, 4])
    same_i, same_t = augment_batch(images, targets, seed, AugmentSettings(fraction=0.0))
    np.testing.assert_allclose(same_i, images, atol=1e-6)
    np.testing.assert_array_equal(same_t, targets)
    only_mirror = AugmentSettings(
        fraction=1.0, crop=0, contrast=0, rotation_degrees=0, shift_lateral=0, shift_axial=0
    )
    out_i, out_t = (np.asarray(a) for a in augment_batch(images, targets, seed, only_mirror))
    flipped = [np.allclose(out_i[k], images[k, :, ::-1], atol=1e-6) for k in range(8)]
    kept = [np.allclose(out_i[k], images[k], atol=1e-6) for k in range(8)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)
    for k in range(8):  # labels and masks follow their image
        ref = targets[k, :, ::-1] if flipped[k] else targets[k]
        np.testing.assert_array_equal(out_t[k], ref)


def test_paper_augmentation_alters_about_90_percent_and_keeps_masks_binary():
    images, targets = _batch(200, seed=1)
    out_i, out_t = (
        np.asarray(a) for a in augment_batch(images, targets, [7, 8], AugmentSettings())
    )
    changed = np.abs(out_i - images).reshape(200, -1).max(axis=1) > 1e-4
    assert 0.8 < changed.mean() < 0.97
    assert set(np.unique(out_t[..., 1])) <= {0.0, 1.0}
    assert out_i.min() >= 0 and out_i.max() <= 1
    again = np.asarray(augment_batch(images, targets, [7, 8], AugmentSettings())[0])
    np.testing.assert_array_equal(again, out_i)  # stateless: the seed decides
