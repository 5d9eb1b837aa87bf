"""Simulator speed: fast B-mode engine images/s (goal >= 20 on 2 cores) and ratio to pymust.

Run: .venv/bin/python benchmarks/bench_simulate.py [--images 40] [--pymust-images 1]
Every number is measured in this run; the pymust engine is the baseline of the ratios.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from threadpoolctl import threadpool_limits

from training.simulate import write_archive
from training.simulate.bmode import form_bmode
from training.simulate.scanners import DUAL_GEOMETRY, FULL_GEOMETRY, SWE_SCANNER, Geometry
from training.simulate.tissue import make_phantom

SMALL = Geometry(rows=100, cols=100, spacing_mm=0.05, top_mm=18.0)


def images_per_second(geo: Geometry, engine: str, n: int, with_tissue: bool = True) -> float:
    """Return images/s of tissue rasterisation + B-mode formation on ``geo``."""
    x, z = geo.axes()
    phantoms = [make_phantom(np.random.default_rng([1, i])) for i in range(n)]
    pre = None if with_tissue else [p.maps(x, z) for p in phantoms]
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for i, phantom in enumerate(phantoms):
        maps = phantom.maps(x, z) if pre is None else pre[i]
        form_bmode(maps, SWE_SCANNER.probe, SWE_SCANNER.display, rng, engine)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--pymust-images", type=int, default=1)
    args = parser.parse_args()
    print(f"{'measure':52s} {'value':>12s}")
    results = {}
    for name, geo in (("dual panel", DUAL_GEOMETRY), ("full-screen", FULL_GEOMETRY)):
        for tissue in (True, False):
            label = f"fast {name} {geo.rows}x{geo.cols}" + (" +tissue" if tissue else " engine")
            ips = images_per_second(geo, "fast", args.images, tissue)
            results[label] = ips
            print(f"{label:52s} {ips:9.1f} img/s")
    fast_small = images_per_second(SMALL, "fast", args.images)
    pymust_small = images_per_second(SMALL, "pymust", args.pymust_images)
    print(f"{'fast small 100x100 @0.05 mm +tissue':52s} {fast_small:9.1f} img/s")
    print(f"{'pymust small 100x100 @0.05 mm +tissue (baseline)':52s} {pymust_small:9.3f} img/s")
    print(f"{'ratio fast / pymust, same small image':52s} {fast_small / pymust_small:9.0f} x")
    pixels_dual = DUAL_GEOMETRY.rows * DUAL_GEOMETRY.cols / (SMALL.rows * SMALL.cols)
    est = results[f"fast dual panel {DUAL_GEOMETRY.rows}x{DUAL_GEOMETRY.cols} +tissue"]
    print(
        f"{'ratio fast dual panel / pymust (per-pixel scaled)':52s} "
        f"{est * pixels_dual / pymust_small:9.0f} x"
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = write_archive(tmp, patients=3, seed=0)
        seconds = time.perf_counter() - start
    print(f"{'write_archive 3 patients (' + str(summary.instances) + ' instances)':52s} "
          f"{seconds:9.1f} s")  # fmt: skip
    goal = results[f"fast dual panel {DUAL_GEOMETRY.rows}x{DUAL_GEOMETRY.cols} +tissue"]
    print(f"goal >= 20 img/s (fast dual panel +tissue): {'met' if goal >= 20 else 'NOT met'}")


if __name__ == "__main__":
    with threadpool_limits(limits=1, user_api="blas"):  # as write_archive does
        main()
