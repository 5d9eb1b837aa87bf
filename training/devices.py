"""Training on several devices: a ``tf.distribute`` strategy for ``sswe-node train --devices``.

- ``--devices 1`` (the default): TensorFlow's default strategy (one GPU if present, else CPU).
- ``--devices N`` / ``all``: ``tf.distribute.MirroredStrategy`` over the first N (every) GPU of
  this machine, synchronous data parallelism. The global batch stays the recipe's
  (``training.batch_size``, 64 in the paper recipe): each of the N replicas computes 64/N
  samples and the gradients are summed, so the recipe, the learning rate and the result do not
  depend on N (up to float rounding and the per-replica RMSE, see below).
- Several machines: set ``TF_CONFIG`` (``{"cluster": {"worker": ["host1:12345", ...]},
  "task": {"type": "worker", "index": i}}``) on every machine and run the same command; a
  ``TF_CONFIG`` with more than one worker selects ``MultiWorkerMirroredStrategy``.

Without GPUs, N logical CPU devices (``tf.config.set_logical_device_configuration``, made before
TensorFlow initialises) are used instead, which is how the tests check the strategy on CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

from sswe_node.errors import ConfigError

logger = logging.getLogger(__name__)


def parse_devices(value: str | int | None) -> int | None:
    """Return the device count asked for: an int >= 1, ``None`` for ``all``/unset."""
    if value is None or value == "all":
        return None
    try:
        count = int(value)
    except ValueError:
        raise ConfigError(f"--devices must be a number or 'all', got {value!r}") from None
    if count < 1:
        raise ConfigError(f"--devices must be at least 1 or 'all', got {value}")
    return count


def strategy_for(devices: str | int | None) -> Any:
    """Return the ``tf.distribute`` strategy for ``--devices`` (see the module docstring).

    Parameters
    ----------
    devices : int, str or None
        A count, ``"all"``, or ``None``/``1`` for the default strategy.

    Returns
    -------
    tf.distribute.Strategy
    """
    import tensorflow as tf

    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    if len(tf_config.get("cluster", {}).get("worker", [])) > 1:
        logger.info("training with MultiWorkerMirroredStrategy (TF_CONFIG)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if devices in (None, 1, "1"):
        return tf.distribute.get_strategy()
    count = parse_devices(devices)
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    names = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
    chosen = names if count is None else names[:count]
    if count is not None and len(chosen) < count:
        raise ConfigError(f"--devices {count}: only {len(names)} here ({', '.join(names)})")
    if len(chosen) == 1:
        return tf.distribute.get_strategy()
    cross = None if gpus else tf.distribute.ReductionToOneDevice()
    logger.info("training with MirroredStrategy on %s", ", ".join(chosen))
    return tf.distribute.MirroredStrategy(devices=chosen, cross_device_ops=cross)


@contextlib.contextmanager
def strategy_scope(devices: str | int | None) -> Iterator[Any]:
    """Enter the strategy's scope for building and compiling the model; yield the strategy."""
    strategy = strategy_for(devices)
    with strategy.scope():
        yield strategy


def replica_loss_callbacks(strategy: Any) -> list[Any]:
    """Return a callback that reports the loss of a multi-replica run as one device would.

    The recipe's loss (masked RMSE) is reduced over the whole batch inside the function. Keras
    (3.x, TensorFlow backend) scales each replica's loss by 1/N for the gradients, which is
    right, but then reports ``loss``/``val_loss`` as the sum over the N replicas of the
    per-replica losses: N times the value. The metrics are not affected. This callback, first
    in the list, divides the two logged values by N before checkpointing, the learning-rate
    schedule, the CSV log and the history see them.
    """
    replicas = int(getattr(strategy, "num_replicas_in_sync", 1))
    if replicas <= 1:
        return []
    import keras

    class _ReplicaLoss(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            for key in ("loss", "val_loss"):
                if logs is not None and key in logs:
                    logs[key] = float(logs[key]) / replicas

    return [_ReplicaLoss()]
