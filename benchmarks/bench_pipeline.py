"""Pipeline rate: instances per second through ``process_batch`` vs the bare model's predict.

The baseline, measured in the same run and at the same batch size, is the packaged model's
``predict`` on the batch's model inputs alone (one deterministic pass). The
ratio says how much of the pipeline's time is inference; the rest (reading, regridding, building
the Parametric Map and the Secondary Capture) is broken down per stage. Sources are simulated
captures (dual SWE, full-screen B-mode, second scanner), decoded in memory before timing.

Uncertainty (issue 12): the pipeline runs ``trust.mc_passes`` MC dropout passes; the same run
times it with 1 pass (no uncertainty frame, no hatching) and with ``--passes`` (default 8),
interleaved, and prints the rate ratio (goal: T = 8 at least 0.5 of T = 1).

Overheads (issue 10): pipeline at T = 1 against the bare deterministic ``predict``, and at
T = ``--passes`` against the bare ``infer`` with as many passes (goal: at least 0.6 at batch 16),
and the build cost per instance (goal: at most 3 ms). ``process_batch`` predicts chunks of a
few instances on a model thread while reading the next chunk and building the previous one;
the same run also times it with one model call after all reads (``overlap=False``, the
earlier behaviour) and gives each variant's process CPU time, so the gain of the overlap
and the cores it uses are seen side by side.

Scanner alignment (``--aligned``): the node aligns the frames of every scanner key once the
case store holds ``trust.align_min_frames`` of its frames, and then runs one or two more
deterministic passes per aligned frame (the level it keeps). Without a store the pipeline
aligns nothing, so by default these figures leave that work out; with ``--aligned`` every
``process_batch`` call gets in-memory running statistics, filled first by warm-up batches so
that every key of the batch is aligned, as in a node that has seen its scanners
(``bench_node.py`` uses it for its end-to-end reference).

    .venv/bin/python benchmarks/bench_pipeline.py --model prostate-sim --batch-size 16
    .venv/bin/python benchmarks/bench_pipeline.py --model prostate-sim --aligned
    .venv/bin/python benchmarks/bench_pipeline.py            # a fresh paper-sized U-Net
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom import dcmread

from sswe_node.alignment import MemoryScannerStats
from sswe_node.config import load_settings
from sswe_node.model import load_model
from sswe_node.pipeline import pre_process, process_batch


def _model(name: str | None, models_dir: str, tmp: Path, device: str, precision: str):
    if name:
        return load_model(name, models_dir, device=device, mc_precision=precision)
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
    return load_model(tmp / "bench-unet", device=device, mc_precision=precision)


def simulated_sources(tmp: Path, count: int) -> list:
    """``count`` simulated captures (dual, full-screen, second scanner), pixels decoded."""
    from training.simulate import write_archive

    planes = max(1, -(-count // 3))
    write_archive(tmp / "archive", patients=1, seed=0, images_per_patient=planes)
    listing = json.loads((tmp / "archive" / "archive.json").read_text())
    datasets = [dcmread(tmp / "archive" / item["path"]) for item in listing["instances"]]
    for ds in datasets:
        ds.pixel_array  # noqa: B018 - decode once, outside the timings (as in the node's cache)
    return datasets[:count]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="packaged model (default: a fresh U-Net)")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--batch-size", type=int, default=16, help="instances per batch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    parser.add_argument("--passes", type=int, default=8, help="MC dropout passes to compare")
    parser.add_argument(
        "--precision", default="auto", choices=("auto", "float32", "bfloat16"),
        help="arithmetic of the MC passes (trust.mc_precision)",
    )  # fmt: skip
    parser.add_argument(
        "--aligned", action="store_true",
        help="run with scanner statistics that align every key, as a node that knows them",
    )  # fmt: skip
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = _model(args.model, args.models_dir, tmp, args.device, args.precision)
        datasets = simulated_sources(tmp, args.batch_size)
        settings = load_settings(overrides={"trust.mc_passes": args.passes})
        single = load_settings(overrides={"trust.mc_passes": 1})
        inputs = np.concatenate([pre_process(ds, model, settings)[1] for ds in datasets])
        model.predict(inputs)  # warm-up: graph tracing
        stats = MemoryScannerStats() if args.aligned else None
        minimum = settings.trust.align_min_frames
        for _ in range(1 + (-(-minimum // max(1, len(datasets) // 3)) if args.aligned else 0)):
            process_batch(datasets, model, settings, scanner_stats=stats)  # imports, caches
        process_batch(datasets, model, single, scanner_stats=stats)

        passes = args.passes
        model.infer(inputs, passes=passes)  # warm-up: MC graph tracing
        bare, piped, stages = [], [], {"read": [], "predict": [], "build": []}
        bare_mc = []
        piped_1, stages_1 = [], {"read": [], "predict": [], "build": []}
        serial_1, cpu = [], {"bare": [], "pipeline T=1": [], "one call T=1": []}
        serial_build: list[float] = []
        for _ in range(args.repeats):
            c0, t0 = _cpu_s(), time.perf_counter()
            model.predict(inputs)
            bare.append(time.perf_counter() - t0)
            cpu["bare"].append(_cpu_s() - c0)
            t0 = time.perf_counter()
            model.infer(inputs, passes=passes)
            bare_mc.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            results = process_batch(datasets, model, settings, scanner_stats=stats)
            piped.append(time.perf_counter() - t0)
            for key in stages:
                stages[key].append(sum(r.timings.get(key, 0.0) for r in results))
            c0, t0 = _cpu_s(), time.perf_counter()
            results_1 = process_batch(datasets, model, single, scanner_stats=stats)
            piped_1.append(time.perf_counter() - t0)
            cpu["pipeline T=1"].append(_cpu_s() - c0)
            for key in stages_1:
                stages_1[key].append(sum(r.timings.get(key, 0.0) for r in results_1))
            c0, t0 = _cpu_s(), time.perf_counter()
            results_serial = process_batch(
                datasets, model, single, scanner_stats=stats, overlap=False
            )
            serial_1.append(time.perf_counter() - t0)
            serial_build.append(sum(r.timings.get("build", 0.0) for r in results_serial))
            cpu["one call T=1"].append(_cpu_s() - c0)
        done = sum(r.status == "done" for r in results)
        frames = len(inputs)

    bare_s, piped_s = statistics.median(bare), statistics.median(piped)
    print(
        f"model {model.manifest.name} {model.manifest.version}, device {args.device}, "
        f"MC passes in {model.mc_precision}"
    )
    print(f"batch: {len(datasets)} instances ({done} done), {frames} frames")
    if stats is not None:
        print(
            "scanner alignment on: keys and frames seen "
            + ", ".join(f"{k[1]} {v}" for k, v in stats.all().items() if "level" not in k[1])
        )
    print(f"bare model.predict:  {bare_s * 1000:8.1f} ms/batch  {frames / bare_s:8.1f} frames/s")
    print(f"pipeline:            {piped_s * 1000:8.1f} ms/batch  {done / piped_s:8.1f} instances/s")
    for key, values in stages.items():
        print(f"  {key:8s} {statistics.median(values) * 1000:8.1f} ms/batch")
    build_s = statistics.median(stages["build"])
    print(
        f"build per instance {build_s / max(done, 1) * 1000:.1f} ms (while predicting)"
        f" vs bare predict per frame {bare_s / frames * 1000:.1f} ms"
    )
    print(f"ratio pipeline rate / bare predict rate: {(frames / piped_s) / (frames / bare_s):.3f}")
    piped_1_s = statistics.median(piped_1)
    done_1 = sum(r.status == "done" for r in results_1)
    print(
        f"pipeline T=1:        {piped_1_s * 1000:8.1f} ms/batch  {done_1 / piped_1_s:8.1f} "
        "instances/s (no uncertainty)"
    )
    for key, values in stages_1.items():  # overlapped: read/build run while predicting
        print(f"  {key:8s} {statistics.median(values) * 1000:8.1f} ms/batch (concurrent)")
    serial_1_s = statistics.median(serial_1)
    print(
        f"pipeline T=1, one model call after all reads (overlap=False): {serial_1_s * 1000:.1f} "
        f"ms/batch; ratio to bare predict {bare_s / serial_1_s:.3f}"
    )
    print(
        "process CPU time per batch (ms, median): "
        + ", ".join(f"{k} {statistics.median(v) * 1000:.1f}" for k, v in cpu.items())
    )
    bare_mc_s = statistics.median(bare_mc)
    # Build per instance from the one-call run: in the overlapped one, building runs while
    # the model predicts, and its timings include the wait for a core.
    build_1 = statistics.median(serial_build) / max(done_1, 1)
    print(f"bare model.infer T={passes}: {bare_mc_s * 1000:6.1f} ms/batch")
    ratio_1 = (frames / piped_1_s) / (frames / bare_s)
    ratio_t = (frames / piped_s) / (frames / bare_mc_s)
    print(
        f"ratio pipeline T=1 / bare predict: {ratio_1:.3f} "
        f"({'meets' if ratio_1 >= 0.6 else 'misses'} the goal >= 0.6); pipeline T={passes} / "
        f"bare infer T={passes}: {ratio_t:.3f} ({'meets' if ratio_t >= 0.6 else 'misses'} "
        f"0.6); build per instance T=1 (one-call run) {build_1 * 1000:.1f} ms "
        f"({'meets' if build_1 <= 0.003 else 'misses'} the goal <= 3 ms)"
    )
    ratio = (done / piped_s) / (done_1 / piped_1_s)
    print(
        f"ratio pipeline rate T={args.passes} / T=1: {ratio:.3f} "
        f"({'meets' if ratio >= 0.5 else 'misses'} the goal >= 0.5)"
    )


if __name__ == "__main__":
    main()
