"""Pipeline rate: instances per second through ``process_batch`` vs the bare model's predict.

The baseline, measured in the same run and at the same batch size, is the packaged model's
``predict`` on the batch's model inputs alone (what the pipeline spends on inference). The
ratio says how much of the pipeline's time is inference; the rest (reading, regridding, building
the Parametric Map and the Secondary Capture) is broken down per stage. Sources are simulated
captures (dual SWE, full-screen B-mode, second scanner), decoded in memory before timing.

    .venv/bin/python benchmarks/bench_pipeline.py --model prostate-sim --batch-size 16
    .venv/bin/python benchmarks/bench_pipeline.py            # a fresh paper-sized U-Net
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
from sswe_node.pipeline import pre_process, process_batch


def _model(name: str | None, models_dir: str, tmp: Path, device: str):
    if name:
        return load_model(name, models_dir, device=device)
    from training.package import write_package
    from training.unet import build_unet

    write_package(
        build_unet((96, 64), filters=32, depth=2, seed=0),
        tmp / "bench-unet",
        name="bench-unet",
        version="0",
        organ="prostate",
        quantity="youngs-modulus",
        trained_on="nothing: untrained, for timing only",
        status="provisional",
    )
    return load_model(tmp / "bench-unet", device=device)


def _sources(tmp: Path, count: int) -> list:
    from training.simulate import write_archive

    planes = max(1, -(-count // 3))
    write_archive(tmp / "archive", patients=1, seed=0, images_per_patient=planes)
    listing = json.loads((tmp / "archive" / "archive.json").read_text())
    datasets = [dcmread(tmp / "archive" / item["path"]) for item in listing["instances"]]
    for ds in datasets:
        ds.pixel_array  # noqa: B018 - decode once, outside the timings (as in the node's cache)
    return datasets[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="packaged model (default: a fresh U-Net)")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--batch-size", type=int, default=16, help="instances per batch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = _model(args.model, args.models_dir, tmp, args.device)
        datasets = _sources(tmp, args.batch_size)
        settings = load_settings()
        inputs = np.concatenate([pre_process(ds, model, settings)[1] for ds in datasets])
        model.predict(inputs)  # warm-up: graph tracing
        process_batch(datasets, model, settings)  # warm-up: imports, font, caches

        bare, piped, stages = [], [], {"read": [], "predict": [], "build": []}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model.predict(inputs)
            bare.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            results = process_batch(datasets, model, settings)
            piped.append(time.perf_counter() - t0)
            for key in stages:
                stages[key].append(sum(r.timings.get(key, 0.0) for r in results))
        done = sum(r.status == "done" for r in results)
        frames = len(inputs)

    bare_s, piped_s = statistics.median(bare), statistics.median(piped)
    print(f"model {model.manifest.name} {model.manifest.version}, device {args.device}")
    print(f"batch: {len(datasets)} instances ({done} done), {frames} frames")
    print(f"bare model.predict:  {bare_s * 1000:8.1f} ms/batch  {frames / bare_s:8.1f} frames/s")
    print(f"pipeline:            {piped_s * 1000:8.1f} ms/batch  {done / piped_s:8.1f} instances/s")
    for key, values in stages.items():
        print(f"  {key:8s} {statistics.median(values) * 1000:8.1f} ms/batch")
    build_s = statistics.median(stages["build"])
    print(
        f"build per instance {build_s / max(done, 1) * 1000:.1f} ms"
        f" vs bare predict per frame {bare_s / frames * 1000:.1f} ms"
    )
    print(f"ratio pipeline rate / bare predict rate: {(frames / piped_s) / (frames / bare_s):.3f}")


if __name__ == "__main__":
    main()
