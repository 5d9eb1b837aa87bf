"""Confidence-masked RMSE loss and masked MAE/ME metrics (keras.ops, any backend).

Targets are packed as ``y_true[..., 0]`` = label divided by the model scale (0 where there
is no label) and ``y_true[..., 1]`` = 1 where the pixel propagates gradients (confidence above
the threshold and a finite label), else 0. :func:`pack_targets` builds them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Only pixels with an SWE confidence above this propagate loss gradients (paper: > 0.75).
CONFIDENCE_THRESHOLD = 0.75

_EPS = 1e-7


def pack_targets(
    labels: NDArray[np.floating],
    confidence: NDArray[np.floating],
    scale: float,
    threshold: float = CONFIDENCE_THRESHOLD,
) -> NDArray[np.float32]:
    """Pack labels and confidence into the two-channel training target.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(N, rows, cols)`` values in physical units, NaN where unlabelled.
    confidence : numpy.ndarray
        ``(N, rows, cols)`` confidence 0-1.
    scale : float
        Physical value that maps to 1 (100 kPa or 10 m/s).
    threshold : float
        Confidence above which a pixel counts.

    Returns
    -------
    numpy.ndarray
        ``(N, rows, cols, 2)`` float32.
    """
    finite = np.isfinite(labels)
    weight = (finite & (np.nan_to_num(confidence) > threshold)).astype(np.float32)
    value = np.where(finite, labels, 0.0).astype(np.float32) / np.float32(scale)
    return np.stack([value, weight], axis=-1).astype(np.float32)


def _split(y_true: Any, y_pred: Any) -> tuple[Any, Any, Any]:
    from keras import ops

    value = y_true[..., 0]
    weight = y_true[..., 1]
    pred = ops.cast(y_pred[..., 0], value.dtype)
    return value, weight, pred


def masked_rmse(y_true: Any, y_pred: Any) -> Any:
    """Return the RMSE over the confident pixels of the batch (normalised units)."""
    from keras import ops

    value, weight, pred = _split(y_true, y_pred)
    sse = ops.sum(weight * ops.square(value - pred))
    return ops.sqrt(sse / ops.maximum(ops.sum(weight), 1.0) + _EPS)


def masked_mae_metric(scale: float) -> Callable[[Any, Any], Any]:
    """Return a metric: mean absolute error over confident pixels, in physical units."""

    def mae(y_true: Any, y_pred: Any) -> Any:
        from keras import ops

        value, weight, pred = _split(y_true, y_pred)
        total = ops.sum(weight * ops.abs(value - pred))
        return scale * total / ops.maximum(ops.sum(weight), 1.0)

    mae.__name__ = "mae"
    return mae


def masked_me_metric(scale: float) -> Callable[[Any, Any], Any]:
    """Return a metric: mean error (label minus prediction, as in the paper), physical units."""

    def me(y_true: Any, y_pred: Any) -> Any:
        from keras import ops

        value, weight, pred = _split(y_true, y_pred)
        total = ops.sum(weight * (value - pred))
        return scale * total / ops.maximum(ops.sum(weight), 1.0)

    me.__name__ = "me"
    return me


def masked_rmse_metric(scale: float) -> Callable[[Any, Any], Any]:
    """Return a metric: the masked RMSE in physical units."""

    def rmse(y_true: Any, y_pred: Any) -> Any:
        return scale * masked_rmse(y_true, y_pred)

    rmse.__name__ = "rmse"
    return rmse
