"""Joint image/label/mask augmentation of mini-batches, run inside the tf.data input pipeline.

Following the paper (section II.C), a random 90% of each mini-batch is altered by mirroring,
cropping up to 5% per side, a contrast change up to 50% (image only), rotation up to 10
degrees and translation up to 50% laterally and 10% axially. All coordinate transforms are
one projective warp per sample, applied to the image (bilinear) and to the packed targets
(nearest, so that labels never mix with the void and masks stay binary). Pixels moved in from
outside the frame are black B-mode with zero weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AugmentSettings:
    """Ranges of the random alterations (defaults: the paper's)."""

    fraction: float = 0.9
    mirror: bool = True
    crop: float = 0.05
    contrast: float = 0.5
    rotation_degrees: float = 10.0
    shift_lateral: float = 0.5
    shift_axial: float = 0.1


def augment_batch(images: Any, targets: Any, seed: Any, settings: AugmentSettings) -> Any:
    """Augment one mini-batch jointly (TensorFlow graph function).

    Parameters
    ----------
    images : tf.Tensor
        ``(B, rows, cols, 1)`` float32 0-1.
    targets : tf.Tensor
        ``(B, rows, cols, C)`` packed targets (see :func:`training.losses.pack_targets`).
    seed : tf.Tensor
        ``(2,)`` int seed of the stateless random draws for this batch.
    settings : AugmentSettings
        The ranges.

    Returns
    -------
    tuple of tf.Tensor
        The augmented ``(images, targets)``.
    """
    import tensorflow as tf

    s = settings
    batch = tf.shape(images)[0]
    rows = tf.cast(tf.shape(images)[1], tf.float32)
    cols = tf.cast(tf.shape(images)[2], tf.float32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=9)

    def uniform(i: int, low: float, high: float) -> Any:
        return tf.random.stateless_uniform([batch], seeds[i], low, high, tf.float32)

    on = tf.cast(uniform(0, 0.0, 1.0) < s.fraction, tf.float32)
    zero = tf.zeros([batch], tf.float32)
    one = tf.ones([batch], tf.float32)

    # Output -> input coordinate map, composed as crop . mirror . rotate . translate.
    crop_left, crop_right = uniform(1, 0.0, s.crop) * on, uniform(2, 0.0, s.crop) * on
    crop_top, crop_bottom = uniform(3, 0.0, s.crop) * on, uniform(4, 0.0, s.crop) * on
    sx = 1.0 - crop_left - crop_right
    sy = 1.0 - crop_top - crop_bottom
    crop = _matrix(sx, zero, crop_left * cols, zero, sy, crop_top * rows)

    if s.mirror:
        flip = tf.cast(uniform(5, 0.0, 1.0) < 0.5, tf.float32) * on
    else:
        flip = zero
    mirror = _matrix(1.0 - 2.0 * flip, zero, flip * (cols - 1.0), zero, one, zero)

    theta = uniform(6, -1.0, 1.0) * math.radians(s.rotation_degrees) * on
    cx, cy = (cols - 1.0) / 2.0, (rows - 1.0) / 2.0
    cos, sin = tf.cos(theta), tf.sin(theta)
    rotate = _matrix(cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy)

    tx = uniform(7, -1.0, 1.0) * s.shift_lateral * cols * on
    ty = uniform(8, -1.0, 1.0) * s.shift_axial * rows * on
    translate = _matrix(one, zero, -tx, zero, one, -ty)

    m = crop @ mirror @ rotate @ translate
    transforms = tf.reshape(m, [batch, 9])[:, :8]
    shape = tf.shape(images)[1:3]
    warped_images = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=shape,
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    warped_targets = tf.raw_ops.ImageProjectiveTransformV3(
        images=targets,
        transforms=transforms,
        output_shape=shape,
        fill_value=0.0,
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )

    contrast_seed = tf.random.experimental.stateless_fold_in(seeds[0], 1)
    factor = tf.random.stateless_uniform(
        [batch], contrast_seed, 1.0 - s.contrast, 1.0 + s.contrast, tf.float32
    )
    factor = tf.reshape(factor * on + (1.0 - on), [-1, 1, 1, 1])
    mean = tf.reduce_mean(warped_images, axis=[1, 2, 3], keepdims=True)
    warped_images = tf.clip_by_value(mean + factor * (warped_images - mean), 0.0, 1.0)
    return warped_images, warped_targets


def _matrix(a: Any, b: Any, c: Any, d: Any, e: Any, f: Any) -> Any:
    import tensorflow as tf

    zero = tf.zeros_like(a)
    one = tf.ones_like(a)
    rows = [tf.stack([a, b, c], -1), tf.stack([d, e, f], -1), tf.stack([zero, zero, one], -1)]
    return tf.stack(rows, axis=-2)


def make_dataset(
    images: Any,
    targets: Any,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    augment: AugmentSettings | None,
) -> Any:
    """Build the tf.data pipeline: shuffle, batch, augment in parallel, prefetch.

    Parameters
    ----------
    images : numpy.ndarray
        ``(N, rows, cols)`` float32 0-1.
    targets : numpy.ndarray
        ``(N, rows, cols, C)`` packed targets.
    batch_size : int
        Mini-batch size.
    shuffle : bool
        Reshuffle every epoch (seeded).
    seed : int
        Seed of the shuffle and the augmentation draws.
    augment : AugmentSettings or None
        Augmentation ranges, or ``None`` for none.

    Returns
    -------
    tf.data.Dataset
        Batches of ``(images (B, rows, cols, 1), targets)``.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images[..., None], targets))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda pair, s: augment_batch(pair[0], pair[1], s, augment),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return ds.prefetch(tf.data.AUTOTUNE)
