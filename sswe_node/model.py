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
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from sswe_node.errors import ModelError
from sswe_node.quantities import QUANTITY_UNITS
from sswe_node.shipped import PACKAGE_DATA

if TYPE_CHECKING:
    from sswe_node.trust import TrustStats

logger = logging.getLogger(__name__)

MANIFEST_NAME = "model.toml"
MANIFEST_FORMAT = "sswe-model"
MANIFEST_VERSION = 1
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
#: Name of the layer whose output is the latent (bottleneck) feature map: the one definition
#: (``training.unet`` builds it under this name; encoder and decoder are split there).
LATENT_LAYER = "latent"
#: Frames of one ``infer`` call (per working shape) whose encodings are kept for decoding;
#: a larger call (an evaluation's whole split) encodes again what it decodes.
KEPT_ENCODINGS = 64

#: MC dropout passes when the manifest does not say.
DEFAULT_MC_PASSES = 8
#: Reflection padding (pixels) when the manifest does not say.
DEFAULT_PAD = 8
#: Relative grid-cell size difference beyond which a frame is run at the model's spacing
#: (0: never; measured in docs/model.md, off by default).
DEFAULT_RESAMPLE_TOLERANCE = 0.0
#: Working shapes are multiples of this many pixels (and within half to twice the grid).
RESAMPLE_STEP = 8
#: What an aligned frame keeps of its unaligned output level (:class:`InferenceSettings`).
ALIGN_LEVELS = ("position", "scanner", "frame", "none")
#: Default capture uncertainty threshold, as a fraction of the model's scale (10 kPa, 1 m/s).
DEFAULT_SD_FRACTION = 0.1


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
    inference : dict
        How to run it (see :class:`InferenceSettings`).
    trust : dict
        Training statistics for the OOD gate and scanner alignment (see
        :class:`sswe_node.trust.TrustStats`), with their own SHA-256 (and that of the
        alignment reference file beside the manifest).
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
    inference: dict[str, Any] = field(default_factory=dict)
    trust: dict[str, Any] = field(default_factory=dict)

    def trust_stats(self, folder: str | Path) -> TrustStats | None:
        """Return the OOD and alignment statistics, ``None`` when the manifest has none.

        ``folder`` is the package folder (the alignment reference file lives there).

        Raises
        ------
        ModelError
            When the table does not match its SHA-256 (edited or damaged).
        """
        if not self.trust:
            return None
        from sswe_node.trust import TrustStats

        try:
            return TrustStats.load(self.trust, folder)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(
                f"model {self.name}: [trust] statistics unusable: {exc}", reason="model-checksum"
            ) from None

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
            inference=dict(raw.get("inference", {})),
            trust=dict(raw.get("trust", {})),
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
        if base == Path("models"):  # an installed wheel's shipped models (package data)
            candidates.append(PACKAGE_DATA / "models" / str(name_or_path))
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


@dataclass(frozen=True)
class InferenceSettings:
    """How a model is run (the manifest's ``[inference]`` table; defaults for older ones).

    Attributes
    ----------
    mc_passes : int
        Stochastic (MC dropout) passes per frame; 1 runs the network once, without dropout,
        and gives no standard deviation.
    pad : int
        Pixels of reflection padding added around the input and cropped from the output (the
        network's zero padding then falls outside the map: no rim). A multiple of
        ``2 ** depth``.
    sd_threshold : float
        Standard deviation (in the unit) above which a capture greys the map out.
    align_scanners : bool
        Whether latent features of other scanners are aligned to the training scanners'.
    sd_scale : float
        Factor applied to the MC dropout standard deviation (post-hoc calibration fitted on
        the validation split so that mean |error| = 0.8 sd there; 1: none).
    resample_tolerance : float
        A frame whose grid-cell size (``infer(spacing=)``) differs along an axis from
        ``spacing_mm`` by more than this factor (``max(r, 1/r) > 1 + tolerance``) is run at the
        model's spacing along that axis (:meth:`PackagedModel.working_shapes`); 0 (the
        default): never. 0.3 would leave alone the spread of cell sizes the shipped models
        were trained on (about +-25 %); it did not help them (docs/model.md, "Trust").
    align_level : str
        What an aligned frame's output keeps of its unaligned output (its deterministic
        map). ``"position"`` (the default) adds back, pixel by pixel, the running mean over
        its statistics key's aligned frames of the change the alignment makes there: the
        key's mean map stays that of its unaligned outputs, and the alignment only corrects
        how each frame differs from it. ``"scanner"`` does the same with the change of the
        map's mean (one number per key), ``"frame"`` with the frame's own change of the
        mean, ``"none"`` adds nothing back. ``"position"`` and ``"scanner"`` use the aligner's
        ``level``; an aligner without one gets ``"frame"``. All but ``"none"`` cost one more
        deterministic pass of each aligned frame, two with MC passes.
    """

    mc_passes: int = DEFAULT_MC_PASSES
    pad: int = DEFAULT_PAD
    sd_threshold: float = 0.0
    align_scanners: bool = True
    sd_scale: float = 1.0
    resample_tolerance: float = DEFAULT_RESAMPLE_TOLERANCE
    align_level: str = "position"

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> InferenceSettings:
        """Read ``manifest.inference`` (missing keys take the defaults)."""
        raw = manifest.inference
        try:
            settings = cls(
                mc_passes=int(raw.get("mc_passes", DEFAULT_MC_PASSES)),
                pad=int(raw.get("pad", DEFAULT_PAD)),
                sd_threshold=float(raw.get("sd_threshold", DEFAULT_SD_FRACTION * manifest.scale)),
                align_scanners=bool(raw.get("align_scanners", True)),
                sd_scale=float(raw.get("sd_scale", 1.0)),
                resample_tolerance=float(raw.get("resample_tolerance", DEFAULT_RESAMPLE_TOLERANCE)),
                align_level=str(raw.get("align_level", "position")),
            )
        except (TypeError, ValueError) as exc:
            raise ModelError(f"model {manifest.name}: malformed [inference] table: {exc}") from None
        if (
            min(settings.mc_passes, settings.sd_scale) <= 0
            or min(settings.pad, settings.sd_threshold) < 0
        ):
            raise ModelError(f"model {manifest.name}: [inference] values out of range")
        if settings.align_level not in ALIGN_LEVELS:
            raise ModelError(f"model {manifest.name}: align_level must be one of {ALIGN_LEVELS}")
        return settings


@dataclass
class Inference:
    """What one inference call gives for ``N`` frames.

    Attributes
    ----------
    values : numpy.ndarray
        ``(N, rows, cols)`` float32 prediction in the model's unit (the MC mean).
    sd : numpy.ndarray or None
        ``(N, rows, cols)`` float32 per-pixel standard deviation over the MC passes, in the
        unit; ``None`` with one pass.
    passes : int
        MC passes run.
    ood_score : numpy.ndarray or None
        ``(N,)`` out-of-distribution score (percentile of the training frames'); ``None``
        when the manifest has no trust statistics.
    pooled : numpy.ndarray
        ``(N, C)`` per-frame latent channel means (before alignment; the OOD features).
    latent : numpy.ndarray
        ``(N, h, w, C)`` latent maps (before alignment) on the grid's latent shape (those of
        frames run at another shape resampled onto it, :meth:`PackagedModel.working_shapes`).
    aligned : numpy.ndarray
        ``(N,)`` bool: whether the frame's latent features were aligned.
    """

    values: NDArray[np.float32]
    sd: NDArray[np.float32] | None
    passes: int
    ood_score: NDArray[np.float64] | None
    pooled: NDArray[np.float32]
    latent: NDArray[np.float32]
    aligned: NDArray[np.bool_]


class Aligner(Protocol):
    """Gives the latent alignment of each frame (e.g. from per-scanner running statistics)."""

    def __call__(
        self, latent: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_]] | None:
        """Map ``(N, F)`` flattened latent maps to ``(scale, shift, aligned)``.

        ``scale`` and ``shift`` are ``(N, F)``, ``aligned`` is ``(N,)`` bool. An aligner may
        also have a ``level(change)`` method: given what its alignment took away from each
        frame's output (``(N,)``: the map's mean, ``align_level = "scanner"``; or ``(N, rows,
        cols)``: each pixel, ``"position"``; normalised units, NaN where not aligned), it
        returns the shifts to add back, of the same shape (e.g. the running mean of the
        frame's scanner's).
        """
        ...


@runtime_checkable
class SsweModel(Protocol):
    """The model the pipeline and the workers use (a :class:`PackagedModel` is one)."""

    manifest: Manifest

    def predict(self, images: NDArray[np.floating]) -> NDArray[np.float32]:
        """``(N, rows, cols)`` 0-1 B-mode -> ``(N, rows, cols)`` prediction in the unit."""
        ...


class PackagedModel:
    """A loaded packaged model with compiled, batched forward passes.

    The network is cut at its dropout layers and at the latent layer (:data:`LATENT_LAYER`)
    (see :class:`_Graph`), so that latent features can be read (t-SNE, OOD scores, scanner
    statistics) and aligned before decoding, and MC dropout passes share the work before the
    first dropout (the level-0 skip features, and their half of the last decoder
    convolution). The input is reflection padded by ``inference.pad`` pixels; the decoder
    computes only what the unpadded output region needs (:meth:`_Graph.plan`).

    Parameters
    ----------
    keras_model : keras.Model
        The network (input ``(rows, cols, 1)``, sigmoid output).
    manifest : Manifest
        Its validated manifest.
    path : pathlib.Path
        The model folder.
    batch_size : int
        Largest batch (frames; times the MC passes inside) sent through a compiled call.
    device : str
        ``"auto"``, ``"cpu"`` or ``"gpu"``.
    mc_precision : str
        Arithmetic of the MC dropout passes (more than one): ``"float32"``, ``"bfloat16"``
        (every layer but the output in bfloat16: about 4x faster where the processor has
        bfloat16 matrix units) or ``"auto"`` (bfloat16 on a GPU or a CPU with AMX/AVX-512
        bfloat16, else float32). The single deterministic pass is always float32.
    """

    def __init__(
        self,
        keras_model: Any,
        manifest: Manifest,
        path: Path,
        *,
        batch_size: int = 64,
        device: str = "auto",
        mc_precision: str = "auto",
    ) -> None:
        self.keras_model = keras_model
        self.manifest = manifest
        self.path = path
        self.batch_size = int(batch_size)
        self.device = device
        self.inference = InferenceSettings.from_manifest(manifest)
        self.trust = manifest.trust_stats(path)
        made_with = None if self.trust is None else self.trust.source.get("pad")
        if made_with is not None and int(made_with) != self.inference.pad:
            raise ModelError(
                f"model {manifest.name}: trust statistics were computed with pad {made_with}, "
                f"[inference] pad is {self.inference.pad}: run `sswe-node model stats` again"
            )
        depth = int(manifest.architecture.get("depth", 2))
        if self.inference.pad % (2**depth):
            raise ModelError(f"model {manifest.name}: pad must be a multiple of {2**depth}")
        self._depth = depth
        self._network = _flexible_copy(keras_model)
        self._graph = _Graph(self._network, depth)
        self._calls: dict[Any, Any] = {}
        self.mc_precision = resolve_precision(mc_precision)
        self._mc_graph: _Graph | None = None

    def __repr__(self) -> str:
        m = self.manifest
        return f"PackagedModel({m.name!r} {m.version}, {m.quantity} in {m.unit}, {self.path})"

    def configure(self, **changes: Any) -> None:
        """Change how the model is run (fields of :class:`InferenceSettings`, e.g. ``pad=0``).

        The compiled calls are rebuilt on next use.
        """
        import dataclasses

        depth = 2**self._depth
        settings = dataclasses.replace(self.inference, **changes)
        if settings.pad % depth or settings.mc_passes < 1:
            raise ModelError(f"pad must be a multiple of {depth} and mc_passes at least 1")
        if self.trust is not None and settings.pad != self.inference.pad:
            logger.warning("pad changed to %d: trust statistics (pad %d) dropped", settings.pad,
                           self.inference.pad)  # fmt: skip
            self.trust = None
        self.inference = settings
        self._calls.clear()

    @property
    def latent_channels(self) -> int:
        """Channels of the latent feature map."""
        return self._graph.channels

    @property
    def latent_pixels(self) -> int:
        """Latent pixels of one (unpadded) frame."""
        rows, cols = self.manifest.grid
        return (rows // 2**self._depth) * (cols // 2**self._depth)

    def predict_normalised(self, images: NDArray[np.floating]) -> NDArray[np.float32]:
        """Return the deterministic network output (0-1) for ``(N, rows, cols)`` images."""
        images = self._check(images)
        return self._chunks(self._call(("det", tuple(self.manifest.grid))), images, 1)[0]

    def predict(self, images: NDArray[np.floating]) -> NDArray[np.float32]:
        """Predict stiffness maps (one deterministic pass, dropout off).

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
        """Return the latent feature maps ``(N, h, w, filters)`` (padding cropped)."""
        images = self._check(images)
        return self._chunks(self._call(("latent", tuple(self.manifest.grid))), images, 1)[0]

    def features(
        self, images: NDArray[np.floating]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Return per-frame latent channel means ``(N, C)`` and latent maps ``(N, h, w, C)``."""
        images = self._check(images)
        latent = self._chunks(self._call(("latent", tuple(self.manifest.grid))), images, 1)[0]
        return latent.mean(axis=(1, 2)), latent

    def infer(
        self,
        images: NDArray[np.floating],
        *,
        passes: int | None = None,
        aligner: Aligner | None = None,
        spacing: NDArray[np.floating] | None = None,
    ) -> Inference:
        """Predict with uncertainty, OOD scores and (optionally) scanner alignment.

        Parameters
        ----------
        images : numpy.ndarray
            ``(N, rows, cols)`` B-mode on the model grid, 0-1.
        passes : int, optional
            MC dropout passes (default the manifest's ``mc_passes``). All passes of a chunk
            of frames run as one compiled call on the tiled batch.
        aligner : Aligner, optional
            Gives per-frame latent alignments from the frames' latent statistics; ignored when
            the manifest switches alignment off.
        spacing : numpy.ndarray, optional
            ``(N, 2)`` grid-cell size of each frame in mm (NaN where unknown): adds the
            field-of-view score to the OOD score (:meth:`sswe_node.trust.TrustStats.score`),
            and a frame whose cell size is far from the model's ``spacing_mm`` is run at the
            model's spacing (:meth:`working_shapes`: resampled in, its maps resampled back to
            the grid; its latent map resampled onto the grid's latent shape for the
            aligner, and the alignment resampled back). Other frames are run as without it.

        Returns
        -------
        Inference
        """
        images = self._check(images)
        passes = int(passes or self.inference.mc_passes)
        n = len(images)
        grid = tuple(self.manifest.grid)
        groups, work = self._working(images, spacing)
        codes = {shape: self._encode(work[shape]) for shape in groups}
        latent = self._grid_latent(groups, codes, n)
        pooled = latent.mean(axis=(1, 2))
        shape = latent.shape[1:]
        scale = np.ones((n, *shape), np.float32)
        shift = np.zeros((n, *shape), np.float32)
        aligned = np.zeros(n, bool)
        if aligner is not None and self.inference.align_scanners and n:
            flat = latent.reshape(n, -1)
            # an aligner that matches depths (sswe_node.alignment) also takes the spacing
            with_spacing = getattr(aligner, "uses_spacing", False)
            answer = aligner(flat, spacing) if with_spacing else aligner(flat)
            if answer is not None:
                scale = np.asarray(answer[0], np.float32).reshape(n, *shape)
                shift = np.asarray(answer[1], np.float32).reshape(n, *shape)
                aligned = np.asarray(answer[2], bool)
        values = np.empty((n, *grid), np.float32)
        sd = np.empty((n, *grid), np.float32)
        mode = self.inference.align_level
        change = np.full((n, *grid) if mode == "position" else n, np.nan)
        for size, idx in groups.items():
            one = len(groups) == 1
            a, b = (scale, shift) if one else (scale[idx], shift[idx])
            v, s, c = self._decode_group(work[size], codes[size], a, b, aligned[idx], passes)
            if size != grid:
                v, s = _resize(v, grid), _resize(s, grid)
                c = _resize(c, grid) if c.ndim == 3 else c
            change[idx] = c
            if one:
                values, sd = v, s
            else:
                values[idx], sd[idx] = v, s
        if mode != "none" and aligned.any():
            level = getattr(aligner, "level", None)
            if level is None:  # nothing kept per key: the frame's own change of the mean
                change = change.mean(axis=(1, 2)) if change.ndim == 3 else change
            elif mode in ("scanner", "position"):
                change = np.asarray(level(change), np.float64)
            sel = np.flatnonzero(aligned)
            back = change[sel] if change.ndim == 3 else change[sel, None, None]
            values[sel] = np.clip(values[sel] + back.astype(np.float32), 0.0, 1.0)
        unit = np.float32(self.manifest.scale)
        ood = self.trust.score(images, pooled, spacing) if self.trust is not None and n else None
        return Inference(
            values=values * unit,
            sd=sd * (unit * np.float32(self.inference.sd_scale)) if passes > 1 else None,
            passes=passes,
            ood_score=ood,
            pooled=pooled,
            latent=latent,
            aligned=aligned.astype(bool),
        )

    def working_shapes(self, spacing: NDArray[np.floating] | None, frames: int) -> NDArray[np.intp]:
        """Return the ``(N, 2)`` shape each frame is run at (the grid, or its own spacing).

        Along an axis where a frame's grid-cell size differs from the manifest's
        ``spacing_mm`` by more than ``resample_tolerance`` (see :class:`InferenceSettings`),
        the frame is resampled to the model's spacing: the axis gets ``grid * cell /
        spacing_mm`` pixels, rounded to a multiple of :data:`RESAMPLE_STEP` (few distinct
        compiled shapes) within half to twice the grid. Frames without a spacing, and axes
        within the tolerance, keep the grid's size.
        """
        grid = np.asarray(self.manifest.grid, np.intp)
        shapes = np.tile(grid, (frames, 1))
        tolerance = float(self.inference.resample_tolerance)
        if spacing is None or tolerance <= 0 or not frames:
            return shapes
        cells = np.asarray(spacing, np.float64).reshape(frames, 2)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = cells / np.asarray(self.manifest.spacing_mm, np.float64)
            far = np.isfinite(ratio) & (ratio > 0)
            far[far] = np.abs(np.log(ratio[far])) > np.log1p(tolerance)
        step = RESAMPLE_STEP
        lowest = np.maximum(step, -(-grid // 2 // step) * step)
        sizes = np.rint(grid * np.where(far, ratio, 1.0) / step).astype(np.intp) * step
        sizes = np.clip(sizes, lowest, 2 * grid)
        return np.where(far, sizes, shapes)

    @staticmethod
    def _shape_groups(shapes: NDArray[np.intp]) -> dict[tuple[int, int], NDArray[np.intp]]:
        """Return ``{shape: frame indices}`` (first appearance first)."""
        keys = [(int(r), int(c)) for r, c in shapes]
        return {k: np.flatnonzero([key == k for key in keys]) for k in dict.fromkeys(keys)}

    def reference_latent(
        self, images: NDArray[np.floating], spacing: NDArray[np.floating] | None = None
    ) -> NDArray[np.float32]:
        """Return the latent maps ``infer`` aligns, on the grid's latent shape ``(N, h, w, C)``.

        Frames run at another shape (:meth:`working_shapes`) have their latent map resampled
        (bilinear) onto the grid's latent shape; the others equal :meth:`latent`.
        """
        images = self._check(images)
        groups, work = self._working(images, spacing)
        codes = {shape: self._encode(work[shape], keep=False) for shape in groups}
        return self._grid_latent(groups, codes, len(images))

    def _working(
        self, images: NDArray[np.float32], spacing: NDArray[np.floating] | None
    ) -> tuple[dict[tuple[int, int], NDArray[np.intp]], dict[tuple[int, int], NDArray]]:
        """Return ``{shape: frame indices}`` and ``{shape: the frames at that shape}``."""
        grid = tuple(self.manifest.grid)
        groups = self._shape_groups(self.working_shapes(spacing, len(images)))
        work = {
            shape: images if len(groups) == 1 and shape == grid else _resize(images[idx], shape)
            for shape, idx in groups.items()
        }
        return groups, work

    def _encode(
        self, images: NDArray[np.float32], keep: bool = True
    ) -> tuple[Any, list[Any] | None, NDArray]:
        """Run the deterministic encoder on frames of one working shape (chunk by chunk).

        Returns the padded latent maps, the skip features of every level (as the backend's
        arrays, not copied to numpy: :meth:`_decode` decodes them again) and the images.
        Without ``keep``, or above :data:`KEPT_ENCODINGS` frames, the skip features are not
        kept (None: about 2.5 MB a frame on a 96 x 64 grid): :meth:`_decode` then encodes
        its frames again.
        """
        from keras import ops

        keep = keep and len(images) <= KEPT_ENCODINGS
        forward = self._call(("encode", tuple(images.shape[1:])))
        parts: list[tuple[Any, ...]] = []
        with _device_scope(self.device):
            for start in range(0, len(images), self.batch_size):
                out = forward(images[start : start + self.batch_size])
                parts.append(tuple(out) if keep else (np.asarray(out[0], np.float32),))
            if not parts:
                probe = forward(np.zeros((1, *images.shape[1:]), np.float32))
                parts = [tuple(t[:0] for t in probe)]
            columns = zip(*parts, strict=True)
            joined = [c[0] if len(parts) == 1 else ops.concatenate(c) for c in columns]
        return joined[0], (joined[1:] if keep else None), images

    def _grid_latent(
        self,
        groups: dict[tuple[int, int], NDArray[np.intp]],
        codes: dict[tuple[int, int], tuple[Any, list[Any] | None, NDArray]],
        frames: int,
    ) -> NDArray[np.float32]:
        """Return the latent maps of :meth:`reference_latent` from the groups' encodings."""
        grid = tuple(self.manifest.grid)
        cell = 2**self._depth
        lpad = self.inference.pad // cell
        lshape = (grid[0] // cell, grid[1] // cell)
        latent = np.empty((frames, *lshape, self.latent_channels), np.float32)
        for shape, idx in groups.items():
            rows, cols = shape[0] // cell, shape[1] // cell
            z = np.asarray(codes[shape][0], np.float32)[:, lpad : lpad + rows, lpad : lpad + cols]
            if len(groups) == 1 and shape == grid:
                return np.ascontiguousarray(z)
            latent[idx] = z if shape == grid else _resize(z, lshape)
        return latent

    def _decode(
        self,
        code: tuple[Any, list[Any] | None, NDArray[np.float32]],
        scale: NDArray[np.float32],
        shift: NDArray[np.float32],
        frames: NDArray[np.intp] | None = None,
    ) -> NDArray[np.float32]:
        """Decode the encoded ``frames`` (all: None) with ``latent * scale + shift``.

        ``scale`` and ``shift`` are given for those frames, on the padded latent shape.
        Returns the normalised output maps at the working shape (one deterministic pass).
        Without kept skip features the frames are encoded again (the same values).
        """
        from keras import ops

        latent, skips, images = code
        size = tuple(images.shape[1:])
        if skips is None:
            chosen = images if frames is None else images[frames]
            return self._chunks(self._call(("mc", 1, size)), chosen, 1, scale, shift)[0]
        forward = self._call(("decode", size))
        count = len(scale)
        out = []
        with _device_scope(self.device):
            for start in range(0, count, self.batch_size):
                stop = min(count, start + self.batch_size)
                if frames is None:
                    pick = [t[start:stop] for t in (latent, *skips)]
                else:
                    at = ops.convert_to_tensor(frames[start:stop].astype(np.int32))
                    pick = [ops.take(t, at, axis=0) for t in (latent, *skips)]
                y = forward(pick[0], scale[start:stop], shift[start:stop], *pick[1:])
                out.append(np.asarray(y, dtype=np.float32))
        if not out:
            return np.zeros((0, *size), np.float32)
        return np.concatenate(out)  # a writable copy (the backend's arrays are read-only)

    def _decode_group(
        self,
        images: NDArray[np.float32],
        code: tuple[Any, list[Any] | None, NDArray[np.float32]],
        scale: NDArray[np.float32],
        shift: NDArray[np.float32],
        aligned: NDArray[np.bool_],
        passes: int,
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float64]]:
        """Decode frames of one working shape (alignment given on the grid's latent).

        ``code`` is the frames' deterministic encoding (:meth:`_encode`): one pass decodes it;
        more run the MC call on the images. Returns the normalised mean and sd maps at the
        working shape, and what its alignment took away from each frame's output (NaN where
        not aligned, or with ``align_level = "none"``): its unaligned deterministic output
        minus its aligned one, both decoded from ``code``; per pixel (``(N, rows, cols)``)
        with ``align_level = "position"``, else the difference of the two maps' means.
        """
        size = tuple(images.shape[1:])
        cell = 2**self._depth
        lshape = (size[0] // cell, size[1] // cell)
        if scale.shape[1:3] != lshape:
            scale, shift = _resize(scale, lshape), _resize(shift, lshape)
        lpad = self.inference.pad // cell
        if lpad:  # the latent of the padding ring takes the alignment of the nearest edge
            ring = ((0, 0), (lpad, lpad), (lpad, lpad), (0, 0))
            scale, shift = np.pad(scale, ring, mode="edge"), np.pad(shift, ring, mode="edge")
        if passes == 1:
            values = self._decode(code, scale, shift)
            sd = np.zeros_like(values)
        else:
            chunk = max(1, self.batch_size // passes)
            values, sd = self._chunks(
                self._call(("mc", passes, size)), images, 1, scale, shift, size=chunk
            )
        mode = self.inference.align_level
        change = np.full((len(images), *size) if mode == "position" else len(images), np.nan)
        if mode != "none" and aligned.any():
            sel = np.flatnonzero(aligned)
            a, b = scale[sel], shift[sel]
            plain = self._decode(code, np.ones_like(a), np.zeros_like(b), sel)
            moved = values[sel] if passes == 1 else self._decode(code, a, b, sel)
            if mode == "position":
                change[sel] = plain.astype(np.float64) - moved
            else:
                change[sel] = plain.mean(axis=(1, 2), dtype=np.float64) - moved.mean(
                    axis=(1, 2), dtype=np.float64
                )
        return values, sd, change

    def _check(self, images: NDArray[np.floating]) -> NDArray[np.float32]:
        images = np.asarray(images, dtype=np.float32)
        rows, cols = self.manifest.grid
        if images.ndim != 3 or images.shape[1:] != (rows, cols):
            raise ModelError(
                f"model {self.manifest.name} expects (N, {rows}, {cols}) images, got {images.shape}"
            )
        return images

    def _chunks(
        self, forward: Any, images: NDArray[np.float32], _: int, *extra: NDArray, size: int = 0
    ) -> list[NDArray[np.float32]]:
        """Run ``forward`` over chunks of frames; concatenate each of its outputs."""
        size = size or self.batch_size
        parts: list[list[NDArray[np.float32]]] = []
        with _device_scope(self.device):
            for start in range(0, len(images), size):
                args = [a[start : start + size] for a in (images, *extra)]
                out = forward(*args)
                out = out if isinstance(out, tuple | list) else (out,)
                parts.append([np.asarray(o, dtype=np.float32) for o in out])
        if not parts:
            probe = forward(
                *[
                    a[:1] if len(a) else np.zeros((1, *a.shape[1:]), a.dtype)
                    for a in (images, *extra)
                ]
            )
            probe = probe if isinstance(probe, tuple | list) else (probe,)
            return [np.zeros((0, *np.shape(o)[1:]), np.float32) for o in probe]
        return [np.concatenate(group, axis=0) for group in zip(*parts, strict=True)]

    def _call(self, kind: Any) -> Any:
        if kind not in self._calls:
            self._calls[kind] = self._build(kind)
        return self._calls[kind]

    def _build(self, kind: Any) -> Any:
        import keras
        from keras import ops

        pad = self.inference.pad
        rows, cols = kind[-1]  # the working shape: the grid, or a frame's own spacing
        lpad = pad // 2**self._depth
        lrows, lcols = rows // 2**self._depth, cols // 2**self._depth
        graph = self._graph
        if kind[0] == "mc" and kind[1] > 1:
            masks = graph.masks((rows + 2 * pad, cols + 2 * pad), int(kind[1]))
            if self.mc_precision == "bfloat16":
                if self._mc_graph is None:
                    low = _flexible_copy(self.keras_model, compute="mixed_bfloat16")
                    self._mc_graph = _Graph(low, self._depth)
                graph = self._mc_graph

        def f32(x: Any) -> Any:
            return ops.cast(x, "float32")

        def padded(x: Any) -> Any:
            x = x[..., None]
            if pad:
                x = ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="reflect")
            return x

        plan = graph.plan((rows + 2 * pad, cols + 2 * pad), (pad, pad + rows), (pad, pad + cols))

        def decode(latent: Any, skips: list[Any], passes: int = 1) -> Any:
            """Return the network output on the unpadded region, (N * passes, rows, cols)."""
            y = graph.decode(latent, skips, passes, plan)
            return y[..., 0] if plan is not None else y[:, pad : pad + rows, pad : pad + cols, 0]

        def latent_crop(z: Any) -> Any:
            return z[:, lpad : lpad + lrows, lpad : lpad + lcols, :]

        def encode(x: Any) -> tuple[Any, list[Any]]:
            skips = []
            for segment in graph.segments:
                x, skip = segment(x, training=False)
                skips.append(skip)
            return graph.bottom(x, training=False), skips

        if kind[0] == "det":

            def fn(x: Any) -> Any:
                latent, skips = encode(padded(x))
                return decode(latent, skips)

        elif kind[0] == "latent":

            def fn(x: Any) -> Any:
                return latent_crop(encode(padded(x))[0])

        elif kind[0] == "encode":

            def fn(x: Any) -> Any:
                latent, skips = encode(padded(x))
                return (latent, *skips)

        elif kind[0] == "decode":

            def fn(latent: Any, scale: Any, shift: Any, *skips: Any) -> Any:
                return decode(latent * scale + shift, list(skips))

        else:
            passes = int(kind[1])

            def fn(x: Any, scale: Any, shift: Any) -> Any:
                if passes == 1:
                    latent, skips = encode(padded(x))
                    latent = latent * scale + shift
                    y = decode(latent, skips)
                    return y, ops.zeros_like(y)
                # The same T dropout masks for every frame: a frame's result never depends
                # on the batch it came in. The part before the first dropout runs once.
                h = padded(x)
                skips = []
                for level, segment in enumerate(graph.segments):
                    h, skip = (f32(t) for t in segment(h, training=False))
                    if level == 0:
                        skips.append(skip)  # before any dropout: per frame (_Graph.decode)
                        shape = ops.shape(h)
                        h = ops.reshape(h[:, None] * masks[level][None], (-1, *shape[1:]))
                    else:
                        skips.append(skip)
                        shape = ops.shape(h)
                        tiled = ops.reshape(h, (-1, passes, *shape[1:]))
                        h = ops.reshape(tiled * masks[level][None], (-1, *shape[1:]))
                latent = f32(graph.bottom(h, training=False))
                scale = ops.repeat(scale, passes, axis=0)
                shift = ops.repeat(shift, passes, axis=0)
                latent = latent * scale + shift
                y = f32(decode(latent, skips, passes))
                y = ops.reshape(y, (-1, passes, rows, cols))
                sd = ops.std(y, axis=1) * np.float32(np.sqrt(passes / (passes - 1)))
                return ops.mean(y, axis=1), sd

        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            image = tf.TensorSpec([None, rows, cols], tf.float32)
            if kind[0] not in ("mc", "decode"):
                return tf.function(fn, input_signature=[image])
            hp, wp = (rows + 2 * pad) // 2**self._depth, (cols + 2 * pad) // 2**self._depth
            maps = tf.TensorSpec([None, hp, wp, self.latent_channels], tf.float32)
            if kind[0] == "mc":
                return tf.function(fn, input_signature=[image, maps, maps])
            skips = [
                tf.TensorSpec(
                    [None, (rows + 2 * pad) // 2**level, (cols + 2 * pad) // 2**level,
                     int(segment.outputs[1].shape[-1])],
                    tf.float32,
                )
                for level, segment in enumerate(graph.segments)
            ]  # fmt: skip
            return tf.function(fn, input_signature=[maps, maps, maps, *skips])
        if backend == "jax":
            import jax

            return jax.jit(fn)
        return fn


def _resize(x: NDArray[np.floating], shape: tuple[int, int]) -> NDArray[np.float32]:
    """Bilinear resampling of axes 1 and 2 of ``(N, h, w[, C])`` to ``shape``.

    The pixel-centre convention of :func:`sswe_node.imaging.grid.to_grid` (edges clamped), on
    every frame and channel at once; an axis already of its size is left as it is.
    """
    x = np.asarray(x, np.float32)
    for axis, n_out in ((1, int(shape[0])), (2, int(shape[1]))):
        n_in = x.shape[axis]
        if n_in == n_out:
            continue
        position = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        np.clip(position, 0.0, n_in - 1, out=position)
        lower = np.floor(position).astype(np.intp)
        upper = np.minimum(lower + 1, n_in - 1)
        weight = (position - lower).astype(np.float32)
        form = [1] * x.ndim
        form[axis] = n_out
        low = np.take(x, lower, axis=axis)
        x = low + (np.take(x, upper, axis=axis) - low) * weight.reshape(form)
    return x


#: The layers of one decoder level of training.unet's U-Net (``dec{level}_{part}``).
_DECODER_PARTS = ("up", "a_conv", "a", "b_conv", "b")


class _Graph:
    """The U-Net cut into pieces at its dropout layers and at :data:`LATENT_LAYER`.

    ``segments[level]`` maps the level's input (the network input, or the previous level's
    dropout output) to ``(pooled, skip)``: the level's max-pooling output and its skip
    features (``enc{level}_b``). ``bottom`` maps the last dropout output to the latent
    features; ``decoder`` maps ``[latent, skip_0, ...]`` to the output. Dropout is applied
    between segments with fixed masks (:meth:`masks`), so MC passes are reproducible.
    """

    def __init__(self, network: Any, depth: int) -> None:
        import keras

        try:
            source = network.inputs
            self.segments = []
            self.rates = []
            for level in range(depth):
                pooled = network.get_layer(f"enc{level}_pool").output
                skip = network.get_layer(f"enc{level}_b").output
                self.segments.append(keras.Model(source, [pooled, skip]))
                dropout = network.get_layer(f"enc{level}_dropout")
                self.rates.append(float(dropout.rate))
                source = dropout.output
            latent = network.get_layer(LATENT_LAYER).output
            self.bottom = keras.Model(source, latent)
            skips = [network.get_layer(f"enc{level}_b").output for level in range(depth)]
            self.decoder = keras.Model([latent, *skips], network.outputs)
        except Exception as exc:  # noqa: BLE001 - not the U-Net of training.unet
            raise ModelError(
                f"the network is not a U-Net with enc<level>_pool/_b/_dropout and a "
                f"{LATENT_LAYER!r} layer: {exc}"
            ) from None
        self.channels = int(latent.shape[-1])
        self.depth = depth
        try:  # the decoder's layers, deepest level first, for decode()
            self.levels = [
                (level, *(network.get_layer(f"dec{level}_{part}") for part in _DECODER_PARTS))
                for level in reversed(range(depth))
            ]
            self.head = network.layers[-1]
            # per level: the first convolution's half on the upsampled map, as phase kernels
            self.phases = {}
            for level, up, a_conv, *_ in self.levels:
                split = int(up.output.shape[-1])
                kernel = np.asarray(keras.ops.convert_to_numpy(a_conv.kernel), np.float32)
                self.phases[level] = _phase_kernels(kernel[:, :, :split])
        except Exception:  # noqa: BLE001 - another decoder: the whole-map decoder model
            self.levels = []

    def plan(
        self, size: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]
    ) -> list[tuple[tuple[int, int], tuple[int, int]]] | None:
        """Return per decoder level (0 first, then the latent) the region it must compute.

        The output is wanted on ``rows`` x ``cols`` of a ``size`` map. Each level's two 3x3
        convolutions need one more pixel on every side than their output, each upsampling
        half as many: the decoder can then run unpadded (``valid``) convolutions on these
        regions and give exactly the values the whole-map decoder gives there. ``None`` when
        a region would reach outside its map (too little input padding) or when the network
        is not the decoder this knows: :meth:`decode` then runs on the whole map.
        """
        if not self.levels:
            return None
        need = [(rows, cols)]
        for level in range(self.depth):
            h, w = size[0] // 2**level, size[1] // 2**level
            (r0, r1), (c0, c1) = need[-1]
            if r0 < 2 or c0 < 2 or r1 + 2 > h or c1 + 2 > w:
                return None
            need.append((((r0 - 2) // 2, -(-(r1 + 2) // 2)), ((c0 - 2) // 2, -(-(c1 + 2) // 2))))
        return need

    def decode(
        self,
        latent: Any,
        skips: list[Any],
        passes: int,
        plan: list[tuple[tuple[int, int], tuple[int, int]]] | None,
    ) -> Any:
        """Decode ``N * passes`` latent maps (each frame's passes consecutive).

        ``skips[0]`` (computed before any dropout) is per frame, the deeper ones per pass.
        The last level's first convolution is split at its input concatenation, so that
        the half acting on ``skips[0]`` runs once per frame, not once per pass. With a
        ``plan`` (:meth:`plan`) only the needed regions are computed and the result is the
        output region; else the whole map. Equal to the network's decoder up to rounding.
        """
        from keras import ops

        if not self.levels:
            skip0 = ops.repeat(skips[0], passes, axis=0) if passes > 1 else skips[0]
            return self.decoder([latent, skip0, *skips[1:]], training=False)
        padding = "same" if plan is None else "valid"

        def window(x: Any, region: Any, origin: tuple[int, int] = (0, 0)) -> Any:
            if plan is None:
                return x
            (r0, r1), (c0, c1) = region
            return x[:, r0 - origin[0] : r1 - origin[0], c0 - origin[1] : c1 - origin[1]]

        def conv(x: Any, kernel: Any) -> Any:
            return ops.conv(x, ops.cast(kernel, x.dtype), padding=padding)

        def grown(region: Any) -> Any:
            (r0, r1), (c0, c1) = region
            return ((r0 - 2, r1 + 2), (c0 - 2, c1 + 2))

        def shrunk(region: Any) -> Any:
            (r0, r1), (c0, c1) = region
            return ((r0 + 1, r1 - 1), (c0 + 1, c1 - 1))

        x = latent if plan is None else window(latent, plan[self.depth])
        for level, up, a_conv, a_act, b_conv, b_act in self.levels:
            source = None if plan is None else plan[level + 1]
            inputs = None if plan is None else grown(plan[level])
            origin = (0, 0) if source is None else (2 * source[0][0], 2 * source[1][0])
            dtype = up.compute_dtype
            outputs = None if plan is None else shrunk(inputs)
            # conv(concat(up(x), skip)) = conv(up(x), kernel_up) + conv(skip, kernel_skip)
            upper = window(_upsampled_conv(x, self.phases[level], dtype), outputs, origin)
            skip = window(skips[level], inputs)
            kernel = ops.convert_to_tensor(a_conv.kernel)[:, :, self.phases[level][0][0].shape[2] :]
            fixed = conv(ops.cast(skip, dtype), kernel)
            fixed = fixed + (ops.cast(a_conv.bias, dtype) if a_conv.use_bias else 0.0)
            if level == 0 and passes > 1:  # the skip features are per frame here
                fixed = ops.repeat(fixed, passes, axis=0)
            h = a_act(upper + fixed)
            h = conv(h, b_conv.kernel) + (ops.cast(b_conv.bias, h.dtype) if b_conv.use_bias else 0)
            x = b_act(h)
        return self.head(x)

    def masks(self, padded: tuple[int, int], passes: int, seed: int = 0) -> list[NDArray]:
        """Return per level the ``(passes, h, w, c)`` dropout masks (scaled by 1/keep)."""
        rng = np.random.default_rng(seed)
        masks = []
        for level, (segment, rate) in enumerate(zip(self.segments, self.rates, strict=True)):
            h, w = padded[0] // 2 ** (level + 1), padded[1] // 2 ** (level + 1)
            c = int(segment.outputs[0].shape[-1])
            keep = 1.0 - rate
            mask = (rng.random((passes, h, w, c)) < keep).astype(np.float32) / np.float32(keep)
            masks.append(mask)
        return masks


def _phase_kernels(kernel: NDArray[np.float32]) -> list[list[NDArray[np.float32]]]:
    """Split a 3x3 kernel acting on a 2x nearest-upsampled map into four 2x2 kernels.

    Output pixel ``(2i + a, 2j + b)`` of ``conv(upsample(x), kernel)`` is a 2x2 convolution
    of ``x`` around ``(i, j)`` with kernel ``[a][b]`` (the taps that fall on the same source
    pixel add up): 16 instead of 36 multiply-adds per output pixel and channel pair.
    """

    def halves(taps: NDArray[np.float32], phase: int) -> list[NDArray[np.float32]]:
        return [taps[0], taps[1] + taps[2]] if phase == 0 else [taps[0] + taps[1], taps[2]]

    out = []
    for a in (0, 1):
        row = []
        for b in (0, 1):
            k = np.empty((2, 2, *kernel.shape[2:]), np.float32)
            for r, taps in enumerate(halves(kernel, a)):
                k[r, 0], k[r, 1] = halves(taps, b)
            row.append(k)
        out.append(row)
    return out


def _upsampled_conv(x: Any, kernels: list[list[NDArray[np.float32]]], dtype: Any) -> Any:
    """Return ``conv(upsample_nearest_2x(x), kernel, padding="same")`` from its phases."""
    from keras import ops

    x = ops.cast(x, dtype)
    shape = ops.shape(x)
    h, w = shape[1], shape[2]
    xp = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    rows = []
    for a in (0, 1):
        phases = [
            ops.conv(xp[:, a : a + h + 1, b : b + w + 1], ops.cast(kernels[a][b], dtype))
            for b in (0, 1)
        ]
        q = ops.stack(phases, axis=3)  # (N, h, w, 2, C): column 2j + b
        rows.append(ops.reshape(q, (shape[0], h, 2 * w, -1)))
    out = ops.stack(rows, axis=2)  # (N, h, 2, 2w, C): row 2i + a
    return ops.reshape(out, (shape[0], 2 * h, 2 * w, -1))


def compile_forward(keras_model: Any, grid: tuple[int, int]) -> Any:
    """Return a compiled inference function of a Keras model (dropout off).

    It avoids ``model.predict``'s per-call overhead: ``f(x)`` with ``x`` of shape
    ``(N, rows, cols, 1)`` float32 returns the network output.
    """
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


def _flexible_copy(keras_model: Any, compute: str | None = None) -> Any:
    """Return the same network with an input of any size (it is fully convolutional).

    ``compute`` (e.g. ``"mixed_bfloat16"``) sets the dtype policy of every layer but the
    output layer (the last), whose sigmoid stays float32.
    """
    import keras

    config = keras_model.get_config()
    try:
        config["layers"][0]["config"]["batch_shape"] = (None, None, None, 1)
        if compute is not None:
            for layer in config["layers"][1:-1]:
                layer["config"]["dtype"] = compute
        copy = keras.Model.from_config(config)
        copy.set_weights(keras_model.get_weights())
    except Exception as exc:  # noqa: BLE001 - not a plain functional U-Net
        raise ModelError(f"cannot prepare the network for padded inference: {exc}") from None
    return copy


def resolve_precision(precision: str) -> str:
    """Return ``"float32"`` or ``"bfloat16"`` for an ``mc_precision`` setting (see above)."""
    if precision in ("float32", "bfloat16"):
        return precision
    if precision != "auto":
        raise ModelError(f"mc_precision must be auto, float32 or bfloat16, got {precision!r}")
    import keras

    if keras.backend.backend() != "tensorflow":
        return "float32"
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return "bfloat16"
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return "float32"
    return "bfloat16" if ("amx_bf16" in flags or "avx512_bf16" in flags) else "float32"


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
    mc_precision: str = "auto",
    trust: bool = True,
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
    mc_precision : str
        Arithmetic of the MC dropout passes (see :class:`PackagedModel`).
    trust : bool
        ``False`` leaves the ``[trust]`` statistics out (for ``sswe-node model stats``, which
        replaces them, also when they are outdated).

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
    if not trust:
        import dataclasses

        manifest = dataclasses.replace(manifest, trust={})
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
    return PackagedModel(
        keras_model,
        manifest,
        path,
        batch_size=batch_size,
        device=device,
        mc_precision=mc_precision,
    )
