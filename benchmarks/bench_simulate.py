"""Simulator speed: fast B-mode engine images/s (goal >= 20 on 2 cores) and ratio to pymust.

Run: .venv/bin/python benchmarks/bench_simulate.py [--images 40] [--pymust-images 1]

An "image" is the tissue rasterisation plus B-mode formation (scatterers, PSF, display chain)
of one imaging region. Reported per geometry: wall-clock images/s in one process, CPU-time
images/s of one core (robust on a shared machine), wall-clock images/s of two worker processes
(the 2-core figure the goal refers to; only meaningful on an otherwise idle machine), and
CPU-time images/s of the B-mode engine alone (tissue maps made beforehand). The pymust engine
on a small image is the baseline of the ratios; every number is measured in this run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from training.simulate import write_archive
from training.simulate.bmode import form_bmode
from training.simulate.scanners import DUAL_GEOMETRY, FULL_GEOMETRY, SWE_SCANNER, Geometry
from training.simulate.tissue import make_phantom

SMALL = Geometry(rows=100, cols=100, spacing_mm=0.05, top_mm=18.0)


def simulate_images(geo: Geometry, engine: str, n: int, offset: int = 0) -> tuple[float, float]:
    """Simulate ``n`` images; return (wall seconds, CPU seconds)."""
    with threadpool_limits(limits=1, user_api="blas"):  # as write_archive does
        x, z = geo.axes()
        phantoms = [make_phantom(np.random.default_rng([1, offset + i])) for i in range(n)]
        rng = np.random.default_rng(offset)
        wall, cpu = time.perf_counter(), time.process_time()
        for phantom in phantoms:
            form_bmode(phantom.maps(x, z), SWE_SCANNER.probe, SWE_SCANNER.display, rng, engine)
        return time.perf_counter() - wall, time.process_time() - cpu


def engine_only_cpu_rate(geo: Geometry, n: int) -> float:
    """CPU-time images/s of the B-mode formation alone (tissue maps made beforehand)."""
    with threadpool_limits(limits=1, user_api="blas"):
        x, z = geo.axes()
        maps = [make_phantom(np.random.default_rng([2, i])).maps(x, z) for i in range(n)]
        rng = np.random.default_rng(0)
        cpu = time.process_time()
        for m in maps:
            form_bmode(m, SWE_SCANNER.probe, SWE_SCANNER.display, rng, "fast")
        return n / (time.process_time() - cpu)


def two_process_rate(geo: Geometry, n: int) -> float:
    """Wall-clock images/s of two worker processes, each simulating ``n`` images."""
    with ProcessPoolExecutor(max_workers=2) as pool:
        list(pool.map(simulate_images, [SMALL] * 2, ["fast"] * 2, [1, 1]))  # warm the workers
        start = time.perf_counter()
        list(pool.map(simulate_images, [geo] * 2, ["fast"] * 2, [n, n], [0, 1000]))
        return 2 * n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--pymust-images", type=int, default=1)
    args = parser.parse_args()
    n = args.images
    print(
        f"{'fast engine, image':34s} {'1 proc img/s':>13s} {'1 core CPU':>11s} {'2 procs':>9s}"
        f" {'engine only, 1 core CPU':>24s}"
    )
    rates = {}
    for name, geo in (("dual panel", DUAL_GEOMETRY), ("full-screen", FULL_GEOMETRY)):
        wall, cpu = simulate_images(geo, "fast", n)
        two = two_process_rate(geo, n)
        engine_only = engine_only_cpu_rate(geo, n)
        rates[name] = (n / wall, n / cpu, two)
        label = f"{name} {geo.rows}x{geo.cols} @{geo.spacing_mm} mm"
        print(f"{label:34s} {n / wall:13.1f} {n / cpu:11.1f} {two:9.1f} {engine_only:24.1f}")
    fast_wall, fast_cpu = simulate_images(SMALL, "fast", n)
    pm_wall, pm_cpu = simulate_images(SMALL, "pymust", args.pymust_images)
    fast_small = n / fast_cpu
    pymust_small = args.pymust_images / pm_cpu
    print(f"{'small 100x100 @0.05 mm, fast':34s} {n / fast_wall:13.1f} {fast_small:11.1f}")
    print(
        f"{'small 100x100 @0.05 mm, pymust':34s} {args.pymust_images / pm_wall:13.3f} "
        f"{pymust_small:11.3f}   (baseline)"
    )
    print(
        f"ratio fast / pymust on the same small image (CPU time): {fast_small / pymust_small:.0f} x"
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = write_archive(tmp, patients=3, seed=0)
        seconds = time.perf_counter() - start
    print(f"write_archive, 3 patients ({summary.instances} instances): {seconds:.1f} s wall")
    for name, (_, one_core, two) in rates.items():
        ideal = 2 * one_core
        verdict = "met" if max(ideal, two) >= 20 else "NOT met"
        print(
            f"goal >= 20 img/s on 2 cores, {name}: {verdict} (2 x one-core CPU rate {ideal:.1f}, "
            f"measured 2-process wall rate {two:.1f} on this possibly shared machine)"
        )


if __name__ == "__main__":
    main()
