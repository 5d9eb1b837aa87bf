"""Regridding speed: ``sswe_node.imaging.grid`` against scikit-image ``resize`` (issue 3/5).

``from_grid`` (model grid -> SWE-box pixels) runs once per output frame when the node builds
its derived objects; ``to_grid`` once or three times per frame when reading (B-mode, and the
elastogram and its confidence for dual captures). The baseline, measured in the same run on
the same arrays, is the first implementation: scikit-image ``resize(order=1, mode="edge",
anti_aliasing=False)``, with the same two-pass treatment of voids (NaN). The largest
difference between the two is printed too.

    .venv/bin/python benchmarks/bench_grid.py
    .venv/bin/python benchmarks/bench_grid.py --repeats 200 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from skimage.transform import resize

from sswe_node.imaging.grid import from_grid, to_grid

#: (name, source shape, target shape): ROI sizes of the simulated and sample captures.
CASES = [
    ("from_grid 96x64 -> 600x900", (96, 64), (600, 900)),
    ("from_grid 96x64 -> 400x300", (96, 64), (400, 300)),
    ("from_grid 96x64 -> 240x200", (96, 64), (240, 200)),
    ("to_grid 600x400 -> 96x64", (600, 400), (96, 64)),
    ("to_grid 480x640 -> 96x64", (480, 640), (96, 64)),
]


def _baseline(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    def bilinear(values: np.ndarray) -> np.ndarray:
        return resize(values, shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True)

    if not np.isnan(array).any():
        return bilinear(array).astype(np.float32)
    valid = np.isfinite(array)
    num = bilinear(np.where(valid, array, 0.0))
    den = bilinear(valid.astype(np.float32))
    out = np.full(shape, np.nan, dtype=np.float32)
    ok = den > 0.5
    out[ok] = num[ok] / den[ok]
    return out


def _median_ms(func: Callable[[], object], repeats: int) -> float:
    func()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="BLAS/OpenMP threads (0: as is)")
    args = parser.parse_args()
    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.threads)

    rng = np.random.default_rng(0)
    print(f"{'case':34s} {'voids':>5s} {'skimage':>9s} {'grid':>9s} {'ratio':>6s} {'max diff':>9s}")
    ratios = []
    for name, source, target in CASES:
        ours = from_grid if name.startswith("from_grid") else to_grid
        for voids in (False, True):
            values = rng.uniform(0.0, 70.0, source).astype(np.float32)
            if voids:  # a void band and scattered voids, as in real SWE boxes
                values[: source[0] // 4] = np.nan
                values[rng.random(source) < 0.05] = np.nan
            base_ms = _median_ms(lambda: _baseline(values, target), args.repeats)  # noqa: B023
            our_ms = _median_ms(lambda: ours(values, target), args.repeats)  # noqa: B023
            diff = np.nanmax(np.abs(ours(values, target) - _baseline(values, target)))
            ratios.append(base_ms / our_ms)
            print(
                f"{name:34s} {'yes' if voids else 'no':>5s} {base_ms:7.2f}ms {our_ms:7.2f}ms "
                f"{base_ms / our_ms:6.1f} {diff:9.1e}"
            )
    print(
        "speed-up (skimage time / grid time), geometric mean: "
        f"{statistics.geometric_mean(ratios):.1f}"
    )


if __name__ == "__main__":
    main()
