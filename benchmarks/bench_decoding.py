"""Reading-core accuracy and speed on the simulator's dual captures (issue 3).

Goals: median absolute decoding error <= 1 kPa at full opacity and <= 2 kPa at 50% opacity
against the simulator's ground truth (also shown: JPEG baseline captures at 80% opacity);
``read_instance`` on a dual capture in a few ms, so that the dataset builder reaches >= 50
dual captures/s on 2 cores.

Baselines measured in the same run, on the same files:

* ``pydicom``: ``dcmread`` + ``pixel_array`` alone with pydicom's default plugins (the floor a
  reader pays; ``read_instance`` decodes lossy JPEG with Pillow, about twice as fast, so it can
  beat this baseline on JPEG captures);
* ``brute force``: the same elastograms decoded by per-pixel nearest colour in CIELAB against
  every bar sample (no lookup table), to show what the LUT buys.

    .venv/bin/python benchmarks/bench_decoding.py --patients 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import pydicom
from pydicom.pixels import pixel_array
from skimage.color import rgb2lab

from sswe_node.imaging import read_instance
from sswe_node.imaging.elastogram import sample_colour_bar
from training.simulate import write_archive


def _duals(root: Path) -> tuple[list[dict], tuple[float, float], str]:
    index = json.loads((root / "archive.json").read_text())
    duals = [i for i in index["instances"] if i["kind"] == "dual"]
    return duals, tuple(index["scale"]), index["quantity"]


def _accuracy(root: Path) -> tuple[list[float], list[float]]:
    duals, scale, quantity = _duals(root)
    errors, voids = [], []
    with h5py.File(root / "ground_truth.h5", "r") as gt:
        for item in duals:
            (r,) = read_instance(
                pydicom.dcmread(root / item["path"]), scale=scale, quantity=quantity
            )
            truth = gt[item["sop_uid"]]["swe"][()]
            both = np.isfinite(truth) & np.isfinite(r.swe)
            errors.append(float(np.median(np.abs(r.swe[both] - truth[both]))))
            voids.append(float(np.mean(np.isfinite(truth) == np.isfinite(r.swe))))
    return errors, voids


def _time_per_instance(func, items: list, repeat: int) -> float:
    func(items[0])  # warm caches (lookup table, imports)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for item in items:
            func(item)
        best = min(best, (time.perf_counter() - t0) / len(items))
    return best


def _brute_force(ds: pydicom.Dataset, scale: tuple[float, float]) -> None:
    """Decode the elastogram by per-pixel nearest colour against every bar sample."""
    (r,) = read_instance(ds, scale=None)
    frame = pixel_array(ds).astype(np.float32)
    bar = sample_colour_bar(frame[r.colour_bar.slices], scale)
    lab_bar = rgb2lab(bar.colours[None] / 255.0)[0]
    box = frame[r.overlay_roi.slices].reshape(-1, 3)
    lab = rgb2lab(box[None] / 255.0)[0]
    nearest = np.empty(len(lab), dtype=np.intp)
    for start in range(0, len(lab), 4096):
        chunk = lab[start : start + 4096]
        nearest[start : start + 4096] = np.argmin(
            ((chunk[:, None, :] - lab_bar[None]) ** 2).sum(axis=2), axis=1
        )
    bar.values[nearest]  # noqa: B018 - the values are the point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        roots = {}
        cases = (
            ("full opacity", 1.0, False),
            ("50% opacity", 0.5, False),
            ("JPEG, 80%", 0.8, True),
        )
        for name, opacity, jpeg in cases:
            roots[name] = Path(tmp) / f"archive{len(roots)}"
            write_archive(roots[name], patients=args.patients, seed=7, opacity=opacity,
                          jpeg=jpeg, other_scanner=False)  # fmt: skip
        print("accuracy against ground truth (median absolute error per capture):")
        for name, root in roots.items():
            errors, voids = _accuracy(root)
            _, _, quantity = _duals(root)
            unit = "kPa" if quantity == "youngs-modulus" else "m/s"
            print(
                f"  {name:13s} {len(errors)} captures: worst {max(errors):.3f} {unit}, "
                f"mean {np.mean(errors):.3f} {unit}; void agreement >= {min(voids):.3f}"
            )

        print(f"speed (one process, best of {args.repeat}, per dual capture):")
        for name, root in roots.items():
            duals, scale, _ = _duals(root)
            paths = [root / i["path"] for i in duals]
            datasets = [pydicom.dcmread(p) for p in paths]
            t_pixels = _time_per_instance(pixel_array, datasets, args.repeat)
            t_read = _time_per_instance(partial(_read, scale=scale), datasets, args.repeat)
            t_file = _time_per_instance(partial(_from_file, scale=scale), paths, args.repeat)
            t_brute = _time_per_instance(partial(_brute_force, scale=scale), datasets[:2], 1)
            print(f"  {name}:")
            print(f"    pydicom pixel_array (baseline)     {t_pixels * 1e3:7.2f} ms")
            print(
                f"    read_instance                      {t_read * 1e3:7.2f} ms "
                f"= {t_read / t_pixels:.1f} x baseline, {1.0 / t_read:.0f} captures/s"
            )
            print(
                f"    dcmread + read_instance + grids    {t_file * 1e3:7.2f} ms "
                f"= {1.0 / t_file:.0f} captures/s on one core"
            )
            print(
                f"    brute-force colour inversion       {t_brute * 1e3:7.2f} ms "
                f"= {t_brute / t_read:.0f} x read_instance (what the LUT saves)"
            )


def _read(ds: pydicom.Dataset, scale: tuple[float, float]) -> None:
    read_instance(ds, scale=scale)


def _from_file(path: Path, scale: tuple[float, float]) -> None:
    for r in read_instance(pydicom.dcmread(path), scale=scale):
        r.model_input()
        r.label_on_grid()


if __name__ == "__main__":
    main()
