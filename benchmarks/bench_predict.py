"""``PackagedModel.predict`` (compiled batched function) against ``keras.Model.predict``.

Prints per-call latency at batch 1 and throughput at batch 64 for both, and their ratios.
Uses the packaged model named by ``--model`` (default the shipped ``prostate-sim``).

    .venv/bin/python benchmarks/bench_predict.py --model prostate-sim
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (tracing)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="prostate-sim")
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()

    from sswe_node.model import load_model

    model = load_model(args.model)
    network = model.keras_model
    rng = np.random.default_rng(0)
    one = rng.random((1, *model.manifest.grid), dtype=np.float32)
    many = rng.random((64, *model.manifest.grid), dtype=np.float32)

    keras_1 = _time(lambda: network.predict(one[..., None], verbose=0), args.repeats)
    ours_1 = _time(lambda: model.predict(one), args.repeats)
    keras_64 = _time(lambda: network.predict(many[..., None], verbose=0), args.repeats // 4)
    ours_64 = _time(lambda: model.predict(many), args.repeats // 4)
    print(
        f"batch 1 : keras predict {1e3 * keras_1:6.1f} ms, compiled {1e3 * ours_1:6.1f} ms, "
        f"speed-up {keras_1 / ours_1:.1f}x"
    )
    print(
        f"batch 64: keras predict {64 / keras_64:6.0f} img/s, compiled {64 / ours_64:6.0f} "
        f"img/s, ratio {keras_64 / ours_64:.2f}x"
    )


if __name__ == "__main__":
    main()
