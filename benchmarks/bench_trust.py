"""The out-of-distribution gate: false flags on the model's own kind of image, detection elsewhere.

For a packaged model with trust statistics (``sswe-node model stats`` or ``train``), prints the
fraction of frames whose OOD score exceeds ``--percentile``, scored as the node does (image
statistics and, for frames with a pixel spacing, the field of view), on the image statistics
alone, and under each of the gate's scores (``sswe_node.trust.TrustStats.percentiles``) for

* held-out frames of the model's own kind: dual SWE captures of fresh simulated patients
  (a seed the training archive did not use), read by the node's reading core, with nominal
  acquisitions (``variability="none"``: thyroid-sim's training data) and the simulator's
  varied ones (``variability="full"``: prostate-sim's) (goal: <= 5 % flagged); the same
  patients' full-screen B-modes and second-scanner B-modes (another scanner's look: flagged
  is right, for information);
* every pydicom-data ultrasound file the reading core processes (goal: all flagged);
* a second simulated tissue model: the other organ's archive (full-screen B-modes, whose
  colour bars do not fit the model) and a deliberately different phantom generator written
  here (Rayleigh speckle over smooth random scatterer maps with round cysts, log-compressed
  without the simulator's point-spread function and TGC) (goal: every frame flagged).

    .venv/bin/python benchmarks/bench_trust.py --model prostate-sim
    .venv/bin/python benchmarks/bench_trust.py --model thyroid-sim --patients 10
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file

from sswe_node.config import load_settings
from sswe_node.model import load_model
from sswe_node.pipeline import pre_process

PYDICOM_ULTRASOUND = (
    "US1_UNCI.dcm", "US1_UNCR.dcm", "US1_J2KI.dcm", "US1_J2KR.dcm", "gdcm-US-ALOKA-16.dcm",
    "gdcm-US-ALOKA-16_big.dcm", "OBXXXX1A.dcm", "OBXXXX1A_expb.dcm", "OBXXXX1A_rle.dcm",
    "examples_ybr_color.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "color-pl.dcm",
)  # fmt: skip


class Frames:
    """Model inputs of some instances and each frame's grid-cell size in mm (NaN: unknown)."""

    def __init__(self, images: np.ndarray, spacing: np.ndarray | None = None) -> None:
        self.images = images
        self.spacing = np.full((len(images), 2), np.nan) if spacing is None else spacing


def _inputs(paths: list[Path], model, settings) -> tuple[Frames, int]:
    grid = tuple(model.manifest.grid)
    frames, cells, refused = [], [], 0
    for path in paths:
        try:
            readings, inputs = pre_process(dcmread(path), model, settings)
        except Exception:  # noqa: BLE001 - not processed by the node: not scored either
            refused += 1
            continue
        frames.append(inputs)
        cells += [r.grid_spacing_mm(grid) or (np.nan, np.nan) for r in readings]
    if not frames:
        return Frames(np.zeros((0, *grid), np.float32)), refused
    return Frames(np.concatenate(frames), np.asarray(cells, np.float64)), refused


def _archive(folder: Path, organ: str, patients: int, seed: int, variability: str) -> dict:
    from training.simulate import write_archive

    write_archive(folder, patients=patients, seed=seed, organ=organ, variability=variability)
    listing = json.loads((folder / "archive.json").read_text())
    kinds: dict[str, list[Path]] = {}
    for item in listing["instances"]:
        kinds.setdefault(item["kind"], []).append(folder / item["path"])
    return kinds


def other_phantoms(count: int, grid: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A different phantom generator: Rayleigh speckle over smooth random maps with cysts."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    rows, cols = grid
    y, x = np.mgrid[0:rows, 0:cols]
    images = []
    for _ in range(count):
        density = gaussian_filter(rng.random((rows, cols)), sigma=rng.uniform(3, 10))
        density = 0.3 + (density - density.min()) / (np.ptp(density) + 1e-9)
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.uniform(0, rows), rng.uniform(0, cols), rng.uniform(4, 14)
            density[(y - cy) ** 2 + (x - cx) ** 2 < r**2] *= rng.uniform(0.05, 0.3)
        envelope = density * rng.rayleigh(1.0, (rows, cols))
        db = 20 * np.log10(envelope + 1e-3)
        span = rng.uniform(40, 70)
        images.append(np.clip((db - db.max() + span) / span, 0, 1))
    return np.asarray(images, np.float32)


def _rate(model, frames: Frames, percentile: float) -> tuple[float, float, int, str]:
    """Flagged as the node scores (image and field of view), flagged on the image alone,
    frames, and the fraction above ``percentile`` under each score."""
    images = frames.images
    if not len(images):
        return float("nan"), float("nan"), 0, ""
    node = model.infer(images, passes=1, spacing=frames.spacing).ood_score
    image_only = model.infer(images, passes=1).ood_score
    each = model.trust.percentiles(images, frames.spacing)
    by_score = " ".join(f"{100 * np.mean(p > percentile):3.0f}" for p in each.values())
    return (
        float(np.mean(node > percentile)),
        float(np.mean(image_only > percentile)),
        len(images),
        by_score,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="prostate-sim")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--patients", type=int, default=12, help="fresh simulated patients")
    parser.add_argument("--seed", type=int, default=101, help="their seed (training used 1, 2)")
    parser.add_argument("--percentile", type=float, default=None, help="default: the config's")
    args = parser.parse_args()

    settings = load_settings()
    percentile = args.percentile if args.percentile is not None else settings.trust.ood_percentile
    model = load_model(args.model, args.models_dir, device="cpu")
    if model.trust is None:
        raise SystemExit(f"{args.model} has no trust statistics: run `sswe-node model stats`")
    organ = model.manifest.organ
    other = "thyroid" if organ == "prostate" else "prostate"
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for variability in ("none", "full"):
            own = _archive(tmp / f"own-{variability}", organ, args.patients, args.seed, variability)
            for kind in ("dual", "bmode", "other-scanner"):
                images, refused = _inputs(own[kind], model, settings)
                label = f"own {organ} {kind}, variability {variability}"
                rows.append((label, *_rate(model, images, percentile), refused))
        foreign = _archive(tmp / "other", other, max(2, args.patients // 3), args.seed + 1, "none")
        for kind in ("dual", "bmode", "other-scanner"):
            images, refused = _inputs(foreign[kind], model, settings)
            rows.append(
                (f"other tissue: {other} {kind}", *_rate(model, images, percentile), refused)
            )
    rows.append(
        (
            "other phantom generator",
            *_rate(model, Frames(other_phantoms(200, model.manifest.grid)), percentile),
            0,
        )
    )
    real = [Path(get_testdata_file(name)) for name in PYDICOM_ULTRASOUND]
    for path in real:
        images, refused = _inputs([path], model, settings)
        rows.append((f"pydicom-data {path.name}", *_rate(model, images, percentile), refused))

    print(f"model {model.manifest.name} {model.manifest.version}; flagged = score > {percentile}")
    print(
        "flagged: as the node scores (image statistics and, where the frame has a spacing, "
        "its field of view); image: on the image statistics alone"
    )
    one = Frames(np.zeros((1, *model.manifest.grid), np.float32), np.ones((1, 2)))
    names = "/".join(model.trust.percentiles(one.images, one.spacing))
    print(
        f"{'frames':52s} {'flagged':>8s} {'image':>7s} {'count':>6s} {'refused':>7s}  "
        f"% by score ({names})"
    )
    for label, rate, image_only, count, by_score, refused in rows:
        shown = "-" if count == 0 else f"{100 * rate:7.1f}%"
        image = "-" if count == 0 else f"{100 * image_only:6.1f}%"
        print(f"{label:52s} {shown:>8s} {image:>7s} {count:6d} {refused:7d}  {by_score}")


if __name__ == "__main__":
    main()
