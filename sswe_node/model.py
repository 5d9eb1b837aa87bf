"""Load a packaged sSWE model (manifest + checksum) and predict stiffness maps in batches.

A packaged model is a folder ``NAME/`` with ``model.toml`` (the manifest, see
:class:`Manifest`) and the Keras weights file it names (``model.keras``, the whole model,
loaded with ``compile=False`` so the training package is never needed). Keras and TensorFlow
are imported only when a model is loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sswe_node.errors import ModelError
from sswe_node.quantities import QUANTITY_UNITS

logger = logging.getLogger(__name__)

MANIFEST_NAME = "model.toml"
MANIFEST_FORMAT = "sswe-model"
MANIFEST_VERSION = 1
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
LATENT_LAYER = "latent"


@dataclass
class Manifest:
    """The manifest of a packaged model (``model.toml``).

    Attributes
    ----------
    name, version : str
        Model name (the folder name) and version.
    organ : str
        ``"prostate"``, ``"thyroid"``, ...
    quantity : str
        ``"youngs-modulus"`` or ``"shear-wave-speed"``.
    unit : str
        ``"kPa"`` or ``"m/s"``.
    scale : float
        Physical value that the network's output 1.0 stands for (100 kPa, 10 m/s).
    grid : tuple of int
        Model input ``(rows, cols)``.
    colour_bar : tuple of float
        ``(min, max)`` display range in ``unit``.
    spacing_mm : tuple of float
        Expected physical spacing of one model-grid pixel ``(row, col)`` in mm.
    trained_on : str
        Plain statement of the training data (e.g. simulated).
    intended_use : str
        Research use statement; never diagnosis.
    parameters : int
        Trainable parameters.
    weights : str
        Weights file name inside the folder.
    sha256 : str
        SHA-256 of the weights file.
    status : str
        ``"release"`` or ``"provisional"``.
    architecture, training, metrics : dict
        Builder settings, training provenance (dataset, command, split), metrics per split.
    """

    name: str
    version: str
    organ: str
    quantity: str
    unit: str
    scale: float
    grid: tuple[int, int]
    colour_bar: tuple[float, float]
    spacing_mm: tuple[float, float]
    trained_on: str
    intended_use: str
    parameters: int
    weights: str
    sha256: str
    status: str = "release"
    architecture: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<manifest>") -> Manifest:
        """Validate a parsed ``model.toml``; raise :class:`ModelError` naming the key."""
        if raw.get("format") != MANIFEST_FORMAT:
            raise ModelError(f"{source}: not an sSWE model manifest (format != {MANIFEST_FORMAT})")
        if int(raw.get("format_version", 0)) > MANIFEST_VERSION:
            raise ModelError(f"{source}: manifest format_version {raw['format_version']} too new")
        strings = ("name", "version", "organ", "quantity", "unit", "trained_on", "intended_use")
        strings += ("weights", "sha256")
        for key in strings:
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise ModelError(f"{source}: '{key}' must be a non-empty string")
        if QUANTITY_UNITS.get(raw["quantity"]) != raw["unit"]:
            raise ModelError(
                f"{source}: quantity {raw['quantity']!r} with unit {raw['unit']!r} is not one of "
                f"{QUANTITY_UNITS}"
            )
        try:
            scale = float(raw["scale"])
            grid = _pair(raw["grid"], int)
            colour_bar = _pair(raw["colour_bar"], float)
            spacing = _pair(raw["spacing_mm"], float)
            parameters = int(raw["parameters"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: missing or malformed numeric key: {exc}") from None
        if scale <= 0 or min(grid) < 1 or colour_bar[1] <= colour_bar[0]:
            raise ModelError(f"{source}: 'scale', 'grid' or 'colour_bar' out of range")
        if len(raw["sha256"]) != 64:
            raise ModelError(f"{source}: 'sha256' must be 64 hexadecimal digits")
        return cls(
            name=raw["name"],
            version=raw["version"],
            organ=raw["organ"],
            quantity=raw["quantity"],
            unit=raw["unit"],
            scale=scale,
            grid=grid,
            colour_bar=colour_bar,
            spacing_mm=spacing,
            trained_on=raw["trained_on"],
            intended_use=raw["intended_use"],
            parameters=parameters,
            weights=raw["weights"],
            sha256=raw["sha256"].lower(),
            status=str(raw.get("status", "release")),
            architecture=dict(raw.get("architecture", {})),
            training=dict(raw.get("training", {})),
            metrics=dict(raw.get("metrics", {})),
        )


def _pair(value: Any, kind: type) -> tuple[Any, Any]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"expected two values, got {value!r}")
    return kind(value[0]), kind(value[1])


def sha256_file(path: str | Path) -> str:
    """Return the hexadecimal SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_model_dir(name_or_path: str | Path, models_dir: str | Path = "models") -> Path:
    """Find a packaged model folder.

    Parameters
    ----------
    name_or_path : str or path-like
        A folder holding ``model.toml``, or a model name looked up in ``models_dir``.
    models_dir : str or path-like
        Where named models live. A relative path is tried against the current directory,
        then against the package root (so the shipped models are found from anywhere).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ModelError
        When no such model exists.
    """
    direct = Path(name_or_path)
    if (direct / MANIFEST_NAME).is_file():
        return direct
    base = Path(models_dir)
    candidates = [base / str(name_or_path)]
    if not base.is_absolute():
        candidates.append(PACKAGE_ROOT / base / str(name_or_path))
    for candidate in candidates:
        if (candidate / MANIFEST_NAME).is_file():
            return candidate
    tried = ", ".join(str(c) for c in [direct, *candidates])
    raise ModelError(f"model {str(name_or_path)!r} not found (tried {tried})")


def read_manifest(model_dir: str | Path) -> Manifest:
    """Read and validate ``model_dir/model.toml``."""
    path = Path(model_dir) / MANIFEST_NAME
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"{path}: cannot read model manifest: {exc}") from None
    return Manifest.from_dict(raw, str(path))


class PackagedModel:
    """A loaded packaged model with a compiled, batched forward pass.

    Parameters
    ----------
    keras_model : keras.Model
        The network (input ``(rows, cols, 1)``, sigmoid output).
    manifest : Manifest
        Its validated manifest.
    path : pathlib.Path
        The model folder.
    batch_size : int
        Largest batch sent through the compiled function at once.
    device : str
        ``"auto"``, ``"cpu"`` or ``"gpu"``.
    """

    def __init__(
        self,
        keras_model: Any,
        manifest: Manifest,
        path: Path,
        *,
        batch_size: int = 64,
        device: str = "auto",
    ) -> None:
        self.keras_model = keras_model
        self.manifest = manifest
        self.path = path
        self.batch_size = int(batch_size)
        self.device = device
        self._forward = _compile(keras_model, manifest.grid)
        self._latent_forward: Any = None

    def __repr__(self) -> str:
        m = self.manifest
        return f"PackagedModel({m.name!r} {m.version}, {m.quantity} in {m.unit}, {self.path})"

    def predict_normalised(self, images: NDArray[np.floating]) -> NDArray[np.float32]:
        """Return the raw network output (0-1) for ``(N, rows, cols)`` images."""
        return self._run(self._forward, images)[..., 0]

    def predict(self, images: NDArray[np.floating]) -> NDArray[np.float32]:
        """Predict stiffness maps.

        Parameters
        ----------
        images : numpy.ndarray
            ``(N, rows, cols)`` (or one ``(rows, cols)``) B-mode on the model grid, 0-1.

        Returns
        -------
        numpy.ndarray
            ``(N, rows, cols)`` (or ``(rows, cols)``) float32 in ``manifest.unit``.
        """
        single = np.ndim(images) == 2
        batch = np.asarray(images, np.float32)[None] if single else images
        values = self.predict_normalised(batch) * np.float32(self.manifest.scale)
        return values[0] if single else values

    def latent(self, images: NDArray[np.floating]) -> NDArray[np.float32]:
        """Return the latent (bottleneck) feature maps ``(N, h, w, filters)`` for t-SNE."""
        if self._latent_forward is None:
            import keras

            sub = keras.Model(
                self.keras_model.inputs, self.keras_model.get_layer(LATENT_LAYER).output
            )
            self._latent_forward = _compile(sub, self.manifest.grid)
        return self._run(self._latent_forward, images)

    def _run(self, forward: Any, images: NDArray[np.floating]) -> NDArray[np.float32]:
        images = np.asarray(images, dtype=np.float32)
        rows, cols = self.manifest.grid
        if images.ndim != 3 or images.shape[1:] != (rows, cols):
            raise ModelError(
                f"model {self.manifest.name} expects (N, {rows}, {cols}) images, got {images.shape}"
            )
        outputs = []
        with _device_scope(self.device):
            for start in range(0, len(images), self.batch_size):
                chunk = images[start : start + self.batch_size, :, :, None]
                outputs.append(np.asarray(forward(chunk), dtype=np.float32))
        if not outputs:
            return np.zeros((0, rows, cols, 1), np.float32)
        return np.concatenate(outputs, axis=0)


def _compile(keras_model: Any, grid: tuple[int, int]) -> Any:
    """Return a compiled inference function, avoiding ``model.predict``'s per-call overhead."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec([None, grid[0], grid[1], 1], tf.float32)
        return tf.function(lambda x: keras_model(x, training=False), input_signature=[spec])
    if backend == "jax":
        import jax

        return jax.jit(lambda x: keras_model(x, training=False))
    return lambda x: keras.ops.convert_to_numpy(keras_model(x, training=False))


def _device_scope(device: str) -> Any:
    import keras

    if device == "auto" or keras.backend.backend() != "tensorflow":
        return contextlib.nullcontext()
    import tensorflow as tf

    return tf.device("/CPU:0" if device == "cpu" else "/GPU:0")


def load_model(
    name_or_path: str | Path,
    models_dir: str | Path = "models",
    *,
    batch_size: int = 64,
    device: str = "auto",
) -> PackagedModel:
    """Load a packaged model by name or folder, verifying its manifest and checksum.

    Parameters
    ----------
    name_or_path : str or path-like
        Model name (looked up in ``models_dir``) or model folder.
    models_dir : str or path-like
        Folder of named models (see :func:`resolve_model_dir`).
    batch_size : int
        Largest batch of the compiled forward pass.
    device : str
        ``"auto"`` (GPU when TensorFlow sees one), ``"cpu"`` or ``"gpu"``.

    Returns
    -------
    PackagedModel

    Raises
    ------
    ModelError
        Missing model, malformed manifest, checksum mismatch, or a network that does not
        match its manifest.
    """
    path = resolve_model_dir(name_or_path, models_dir)
    manifest = read_manifest(path)
    weights = path / manifest.weights
    if not weights.is_file():
        raise ModelError(f"{path}: weights file {manifest.weights!r} is missing")
    actual = sha256_file(weights)
    if actual != manifest.sha256:
        raise ModelError(
            f"{weights}: SHA-256 {actual} does not match the manifest ({manifest.sha256})",
            reason="model-checksum",
        )
    import keras

    try:
        keras_model = keras.saving.load_model(weights, compile=False)
    except Exception as exc:  # keras raises many kinds on a bad file
        raise ModelError(f"{weights}: cannot load Keras model: {exc}") from None
    expected = (None, manifest.grid[0], manifest.grid[1], 1)
    if tuple(keras_model.input_shape) != expected:
        raise ModelError(
            f"{path}: network input {keras_model.input_shape} does not match manifest grid "
            f"{manifest.grid}"
        )
    logger.info(
        "loaded model %s %s (%s, %s) from %s",
        manifest.name,
        manifest.version,
        manifest.quantity,
        manifest.status,
        path,
    )
    return PackagedModel(keras_model, manifest, path, batch_size=batch_size, device=device)
