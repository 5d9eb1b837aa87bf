"""MC dropout inference: float32 against bfloat16 passes, speed and agreement (issue 12).

On simulated dual captures of fresh patients (read by the node's reading core), times
``model.infer`` with 1 pass and with ``--passes`` in float32 and in bfloat16, and compares the
bfloat16 MC mean and sd with the float32 ones on the same frames.

    .venv/bin/python benchmarks/bench_mc.py --model prostate-sim
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom import dcmread

from sswe_node.config import load_settings
from sswe_node.model import load_model
from sswe_node.pipeline import pre_process


def _frames(model, patients: int, seed: int) -> np.ndarray:
    from training.simulate import write_archive

    settings = load_settings()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_archive(folder, patients=patients, seed=seed, organ=model.manifest.organ,
                      variability="none")  # fmt: skip
        listing = json.loads((folder / "archive.json").read_text())
        paths = [folder / i["path"] for i in listing["instances"] if i["kind"] == "dual"]
        return np.concatenate([pre_process(dcmread(p), model, settings)[1] for p in paths])


def _time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="prostate-sim")
    parser.add_argument("--passes", type=int, default=8)
    parser.add_argument("--patients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=111)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    f32 = load_model(args.model, device="cpu", mc_precision="float32")
    bf16 = load_model(args.model, device="cpu", mc_precision="bfloat16")
    frames = _frames(f32, args.patients, args.seed)
    n = len(frames)
    unit = f32.manifest.unit
    print(
        f"model {args.model}: {n} frames, {args.passes} passes; "
        f"auto -> {load_model(args.model).mc_precision}"
    )
    one = _time(lambda: f32.infer(frames, passes=1), args.repeats)
    print(f"infer T=1 (float32):        {one / n * 1000:7.2f} ms/frame")
    for name, model in (("float32", f32), ("bfloat16", bf16)):
        t = _time(lambda m=model: m.infer(frames, passes=args.passes), args.repeats)
        print(
            f"infer T={args.passes} ({name:8s}):    {t / n * 1000:7.2f} ms/frame "
            f"({t / one:.1f}x T=1)"
        )
    a, b = f32.infer(frames, passes=args.passes), bf16.infer(frames, passes=args.passes)
    diff = np.abs(a.values - b.values)
    print(
        f"bfloat16 vs float32 MC mean: mean |diff| {diff.mean():.3g} {unit}, max {diff.max():.3g} "
        f"{unit}; sd {b.sd.mean():.3g} vs {a.sd.mean():.3g} {unit}, correlation "
        f"{np.corrcoef(a.sd.ravel(), b.sd.ravel())[0, 1]:.5f}"
    )


if __name__ == "__main__":
    main()
