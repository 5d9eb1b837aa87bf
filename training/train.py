"""`sswe-node train`: train the sSWE U-Net on a dataset file and write a packaged model.

One command does everything: split by patient (seeded), train with the TOML recipe
(checkpoints, TensorBoard logs, resumable), keep the best-validation weights, package the
model with its manifest and evaluate it on the held-out test patients.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from sswe_node.errors import ConfigError, SsweError
from sswe_node.model import Manifest
from training.augment import AugmentSettings
from training.datafile import patients_digest, split_rows

logger = logging.getLogger(__name__)

HELP = "train an sSWE U-Net from a dataset file and write a packaged model"
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class ModelConfig:
    """Which network to build and how to name its package."""

    name: str = ""
    version: str = "0.1.0"
    organ: str = ""
    quantity: str = ""
    depth: int = 2
    filters: int = 32
    dropout: float = 0.5
    status: str = "release"
    trained_on: str = ""


@dataclass
class TrainingConfig:
    """The optimisation recipe (defaults: the paper's)."""

    epochs: int = 2100
    batch_size: int = 64
    learning_rate: float = 1e-3
    plateau_patience: int = 10
    plateau_factor: float = 0.5
    min_learning_rate: float = 1e-6
    confidence_threshold: float = 0.75
    split: list[float] = field(default_factory=lambda: [0.7, 0.1, 0.2])
    seed: int = 0
    augment: bool = True


@dataclass
class TrainConfig:
    """A whole training configuration file."""

    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    source: str = "<defaults>"


def load_config(path: str | Path) -> TrainConfig:
    """Read a training TOML file (``[model]``, ``[training]``, ``[augment]`` tables).

    Raises
    ------
    ConfigError
        Unknown keys or values of the wrong type, naming the key and file.
    """
    path = Path(path)
    if not path.is_file() and (CONFIG_DIR / path.name).is_file() and not path.parent.parts:
        path = CONFIG_DIR / path.name
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read training configuration: {exc}") from None
    sections = {"model": ModelConfig, "training": TrainingConfig, "augment": AugmentSettings}
    built: dict[str, Any] = {}
    for key in raw:
        if key not in sections:
            raise ConfigError(f"{path}: unknown table [{key}] (known: {sorted(sections)})")
    for section, cls in sections.items():
        table = raw.get(section, {})
        defaults = cls()
        known = {f.name for f in fields(cls)}
        values = {}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"{path}: unknown key '{section}.{key}' (known: {sorted(known)})")
            expected = getattr(defaults, key)
            if isinstance(expected, bool) != isinstance(value, bool) or (
                isinstance(expected, int | float) and not isinstance(value, int | float)
            ):
                raise ConfigError(f"{path}: '{section}.{key}' has the wrong type: {value!r}")
            if isinstance(expected, str) and not isinstance(value, str):
                raise ConfigError(f"{path}: '{section}.{key}' must be a string")
            if isinstance(expected, float):
                value = float(value)
            values[key] = value
        built[section] = cls(**values)
    config = TrainConfig(**built, source=str(path))
    t = config.training
    if t.epochs < 1 or t.batch_size < 1 or t.learning_rate <= 0 or len(t.split) != 3:
        raise ConfigError(f"{path}: epochs, batch_size, learning_rate or split out of range")
    if min(t.split) < 0 or t.split[0] <= 0:
        raise ConfigError(f"{path}: 'training.split' must be three non-negative fractions")
    return config


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    manifest: Manifest
    history: dict[str, list[float]]
    out_dir: Path
    work_dir: Path


def _scanner_quantity(data: Any, config: TrainConfig) -> tuple[str, str]:
    labelled = data.meta["labelled"].astype(bool)
    organs = sorted(set(data.meta["organ"][labelled]) - {""})
    quantities = sorted(set(data.meta["quantity"][labelled]) - {""})
    organ = config.model.organ or (organs[0] if len(organs) == 1 else "")
    quantity = config.model.quantity or (quantities[0] if len(quantities) == 1 else "")
    if not organ or not quantity:
        raise ConfigError(
            f"{config.source}: set model.organ and model.quantity (dataset has organs {organs}, "
            f"quantities {quantities})"
        )
    if quantities and quantity not in quantities:
        raise ConfigError(f"dataset labels are {quantities}, config asks for {quantity!r}")
    return organ, quantity


def _grid_spacing(data: Any, rows: Any, grid: tuple[int, int]) -> tuple[float, float]:
    meta = data.meta
    row = meta["spacing_row_mm"][rows] * meta["roi_rows"][rows] / grid[0]
    col = meta["spacing_col_mm"][rows] * meta["roi_cols"][rows] / grid[1]
    row, col = row[np.isfinite(row) & (row > 0)], col[np.isfinite(col) & (col > 0)]
    if not len(row) or not len(col):
        return (1.0, 1.0)
    return (round(float(np.median(row)), 4), round(float(np.median(col)), 4))


def train(
    config: TrainConfig,
    dataset: str | Path,
    out_dir: str | Path,
    *,
    epochs: int | None = None,
    resume: bool = False,
    work_dir: str | Path | None = None,
    command: str = "",
    evaluate: bool = True,
    progress: bool = True,
    devices: str | int | None = None,
) -> TrainResult:
    """Train a U-Net on a dataset file and write the packaged model.

    Parameters
    ----------
    config : TrainConfig
        The recipe (see :func:`load_config`).
    dataset : path-like
        A dataset file (``training.datafile``).
    out_dir : path-like
        The package folder to write (``model.toml`` + ``model.keras``).
    epochs : int, optional
        Override of ``training.epochs``.
    resume : bool
        Continue from the last epoch backed up in ``work_dir`` (otherwise start afresh).
    work_dir : path-like, optional
        Checkpoints and TensorBoard logs; default ``out_dir/work``.
    command : str
        The command line, recorded in the manifest.
    evaluate : bool
        Write the evaluation report on the test patients to ``out_dir/evaluation``.
    progress : bool
        Show a progress bar over epochs.
    devices : int or "all", optional
        Train on several devices with ``tf.distribute.MirroredStrategy`` (global batch kept at
        ``training.batch_size``); see :mod:`training.devices`. Default: one device.

    Returns
    -------
    TrainResult
    """
    import keras

    from training.augment import make_dataset
    from training.datafile import read_dataset
    from training.losses import (
        masked_mae_metric,
        masked_me_metric,
        masked_rmse,
        masked_rmse_metric,
        pack_targets,
    )
    from training.package import DEFAULT_SCALE, write_package
    from training.unet import build_unet, count

    t = config.training
    epochs = int(epochs or t.epochs)
    out = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else out / "work"
    dataset = Path(dataset)
    data = read_dataset(dataset)
    grid = tuple(int(g) for g in data.images.shape[1:])
    organ, quantity = _scanner_quantity(data, config)
    scale = DEFAULT_SCALE[quantity]
    name = config.model.name or out.name

    train_rows, val_rows, test_rows = split_rows(data.meta, quantity, t.split, t.seed)
    targets = pack_targets(data.labels, data.confidence, scale, t.confidence_threshold)
    usable = targets[..., 1].reshape(len(data), -1).sum(axis=1) > 0
    train_rows = train_rows[usable[train_rows]]
    val_rows = val_rows[usable[val_rows]]
    if not len(train_rows):
        raise SsweError(f"{dataset}: no labelled training images with confident pixels")
    gpus = _gpus()
    logger.info(
        "training %s on %d/%d/%d train/val/test images (%s), %d epochs, device %s",
        name,
        len(train_rows),
        len(val_rows),
        len(test_rows),
        quantity,
        epochs,
        "GPU" if gpus else "CPU",
    )

    keras.utils.set_random_seed(t.seed)
    from training.devices import replica_loss_callbacks, strategy_scope

    with strategy_scope(devices) as strategy:
        model = build_unet(
            grid, depth=config.model.depth, filters=config.model.filters,
            dropout=config.model.dropout, seed=t.seed,
        )  # fmt: skip
        metrics = [masked_rmse_metric(scale), masked_mae_metric(scale), masked_me_metric(scale)]
        model.compile(
            optimizer=keras.optimizers.Adam(t.learning_rate), loss=masked_rmse, metrics=metrics
        )
    logger.info("replicas in sync: %d", strategy.num_replicas_in_sync)
    augment = config.augment if t.augment else None
    train_ds = make_dataset(
        data.images[train_rows], targets[train_rows], batch_size=t.batch_size,
        shuffle=True, seed=t.seed, augment=augment,
    )  # fmt: skip
    val_ds = None
    if len(val_rows):
        val_ds = make_dataset(
            data.images[val_rows], targets[val_rows], batch_size=t.batch_size,
            shuffle=False, seed=t.seed, augment=None,
        )  # fmt: skip
    monitor = "val_loss" if val_ds is not None else "loss"

    backup = work / "backup"
    if not resume and backup.exists():
        shutil.rmtree(backup)
    (work / "checkpoints").mkdir(parents=True, exist_ok=True)
    best_path = work / "checkpoints" / "best.keras"
    callbacks = [
        *replica_loss_callbacks(strategy),  # first: fixes the logged loss of N replicas
        keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(str(best_path), monitor=monitor, save_best_only=True),
        keras.callbacks.ReduceLROnPlateau(
            monitor=monitor,
            patience=t.plateau_patience,
            factor=t.plateau_factor,
            min_lr=t.min_learning_rate,
        ),  # fmt: skip
        keras.callbacks.TensorBoard(str(work / "logs"), histogram_freq=0),
        keras.callbacks.CSVLogger(str(work / "history.csv"), append=resume),
    ]
    if progress:
        from tqdm.keras import TqdmCallback

        # One bar over epochs (verbose=0: no per-batch bar), on stderr.
        callbacks.append(TqdmCallback(epochs=epochs, verbose=0, file=sys.stderr, desc="train"))
    started = time.monotonic()
    fit = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        callbacks=callbacks,
        verbose=0,
        shuffle=False,
    )
    seconds = time.monotonic() - started
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    if best_path.is_file():
        best = keras.saving.load_model(best_path, compile=False)
        model.set_weights(best.get_weights())

    split_metrics = {}
    for split_name, rows in (("train", train_rows), ("validation", val_rows)):
        if len(rows):
            split_metrics[split_name] = _pixel_metrics(model, data, rows, targets, scale)
    confident = targets[train_rows][..., 1] > 0
    train_mean = float(np.mean(targets[train_rows][..., 0][confident]) * scale)

    training_record = {
        "command": command,
        "config": config.source,
        "recipe": {**asdict(t), "epochs": epochs, "augment_settings": asdict(config.augment)},
        "dataset": {
            "file": str(dataset),
            "images": len(data),
            "patients": int(len(np.unique(data.meta["patient_key"]))),
            "build": json.dumps(data.manifest, sort_keys=True, default=str)[:4000],
        },
        "split": {
            "by": "patient",
            "seed": t.seed,
            "fractions": list(t.split),
            "train_images": int(len(train_rows)),
            "validation_images": int(len(val_rows)),
            "test_images": int(len(test_rows)),
            "test_patients": int(len(np.unique(data.meta["patient_key"][test_rows]))),
            "test_patients_sha256": patients_digest(data.meta["patient_key"][test_rows]),
        },
        "train_mean": train_mean,
        "epochs_run": len(history.get("loss", [])),
        "seconds": round(seconds, 1),
        "device": "GPU" if gpus else "CPU",
        "backend": keras.backend.backend(),
    }
    trained_on = describe_training_data(data, train_rows, dataset.name, config.model.trained_on)
    manifest = write_package(
        model,
        out,
        name=name,
        version=config.model.version,
        organ=organ,
        quantity=quantity,
        trained_on=trained_on,
        spacing_mm=_grid_spacing(data, train_rows, grid),
        status=config.model.status,
        architecture={
            "builder": "training.unet.build_unet",
            "depth": config.model.depth,
            "filters": config.model.filters,
            "dropout": config.model.dropout,
            "parameters": count(model),
        },
        training=training_record,
        metrics=split_metrics,
    )
    manifest = _add_trust_statistics(
        out, data, train_rows, val_rows, command, t.confidence_threshold
    )
    if evaluate and len(test_rows):
        from training.evaluate import evaluate_model

        report = evaluate_model(out, dataset, out / "evaluation")
        manifest = _add_test_metrics(out, report)
    return TrainResult(manifest=manifest, history=history, out_dir=out, work_dir=work)


def _add_trust_statistics(
    out: Path, data: Any, rows: Any, val_rows: Any, command: str, threshold: float
) -> Manifest:
    """Write the training frames' OOD and alignment statistics (and the sd calibration)."""
    from sswe_node.model import load_model
    from training.package import compute_statistics, fit_sd_scale, grid_spacing, write_statistics

    meta = data.meta
    scanners = [f"{meta['manufacturer'][r]} {meta['model_name'][r]}".strip() for r in rows]
    source = {"split": "train", "command": command, "matches_training_split": True}
    model = load_model(out)
    patients = [str(k) for k in meta["patient_key"][rows]]
    cells = grid_spacing(meta, rows, model.manifest.grid)
    stats = compute_statistics(
        model, data.images[rows], scanners, source, groups=patients, spacing=cells
    )
    k = fit_sd_scale(
        model, data.images[val_rows], data.labels[val_rows], data.confidence[val_rows], threshold
    )
    return write_statistics(out, stats, sd_scale=k)


def _add_test_metrics(out: Path, report: dict[str, Any]) -> Manifest:
    """Record the test-split summary in the manifest (never used for any choice)."""
    from sswe_node.model import MANIFEST_NAME, read_manifest
    from training.package import dumps_toml

    path = out / MANIFEST_NAME
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    summary = report["model"]["summary"]
    raw.setdefault("metrics", {})["test_per_patient"] = {
        key: {"mean": summary[key]["mean"], "sd": summary[key]["sd"]} for key in summary
    }
    raw["metrics"]["test_per_patient"]["patients"] = report["patients"]
    raw["metrics"]["test_baseline_per_patient"] = {
        key: {"mean": v["mean"], "sd": v["sd"]} for key, v in report["baseline"]["summary"].items()
    }
    path.write_text(dumps_toml(raw), encoding="utf-8")
    return read_manifest(out)


def _pixel_metrics(
    model: Any, data: Any, rows: Any, targets: Any, scale: float
) -> dict[str, float]:
    from sswe_node.model import compile_forward

    forward = compile_forward(model, data.images.shape[1:])
    preds = np.concatenate(
        [
            np.asarray(forward(data.images[rows[i : i + 256], :, :, None]))[..., 0]
            for i in range(0, len(rows), 256)
        ]
    )
    value, weight = targets[rows][..., 0], targets[rows][..., 1] > 0
    err = (value - preds)[weight] * scale
    return {
        "images": int(len(rows)),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "me": float(np.mean(err)),
    }


def _gpus() -> list[Any]:
    import keras

    if keras.backend.backend() != "tensorflow":
        return []
    import tensorflow as tf

    return list(tf.config.list_physical_devices("GPU"))


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add this sub-command's options."""
    parser.add_argument(
        "--config", required=True, help="training TOML (e.g. training/configs/paper.toml)"
    )
    parser.add_argument("--dataset", required=True, help="dataset file (sswe-node dataset build)")
    parser.add_argument("--out", required=True, help="model package folder to write")
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its backup"
    )
    parser.add_argument(
        "--work-dir", default=None, help="checkpoints and TensorBoard logs (default OUT/work)"
    )
    parser.add_argument("--name", default=None, help="model name (default: config or OUT name)")
    parser.add_argument("--seed", type=int, default=None, help="override training.seed")
    parser.add_argument(
        "--no-augment", action="store_true", help="switch augmentation off (for comparisons)"
    )
    parser.add_argument(
        "--no-evaluate", action="store_true", help="skip the test-split evaluation report"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--devices", default=None, metavar="N|all",
        help="train on N devices (or all) with MirroredStrategy, global batch unchanged",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Run ``sswe-node train``."""
    config = load_config(args.config)
    if args.name:
        config.model.name = args.name
    if args.seed is not None:
        config.training.seed = args.seed
    if args.no_augment:
        config.training.augment = False
    command = "sswe-node " + shlex.join(sys.argv[1:])
    if not Path(args.dataset).is_file():
        raise SsweError(f"dataset file {args.dataset} not found")
    result = train(
        config,
        args.dataset,
        args.out,
        epochs=args.epochs,
        resume=args.resume,
        work_dir=args.work_dir,
        command=command,
        evaluate=not args.no_evaluate,
        progress=not getattr(args, "no_progress", False) and sys.stderr.isatty(),
        devices=args.devices,
    )
    m = result.manifest
    print(f"wrote {result.out_dir} ({m.name} {m.version}, {m.parameters} parameters)")
    for split_name, values in m.metrics.items():
        print(f"  {split_name}: {values}")
    return 0


def describe_training_data(data: Any, rows: Any, dataset_name: str, note: str = "") -> str:
    """Say what a model was trained on, from the dataset itself (never from the config alone).

    Parameters
    ----------
    data : DatasetArrays
        The dataset.
    rows : array of int
        The training rows.
    dataset_name : str
        The dataset file name.
    note : str
        The config's ``model.trained_on`` text, appended as a note.

    Returns
    -------
    str
        E.g. ``"SIMULATED data only (...): 137 labelled images of 35 patients from sim.h5;
        scanners: SSWE Simulator SWE-Sim Aixplorer-like"``.
    """
    from training.simulate.scanners import SIMULATOR_MANUFACTURER

    rows = np.asarray(rows)
    scanners = sorted(
        {
            f"{m} {n}".strip()
            for m, n in zip(
                data.meta["manufacturer"][rows], data.meta["model_name"][rows], strict=True
            )
        }
    )
    patients = len(np.unique(data.meta["patient_key"][rows]))
    text = (
        f"{len(rows)} labelled images of {patients} patients from dataset file {dataset_name}; "
        f"scanners: {', '.join(scanners) or 'unknown'}"
    )
    manufacturers = set(data.meta["manufacturer"][rows].tolist())
    if manufacturers == {SIMULATOR_MANUFACTURER}:
        text = (
            "SIMULATED data only (a phantom archive written by `sswe-node simulate`; no real "
            "patients, no real scanner): " + text
        )
    elif SIMULATOR_MANUFACTURER in manufacturers:
        text = "MIXED simulated and real data: " + text
    return f"{text}. {note}".strip() if note else text
