"""Training step time with the in-pipeline augmentation against none (goal: ratio <= 1.25).

Both runs use the same compiled U-Net, the same images and the same tf.data pipeline
(``training.augment.make_dataset``); only the augmentation map differs. Epochs of the two
modes alternate (medians are compared) and the warm-up epoch is not timed. The input pipeline
alone is timed too.

    .venv/bin/python benchmarks/bench_augment.py --images 512 --epochs 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per mode")
    args = parser.parse_args()

    import keras

    from training.augment import AugmentSettings, make_dataset
    from training.losses import masked_rmse, pack_targets
    from training.unet import build_unet

    rng = np.random.default_rng(0)
    images = rng.random((args.images, 96, 64), dtype=np.float32)
    labels = rng.uniform(0, 70, (args.images, 96, 64)).astype(np.float32)
    targets = pack_targets(labels, rng.random((args.images, 96, 64)), 100.0)
    model = build_unet((96, 64), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=masked_rmse)
    steps = int(np.ceil(args.images / args.batch))
    pipelines = {
        mode: make_dataset(
            images, targets, batch_size=args.batch, shuffle=True, seed=0, augment=augment
        )
        for mode, augment in (("none", None), ("augment", AugmentSettings()))
    }
    for mode, ds in pipelines.items():  # the input pipeline alone, no training
        start = time.perf_counter()
        for _ in range(args.epochs):
            for _batch in ds:
                pass
        per_batch = (time.perf_counter() - start) / (args.epochs * steps)
        print(f"pipeline only, {mode:8s} {1e3 * per_batch:7.1f} ms/batch")
    for ds in pipelines.values():
        model.fit(ds, epochs=1, verbose=0)  # warm-up: tracing and pipeline start
    # Alternate the modes epoch by epoch so that load from other processes hits both alike.
    times: dict[str, list[float]] = {"none": [], "augment": []}
    for _ in range(args.epochs):
        for mode, ds in pipelines.items():
            start = time.perf_counter()
            model.fit(ds, epochs=1, verbose=0)
            times[mode].append((time.perf_counter() - start) / steps)
    for mode, values in times.items():
        print(
            f"training step, {mode:8s} {1e3 * np.median(values):7.1f} ms/step (batch {args.batch})"
        )
    ratio = float(np.median(times["augment"]) / np.median(times["none"]))
    print(f"augmentation step-time ratio: {ratio:.3f} (goal <= 1.25)")


if __name__ == "__main__":
    main()
