"""Simulator speed: fast B-mode engine images/s (goal >= 20 on 2 cores) and ratio to pymust.

Run: .venv/bin/python benchmarks/bench_simulate.py [--images 40] [--pymust-images 1]

An "image" is the phantom draw, tissue rasterisation and B-mode formation (scatterers, PSF,
display chain) of one imaging region, with the variability of ``write_archive`` (the patient's
stiffness-echogenicity relation, the profile's acquisition drawn per image: PSF, focus bands,
TGC sliders, speckle density, zoom, pressure, and the sector's fan). Reported per profile
(prostate: dual panel, full-screen B-mode-only protocol):

* ``1 proc``: wall-clock images/s of one process;
* ``1 core CPU``: CPU-time images/s of that process (robust on a shared machine);
* ``2 procs``: wall-clock images/s of two persistent worker processes (one BLAS/OpenMP thread
  each, started and warmed before the clock starts), each simulating ``--images`` images; the
  median of three runs. The goal is judged on this measured number, never on an extrapolation;
* ``2p CPU/img``: CPU milliseconds per image inside the two workers; more than the one-process
  figure means the processes slow each other (memory bandwidth, shared cache), a wall time well
  above it means other load on the machine;
* ``engine only``: CPU-time images/s of the B-mode formation alone (tissue maps made beforehand).

The pymust engine on a small image is the baseline of the ratios; every number is measured in
this run. The load average is printed: the 2-process figure needs an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from training.simulate import write_archive
from training.simulate.bmode import form_bmode
from training.simulate.profiles import PROFILES, draw_acquisition, gland_depth
from training.simulate.scanners import SWE_SCANNER, Geometry
from training.simulate.tissue import draw_patient_traits, make_phantom

SMALL = Geometry(rows=100, cols=100, spacing_mm=0.05, top_mm=18.0)
GOAL = 20.0
REPEATS = 3


def simulate_images(
    geo: Geometry | str, engine: str, n: int, offset: int = 0
) -> tuple[float, float]:
    """Draw, rasterise and image ``n`` planes; return (wall seconds, CPU seconds).

    ``geo`` is a fixed geometry (nominal SWE scanner) or a prostate profile name (``"dual"``,
    ``"bmode"``, ``"other-scanner"``) whose acquisition is drawn per image.
    """
    rng = np.random.default_rng(offset)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        if isinstance(geo, str):
            traits = draw_patient_traits(np.random.default_rng([1, offset + i, 9001]), "prostate")
            phantom = make_phantom(np.random.default_rng([1, offset + i]), "prostate", traits)
            acq = draw_acquisition(
                PROFILES["prostate"][geo], np.random.default_rng([1, offset + i, 101]),
                gland_depth(phantom),
            )  # fmt: skip
            image = form_bmode(acq.maps(phantom), acq.probe, acq.display, rng, engine)
            fan = acq.geometry.fan_mask()
            if fan is not None:
                image[~fan] = 0
            continue
        x, z = geo.axes()
        phantom = make_phantom(np.random.default_rng([1, offset + i]))
        form_bmode(phantom.maps(x, z), SWE_SCANNER.probe, SWE_SCANNER.display, rng, engine)
    return time.perf_counter() - wall, time.process_time() - cpu


def engine_only_cpu_rate(kind: str, n: int) -> float:
    """CPU-time images/s of the B-mode formation alone (tissue maps made beforehand)."""
    profile = PROFILES["prostate"][kind]
    work = []
    for i in range(n):
        phantom = make_phantom(np.random.default_rng([2, i]))
        acq = draw_acquisition(profile, np.random.default_rng([2, i, 101]), gland_depth(phantom))
        work.append((acq.maps(phantom), acq))
    rng = np.random.default_rng(0)
    cpu = time.process_time()
    for m, acq in work:
        form_bmode(m, acq.probe, acq.display, rng, "fast")
    return n / (time.process_time() - cpu)


_LIMITS: object = None


def _init_worker() -> None:
    """One thread per process for every native pool (BLAS, OpenMP), as write_archive does."""
    global _LIMITS
    _LIMITS = threadpool_limits(limits=1)


def two_process_rate(
    pool: ProcessPoolExecutor, geo: Geometry | str, n: int, repeats: int = REPEATS
) -> tuple[list[float], float]:
    """Return the wall images/s of each run (two workers, ``n`` images each), median CPU ms/img."""
    list(pool.map(simulate_images, [geo] * 2, ["fast"] * 2, [2, 2], [0, 1000]))  # warm caches
    rates, cpu_ms = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        results = list(pool.map(simulate_images, [geo] * 2, ["fast"] * 2, [n, n], [0, 1000]))
        rates.append(2 * n / (time.perf_counter() - start))
        cpu_ms.append(1e3 * sum(cpu for _, cpu in results) / (2 * n))
    return rates, float(np.median(cpu_ms))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--pymust-images", type=int, default=1)
    args = parser.parse_args()
    n = args.images
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(
        f"{'fast engine, image':32s} {'1 proc img/s':>12s} {'1 core CPU':>10s}"
        f" {'1p CPU/img':>10s} {'2 procs':>8s} {'2p CPU/img':>10s} {'engine only':>11s}"
    )
    rates = {}
    pool = ProcessPoolExecutor(max_workers=2, initializer=_init_worker)
    try:
        list(pool.map(simulate_images, [SMALL] * 2, ["fast"] * 2, [1, 1]))  # start the workers
        with threadpool_limits(limits=1):
            for name, kind in (("dual panel", "dual"), ("full-screen", "bmode")):
                geo = PROFILES["prostate"][kind].geometry
                simulate_images(kind, "fast", 2)  # warm caches
                wall, cpu = simulate_images(kind, "fast", n)
                runs, two_cpu_ms = two_process_rate(pool, kind, n)
                two = float(np.median(runs))
                engine_only = engine_only_cpu_rate(kind, n)
                rates[name] = (n / cpu, two, runs)
                label = f"{name} {geo.rows}x{geo.cols} @{geo.spacing_mm} mm"
                print(
                    f"{label:32s} {n / wall:12.1f} {n / cpu:10.1f} {1e3 * cpu / n:8.1f}ms"
                    f" {two:8.1f} {two_cpu_ms:8.1f}ms {engine_only:11.1f}"
                )
            fast_wall, fast_cpu = simulate_images(SMALL, "fast", n)
            pm_wall, pm_cpu = simulate_images(SMALL, "pymust", args.pymust_images)
    finally:
        pool.shutdown()
    fast_small = n / fast_cpu
    pymust_small = args.pymust_images / pm_cpu
    print(f"{'small 100x100 @0.05 mm, fast':32s} {n / fast_wall:12.1f} {fast_small:10.1f}")
    print(
        f"{'small 100x100 @0.05 mm, pymust':32s} {args.pymust_images / pm_wall:12.3f} "
        f"{pymust_small:10.3f}   (baseline)"
    )
    print(
        f"ratio fast / pymust on the same small image (CPU time): {fast_small / pymust_small:.0f} x"
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = write_archive(tmp, patients=3, seed=0)
        seconds = time.perf_counter() - start
    print(f"write_archive, 3 patients ({summary.instances} instances): {seconds:.1f} s wall")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    for name, (one_core, two, runs) in rates.items():
        verdict = "met" if two >= GOAL else "NOT met"
        each = ", ".join(f"{r:.1f}" for r in runs)
        print(
            f"goal >= {GOAL:g} img/s on 2 cores, {name}: {verdict} (measured 2-process wall rate, "
            f"median of {len(runs)} runs: {two:.1f} [{each}]; for information only, "
            f"2 x one-core CPU rate {2 * one_core:.1f})"
        )


if __name__ == "__main__":
    main()
