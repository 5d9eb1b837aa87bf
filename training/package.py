"""Write a packaged model folder: ``model.keras`` plus the ``model.toml`` manifest."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from sswe_node.model import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    QUANTITY_UNITS,
    Manifest,
    sha256_file,
)

if TYPE_CHECKING:
    from sswe_node.trust import TrustStats

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
    inference: Mapping[str, Any] | None = None,
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
    inference : mapping, optional
        The ``[inference]`` table (default :func:`default_inference`). Trust statistics are
        added afterwards by :func:`add_statistics`.

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
        "training": {**dict(training or {}), "software": software_versions()},
        "metrics": dict(metrics or {}),
        "inference": dict(inference or default_inference(quantity, scale)),
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
    """Serialise a mapping of strings, numbers, booleans, lists and tables to TOML (tomli-w).

    ``None`` values are left out (TOML has no null), tuples become arrays, numpy scalars
    their Python values, and anything else its ``str``.
    """
    import tomli_w

    header = "# sSWE packaged model manifest (written by training.package).\n"
    return header + tomli_w.dumps(_plain(data))


def _plain(value: Any) -> Any:
    """Turn ``value`` into what TOML can hold: tables, arrays, strings, numbers, booleans."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    return str(value)


def software_versions() -> dict[str, str]:
    """Return the versions of what trained and saved a model: Python, Keras, its backend."""
    import platform

    import keras

    from sswe_node import __version__

    versions = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "sswe_node": __version__,
    }
    if versions["keras_backend"] == "tensorflow":
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    return versions


def default_inference(quantity: str, scale: float | None = None) -> dict[str, Any]:
    """Return the default ``[inference]`` table (MC passes, padding, thresholds)."""
    from sswe_node.model import DEFAULT_MC_PASSES, DEFAULT_PAD, DEFAULT_SD_FRACTION

    scale = float(DEFAULT_SCALE[quantity] if scale is None else scale)
    return {
        "mc_passes": DEFAULT_MC_PASSES,
        "pad": DEFAULT_PAD,
        "sd_threshold": round(DEFAULT_SD_FRACTION * scale, 6),
        "align_scanners": True,
    }


def compute_statistics(
    model: Any,
    images: NDArray[np.floating],
    scanners: Sequence[str],
    source: Mapping[str, Any],
    *,
    seed: int = 0,
    groups: Sequence[str] | None = None,
    spacing: NDArray[np.floating] | None = None,
) -> TrustStats:
    """Compute the trust statistics of a loaded model on its training frames.

    Parameters
    ----------
    model : sswe_node.model.PackagedModel
        The packaged model (its padding and latent layer are used, as at inference).
    images : numpy.ndarray
        ``(N, rows, cols)`` training frames, 0-1.
    scanners : sequence of str
        Each frame's scanner (Manufacturer + Model Name).
    source : mapping
        How the frames were chosen (recorded in the manifest).
    seed : int
        Seed of the out-of-fold split of the score distributions (without ``groups``).
    groups : sequence of str, optional
        Each frame's patient: the training frames' scores are then out of patient.
    spacing : numpy.ndarray, optional
        ``(N, 2)`` grid-cell size of each frame in mm (:func:`grid_spacing`), for the
        field-of-view score.

    Returns
    -------
    TrustStats
    """
    from sswe_node.trust import TrustStats

    pooled, latent = model.features(images)
    # The latent features depend on the padding: the statistics hold for this one.
    source = {**dict(source), "pad": int(model.inference.pad)}
    return TrustStats.fit(
        images, pooled, latent, scanners, source, groups=groups, seed=seed, spacing=spacing
    )


def grid_spacing(meta: Mapping[str, Any], rows: Any, grid: Sequence[int]) -> NDArray[np.float64]:
    """Return the ``(N, 2)`` grid-cell size in mm of dataset ``rows`` (NaN where unknown)."""
    return np.stack(
        [
            np.asarray(meta["spacing_row_mm"], np.float64)[rows]
            * np.asarray(meta["roi_rows"], np.float64)[rows]
            / grid[0],
            np.asarray(meta["spacing_col_mm"], np.float64)[rows]
            * np.asarray(meta["roi_cols"], np.float64)[rows]
            / grid[1],
        ],
        axis=1,
    )


def fit_sd_scale(
    model: Any,
    images: NDArray[np.floating],
    labels: NDArray[np.floating],
    confidence: NDArray[np.floating],
    threshold: float,
) -> float | None:
    """Return the factor making the MC dropout sd calibrated on these (validation) frames.

    MC dropout is known to under-state the error; the factor ``k`` makes the mean |error| over
    the confident labelled pixels equal ``sqrt(2/pi) * k * mean sd`` (a Gaussian's), so the sd
    is in error units. ``None`` when there are no confident labelled pixels.
    """
    if not len(images):
        return None
    result = model.infer(images)
    if result.sd is None:
        return None
    weights = np.isfinite(labels) & (np.nan_to_num(confidence) > threshold)
    if not weights.any():
        return None
    err = np.abs(np.nan_to_num(labels) - result.values)[weights].mean()
    sd = (result.sd / np.float32(model.inference.sd_scale))[weights].mean()
    return float(err / (np.sqrt(2 / np.pi) * sd)) if sd > 0 else None


def write_statistics(
    model_dir: str | Path, stats: TrustStats, sd_scale: float | None = None
) -> Manifest:
    """Write ``stats`` into the manifest's ``[trust]`` table (``[inference]`` added if missing).

    ``sd_scale`` (from :func:`fit_sd_scale`) goes to ``[inference]``.
    """
    import tomllib

    from sswe_node.model import read_manifest

    path = Path(model_dir) / MANIFEST_NAME
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    raw.setdefault("inference", default_inference(raw["quantity"], raw.get("scale")))
    raw["trust"] = stats.save(model_dir)
    if sd_scale is not None:
        raw["inference"]["sd_scale"] = round(float(sd_scale), 4)
    staged = path.with_suffix(".toml.tmp")
    staged.write_text(dumps_toml(raw), encoding="utf-8")
    staged.replace(path)
    manifest = read_manifest(model_dir)
    manifest.trust_stats(model_dir)  # the digests survive the TOML round trip
    return manifest


def training_rows(
    manifest: Manifest, data: Any
) -> tuple[NDArray[np.intp], NDArray[np.intp], dict[str, Any]]:
    """Return the rows of the model's training and validation splits and a note on the match.

    The split is re-drawn from the seed and fractions in the manifest (as ``evaluate`` does);
    ``matches_training_split`` says whether its test patients are those the model was trained
    without (a re-made dataset has new pseudonyms, so a different split).
    """
    from training.datafile import patients_digest, split_rows

    record = manifest.training.get("split", {})
    fractions = record.get("fractions", [0.7, 0.1, 0.2])
    seed = int(record.get("seed", 0))
    train, validation, test = split_rows(data.meta, manifest.quantity, fractions, seed)
    same = patients_digest(data.meta["patient_key"][test]) == record.get("test_patients_sha256")
    note = {"split": "train", "seed": seed, "matches_training_split": bool(same)}
    return train, validation, note


def add_statistics(
    model_dir: str | Path,
    dataset: str | Path,
    *,
    models_dir: str | Path = "models",
    command: str = "",
) -> Manifest:
    """Add trust statistics to an already packaged model, from its training dataset.

    No retraining: the model's training split is re-drawn from the dataset (see
    :func:`training_rows`) and its frames' image statistics and pooled latent features are
    written to the manifest's ``[trust]`` table, under their own SHA-256.

    Parameters
    ----------
    model_dir : str or path-like
        Model name or folder.
    dataset : path-like
        The dataset file the model was (or could have been) trained on.
    models_dir : str or path-like
        Where named models live.
    command : str
        The command line, recorded in the manifest.

    Returns
    -------
    Manifest
        The updated manifest.
    """
    from sswe_node.model import load_model, resolve_model_dir
    from training.datafile import read_dataset

    folder = resolve_model_dir(model_dir, models_dir)
    model = load_model(folder, trust=False)  # the statistics in the manifest are replaced
    data = read_dataset(dataset)
    rows, validation, note = training_rows(model.manifest, data)
    if not len(rows):
        raise ValueError(f"{dataset}: no labelled {model.manifest.quantity} training rows")
    meta = data.meta
    scanners = [f"{meta['manufacturer'][r]} {meta['model_name'][r]}".strip() for r in rows]
    source = {"dataset": str(dataset), "command": command, **note}
    patients = [str(k) for k in meta["patient_key"][rows]]
    cells = grid_spacing(meta, rows, model.manifest.grid)
    stats = compute_statistics(
        model, data.images[rows], scanners, source, groups=patients, spacing=cells
    )
    threshold = float(model.manifest.training.get("recipe", {}).get("confidence_threshold", 0.75))
    k = fit_sd_scale(
        model,
        data.images[validation],
        data.labels[validation],
        data.confidence[validation],
        threshold,
    )
    logger.info("trust statistics of %s from %d frames of %s", folder, len(rows), dataset)
    return write_statistics(folder, stats, sd_scale=k)
