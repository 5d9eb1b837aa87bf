"""`sswe-node convert`: run the processing pipeline offline on DICOM files and folders."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HELP = (
    "convert DICOM files and folders offline into derived synthetic SWE DICOM "
    "(Parametric Map + colour Secondary Capture; research use, not for diagnosis)"
)

logger = logging.getLogger(__name__)

__all__ = [
    "HELP",
    "configure_parser",
    "run",
    "convert",
    "find_input_files",
    "output_path",
    "ConvertSummary",
]

SUMMARY_NAME = "convert-summary.json"


@dataclass
class ConvertSummary:
    """What a conversion did.

    Attributes
    ----------
    files : int
        Input files considered.
    converted : int
        Instances turned into derived objects.
    outputs : int
        Derived objects written.
    skipped, failed : list of dict
        One ``{"path", "reason", "message"}`` per file skipped or failed.
    """

    files: int = 0
    converted: int = 0
    outputs: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)

    @property
    def unexpected(self) -> int:
        """Failures that are not about the input (internal errors, the model failing)."""
        return sum(1 for f in self.failed if f["reason"] in ("internal", "predict"))

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dictionary."""
        return {
            "files": self.files,
            "converted": self.converted,
            "outputs": self.outputs,
            "skipped": self.skipped,
            "failed": self.failed,
        }

    def lines(self) -> list[str]:
        """Return the printed summary."""
        out = [
            f"{self.files} files: {self.converted} converted ({self.outputs} derived objects), "
            f"{len(self.skipped)} skipped, {len(self.failed)} failed"
        ]
        for title, items in (("skipped", self.skipped), ("failed", self.failed)):
            if not items:
                continue
            counts = Counter(item["reason"] for item in items)
            out.append(f"{title}: " + ", ".join(f"{r} {n}" for r, n in sorted(counts.items())))
            out.extend(f"  {item['path']}: {item['message']}" for item in items)
        return out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add this sub-command's options."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="DICOM files or folders")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--model", default=None, help="model name or folder (default: config)")
    parser.add_argument("--models-dir", default=None, help="folder of named models")
    parser.add_argument("--config", default=None, help="node configuration file (TOML)")
    parser.add_argument("--png", action="store_true", help="also write PNG previews")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="instances per model call (default: config)"
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "gpu"), default=None, help="where the model runs"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    from sswe_node.distributed import add_cluster_options

    add_cluster_options(parser, workers_help="LocalCluster worker processes (Dask)")


def run(args: argparse.Namespace) -> int:
    """Convert, print the summary; 0 unless something failed unexpectedly."""
    from sswe_node.config import load_settings

    settings = load_settings(
        args.config,
        overrides={
            "model.name": args.model,
            "model.models_dir": args.models_dir,
            "model.device": args.device,
            "processing.batch_size": args.batch_size,
        },
    )
    summary = convert(
        args.inputs, args.out, settings, png=args.png, progress=not args.no_progress,
        scheduler=args.scheduler, workers=args.workers,
    )  # fmt: skip
    if getattr(args, "json", False):
        print(json.dumps({**summary.as_dict(), "out": str(args.out)}, indent=2))
    else:
        print("\n".join(summary.lines()))
        print(f"outputs in {args.out} (synthetic SWE: research use, not for diagnosis)")
    return 1 if summary.unexpected else 0


def find_input_files(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """List the files to convert: files as given, folders recursively.

    Hidden files and folders are ignored. A DICOMDIR is not converted itself; the files it
    references are (even outside the walk).

    Parameters
    ----------
    inputs : iterable of path-like
        Files and folders.

    Returns
    -------
    list of pathlib.Path
        Without repeats, in a stable order.
    """
    from sswe_node.errors import ConfigError

    found: dict[Path, None] = {}
    for item in inputs:
        root = Path(item)
        if root.is_file():
            candidates: Iterable[Path] = [root]
        elif root.is_dir():
            candidates = _walk(root)
        else:
            raise ConfigError(f"{root}: no such file or folder")
        for path in candidates:
            if path.name.upper() == "DICOMDIR":
                for referenced in _dicomdir_files(path):
                    found.setdefault(referenced.resolve(), None)
            else:
                found.setdefault(path.resolve(), None)
    return list(found)


def _walk(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def _dicomdir_files(path: Path) -> list[Path]:
    from pydicom import dcmread
    from pydicom.fileset import FileSet

    try:
        return [Path(instance.path) for instance in FileSet(dcmread(path))]
    except Exception as exc:  # noqa: BLE001 - a broken DICOMDIR must not stop the run
        logger.warning("unreadable DICOMDIR (%s); its folder is still walked", type(exc).__name__)
        return []


def output_path(out_dir: str | os.PathLike[str], derived: Any, suffix: str = ".dcm") -> Path:
    """Return ``out_dir/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID><suffix>``."""
    return (
        Path(out_dir)
        / str(derived.StudyInstanceUID)
        / str(derived.SeriesInstanceUID)
        / f"{derived.SOPInstanceUID}{suffix}"
    )


def _write(derived: Any, out_dir: Path, png: bool) -> None:
    path = output_path(out_dir, derived)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_suffix(".part")
    derived.save_as(staged, enforce_file_format=True)
    staged.replace(path)  # a resend replaces the same file (deterministic UIDs)
    if png and derived.get("PhotometricInterpretation") == "RGB":
        from PIL import Image

        Image.fromarray(derived.pixel_array).save(path.with_suffix(".png"))


def _read(path: Path) -> tuple[Any | None, str, str]:
    """Read one file; return ``(dataset or None, status, reason: message)``."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    from sswe_node.node.intake import missing_identity

    try:
        ds = dcmread(path)
        problem = missing_identity(ds)  # e.g. random bytes behind a valid file header
        return (None, "failed", problem) if problem else (ds, "", "")
    except InvalidDicomError:
        return None, "skipped", "not-dicom: not a DICOM file (no DICM preamble)"
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one failure, not a crash
        return None, "failed", f"corrupt: unreadable DICOM ({type(exc).__name__}: {exc})"


def _batches(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def convert(
    inputs: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    settings: Any,
    *,
    model: Any = None,
    png: bool = False,
    progress: bool = True,
    scheduler: str | None = None,
    workers: int | None = None,
) -> ConvertSummary:
    """Run the pipeline over files and folders and write the derived DICOM.

    Parameters
    ----------
    inputs : iterable of path-like
        DICOM files and folders (walked recursively, DICOMDIR followed).
    out_dir : path-like
        Output folder; see :func:`output_path`. A ``convert-summary.json`` is written too.
    settings : sswe_node.config.Settings
        Node settings (model, reading and processing sections).
    model : sswe_node.model.PackagedModel, optional
        A loaded model; default the one ``settings.model`` names.
    png : bool
        Also write a PNG next to each Secondary Capture.
    progress : bool
        Show a progress bar (stderr).
    scheduler : str, optional
        Run the batches on this Dask cluster (``"local"``: a LocalCluster); see
        :mod:`sswe_node.distributed`. Each worker loads the model once; the files written and
        the summary are those of a run in this process.
    workers : int, optional
        Worker processes of a LocalCluster (alone: a LocalCluster of that many).

    Returns
    -------
    ConvertSummary
    """
    from tqdm import tqdm

    files = find_input_files(inputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model is None and not (scheduler or workers):
        model = _load_model(settings)
    summary = ConvertSummary(files=len(files))
    bar = tqdm(total=len(files), unit="file", disable=not progress, file=sys.stderr)
    batches = list(_batches(files, settings.processing.batch_size))
    try:
        if scheduler or workers:
            from sswe_node.distributed import ordered_map

            done = ordered_map(
                convert_batch, [(batch, out, settings, png) for batch in batches],
                scheduler=scheduler, workers=workers,
                on_done=lambda i: bar.update(len(batches[i])),
            )  # fmt: skip
            for records in done:
                for record in records:
                    _merge(summary, *record)
        else:
            for batch in batches:
                for record in _convert_batch(batch, out, settings, model, png):
                    _merge(summary, *record)
                bar.update(len(batch))
    finally:
        bar.close()
    (out / SUMMARY_NAME).write_text(json.dumps(summary.as_dict(), indent=1), encoding="utf-8")
    logger.info(
        "converted %d of %d files (%d skipped, %d failed)",
        summary.converted,
        summary.files,
        len(summary.skipped),
        len(summary.failed),
    )
    return summary


def _load_model(settings: Any) -> Any:
    from sswe_node.model import load_model

    return load_model(
        settings.model.name,
        settings.model.models_dir,
        device=settings.model.device,
        mc_precision=settings.trust.mc_precision,
    )


def _convert_batch(
    batch: Sequence[Path], out: Path, settings: Any, model: Any, png: bool
) -> list[tuple[Path, str, str, int]]:
    """Convert one batch; return ``(path, status, message, outputs written)`` per file."""
    from sswe_node.pipeline import process_batch

    records: list[tuple[Path, str, str, int]] = []
    readable: list[tuple[Path, Any]] = []
    for path in batch:
        ds, status, message = _read(path)
        if ds is None:
            records.append((path, status, message, 0))
        else:
            readable.append((path, ds))
    results = process_batch([ds for _, ds in readable], model, settings)
    for (path, _), result in zip(readable, results, strict=True):
        if result.status == "done":
            try:
                for derived in result.outputs:
                    _write(derived, out, png)
            except OSError as exc:
                records.append((path, "failed", f"internal: cannot write output: {exc}", 0))
                continue
            records.append((path, "done", "", len(result.outputs)))
        else:
            records.append((path, result.status, result.message, 0))
    return records


def convert_batch(
    batch: Sequence[Path], out: Path, settings: Any, png: bool
) -> list[tuple[Path, str, str, int]]:
    """Convert one batch on a Dask worker (the model is loaded once per worker process)."""
    from sswe_node.distributed import worker_cached

    model = worker_cached(
        ("model", settings.model.name, str(settings.model.models_dir), settings.model.device),
        lambda: _load_model(settings),
    )
    return _convert_batch(batch, out, settings, model, png)


def _merge(summary: ConvertSummary, path: Path, status: str, message: str, outputs: int) -> None:
    if status == "done":
        summary.converted += 1
        summary.outputs += outputs
    else:
        _record(summary, path, status, message)


def _record(summary: ConvertSummary, path: Path, status: str, message: str) -> None:
    reason = message.split(":", 1)[0]
    item = {"path": str(path), "reason": reason, "message": message}
    (summary.skipped if status == "skipped" else summary.failed).append(item)
