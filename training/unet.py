"""The paper's U-Net (section II.B) in backend-agnostic Keras 3, depth and filters configurable."""

from __future__ import annotations

import logging
from typing import Any

from sswe_node.model import LATENT_LAYER  # the one definition (the node splits the network there)

__all__ = ["LATENT_LAYER", "PAPER_PARAMETERS", "build_unet", "count"]

logger = logging.getLogger(__name__)


#: Trainable parameters of the text-as-written network (depth 2, 32 filters, 1x1 output).
PAPER_PARAMETERS = 102_017


def build_unet(
    grid: tuple[int, int] = (96, 64),
    *,
    depth: int = 2,
    filters: int = 32,
    dropout: float = 0.5,
    alpha: float = 0.1,
    init_range: float = 0.05,
    seed: int | None = None,
    name: str = "sswe_unet",
) -> Any:
    """Build the sSWE U-Net.

    Each encoder level is two 3x3 convolutions (LeakyReLU) then 2x2 max-pooling and dropout;
    the latent space is two more convolutions; the decoder mirrors the encoder with
    nearest-neighbour upsampling, skip concatenation and two convolutions per level; a 1x1
    convolution with a sigmoid gives the normalised stiffness.

    Parameters
    ----------
    grid : tuple of int
        Input ``(rows, cols)``; each must be divisible by ``2 ** depth``.
    depth : int
        Encoder levels (the paper's grid search tried 2, 3 and 4; the text describes 2).
    filters : int
        Feature maps of every convolution (32 in the paper).
    dropout : float
        Dropout rate after each max-pooling (0.5 in the paper).
    alpha : float
        LeakyReLU negative slope (0.1 in the paper).
    init_range : float
        Kernels are initialised uniformly in ``[-init_range, init_range]``; biases zero.
    seed : int, optional
        Seed of the kernel initialisers (and dropout layers).
    name : str
        Model name.

    Returns
    -------
    keras.Model
        Input ``(rows, cols, 1)`` float 0-1, output ``(rows, cols, 1)`` sigmoid.
    """
    import keras
    from keras import layers

    rows, cols = (int(g) for g in grid)
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    if rows % 2**depth or cols % 2**depth:
        raise ValueError(f"grid {grid} is not divisible by 2**depth = {2**depth}")

    counter = iter(range(10_000))

    def conv(x: Any, label: str, size: int = 3) -> Any:
        init_seed = None if seed is None else seed + next(counter)
        x = layers.Conv2D(
            filters,
            size,
            padding="same",
            kernel_initializer=keras.initializers.RandomUniform(
                -init_range, init_range, seed=init_seed
            ),
            bias_initializer="zeros",
            name=f"{label}_conv",
        )(x)
        return layers.LeakyReLU(negative_slope=alpha, name=label)(x)

    inputs = keras.Input((rows, cols, 1), name="bmode")
    x = inputs
    skips = []
    for level in range(depth):
        x = conv(x, f"enc{level}_a")
        x = conv(x, f"enc{level}_b")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
        x = layers.Dropout(dropout, seed=seed, name=f"enc{level}_dropout")(x)
    x = conv(x, "latent_a")
    x = conv(x, LATENT_LAYER)
    for level in reversed(range(depth)):
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_skip")([x, skips[level]])
        x = conv(x, f"dec{level}_a")
        x = conv(x, f"dec{level}_b")
    outputs = layers.Conv2D(
        1,
        1,
        activation="sigmoid",
        kernel_initializer=keras.initializers.RandomUniform(-init_range, init_range, seed=seed),
        bias_initializer="zeros",
        name="sswe",
    )(x)
    model = keras.Model(inputs, outputs, name=name)
    logger.debug("built U-Net depth=%d filters=%d: %d parameters", depth, filters, count(model))
    return model


def count(model: Any) -> int:
    """Return the number of trainable parameters of a Keras model."""
    import numpy as np

    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
