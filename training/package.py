"""Write a packaged model folder: ``model.keras`` plus the ``model.toml`` manifest."""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sswe_node.model import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    QUANTITY_UNITS,
    Manifest,
    sha256_file,
)

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.keras"
INTENDED_USE = (
    "Research use only. Synthetic SWE is an estimate from B-mode images, not a measurement; "
    "not for diagnosis or any clinical decision."
)
#: Default scale (network output 1.0) and display range per quantity.
DEFAULT_SCALE = {"youngs-modulus": 100.0, "shear-wave-speed": 10.0}
DEFAULT_COLOUR_BAR = {"youngs-modulus": (0.0, 70.0), "shear-wave-speed": (0.0, 10.0)}


def write_package(
    keras_model: Any,
    out_dir: str | Path,
    *,
    name: str,
    version: str,
    organ: str,
    quantity: str,
    trained_on: str,
    scale: float | None = None,
    colour_bar: tuple[float, float] | None = None,
    spacing_mm: tuple[float, float] = (1.0, 1.0),
    status: str = "release",
    architecture: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    intended_use: str = INTENDED_USE,
) -> Manifest:
    """Save a model and its manifest into ``out_dir`` (created; existing files replaced).

    Parameters
    ----------
    keras_model : keras.Model
        The trained network.
    out_dir : path-like
        The package folder (its name should be the model name).
    name, version, organ, quantity, trained_on : str
        Manifest fields (see :class:`sswe_node.model.Manifest`).
    scale : float, optional
        Output scale; default 100 kPa or 10 m/s from ``quantity``.
    colour_bar : tuple of float, optional
        Display range; default (0, 70) kPa or (0, 10) m/s.
    spacing_mm : tuple of float
        Expected spacing of one model-grid pixel.
    status : str
        ``"release"`` or ``"provisional"``.
    architecture, training, metrics : mapping, optional
        Builder settings, training provenance, metrics per split.
    intended_use : str
        Intended-use statement.

    Returns
    -------
    Manifest
        The manifest written (validated by reading it back).
    """
    from training.unet import count

    if quantity not in QUANTITY_UNITS:
        raise ValueError(f"quantity must be one of {sorted(QUANTITY_UNITS)}, got {quantity!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_NAME
    # Save next to the target then move, so a crash never leaves a half-written weights file.
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        staged = Path(tmp) / WEIGHTS_NAME
        _inference_copy(keras_model).save(staged)
        shutil.move(staged, weights)
    _, rows, cols, _ = keras_model.input_shape
    raw: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "name": name,
        "version": version,
        "status": status,
        "organ": organ,
        "quantity": quantity,
        "unit": QUANTITY_UNITS[quantity],
        "scale": float(DEFAULT_SCALE[quantity] if scale is None else scale),
        "grid": [int(rows), int(cols)],
        "colour_bar": list(colour_bar or DEFAULT_COLOUR_BAR[quantity]),
        "spacing_mm": [float(s) for s in spacing_mm],
        "trained_on": trained_on,
        "intended_use": intended_use,
        "parameters": count(keras_model),
        "weights": WEIGHTS_NAME,
        "sha256": sha256_file(weights),
        "architecture": dict(architecture or {}),
        "training": dict(training or {}),
        "metrics": dict(metrics or {}),
    }
    (out / MANIFEST_NAME).write_text(dumps_toml(raw), encoding="utf-8")
    logger.info("wrote model package %s (%s)", out, status)
    import tomllib

    return Manifest.from_dict(tomllib.loads((out / MANIFEST_NAME).read_text()), str(out))


def _inference_copy(keras_model: Any) -> Any:
    """Return an uncompiled copy (no optimizer state: a third of the file, nothing to train)."""
    import keras

    copy = keras.Model.from_config(keras_model.get_config())
    copy.set_weights(keras_model.get_weights())
    return copy


def dumps_toml(data: Mapping[str, Any]) -> str:
    """Serialise a mapping of strings, numbers, booleans, lists and tables to TOML."""
    lines: list[str] = ["# sSWE packaged model manifest (written by training.package)."]
    _emit_table(data, [], lines)
    return "\n".join(lines) + "\n"


def _emit_table(data: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    tables = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        elif value is not None:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in tables:
        lines.append("")
        lines.append("[" + ".".join(_key(k) for k in [*path, key]) + "]")
        _emit_table(value, [*path, key], lines)


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else _string(key)


def _string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    escaped = escaped.replace("\t", "\\t").replace("\r", "\\r")
    return f'"{escaped}"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if hasattr(value, "item"):  # numpy scalars
        return _value(value.item())
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    return _string(str(value))
