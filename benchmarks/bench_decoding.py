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

Issue 9 (same run): the scale printed beside the bar read with Tesseract over >= 200
simulated captures with scales drawn per acquisition (40-300 kPa, 5-10 m/s; goal >= 99 % read
exactly, 0 read wrongly and used), the decoding error with annotations burned in (Q-Box rings,
calipers, crosses, text; <= 1 kPa median at full opacity, <= 2 kPa at 50 %), and the reading
time per dual capture (dcmread, read, model grid and labels) against today's path on the same
files (labels not read, no marks: goal <= 1.3x), wall and CPU time, for the dataset path
(decoding) and the node's path (B-mode only: scale chosen, marks filled, nothing decoded).

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
from sswe_node.imaging.boxes import PixelBox
from sswe_node.imaging.elastogram import sample_colour_bar
from sswe_node.imaging.pixels import decode_frame
from sswe_node.imaging.scale import ScaleSetting
from sswe_node.imaging.scale_labels import clear_label_cache, read_bar_labels
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


def _scale_reading(roots: list[Path]) -> None:
    """Read every dual capture's bar labels with an empty cache (one OCR each)."""
    exact = wrong = unread = 0
    seconds = []
    for root in roots:
        for item in _duals(root)[0]:
            frame = decode_frame(pydicom.dcmread(root / item["path"]), 0)
            clear_label_cache()
            t0 = time.perf_counter()
            labels = read_bar_labels(frame, PixelBox(*item["boxes"]["colour_bar"]))
            seconds.append(time.perf_counter() - t0)
            truth = (item["scale_min"], item["scale_max"], item["unit"])
            if labels is None:
                unread += 1
            elif (labels.low, labels.high, labels.unit) == truth:
                exact += 1
            else:
                wrong += 1
                print(f"    WRONG: read {labels} for {truth}")
    total = exact + wrong + unread
    print(
        f"  {total} captures (kPa and m/s bars, random scales, annotations, half JPEG): "
        f"{exact} read exactly ({100.0 * exact / total:.1f} %, goal >= 99 %), {wrong} read "
        f"wrongly (would be used; goal 0), {unread} unreadable (configured scale needed); "
        f"OCR per new bar: median {np.median(seconds) * 1e3:.0f} ms"
    )


def _annotated_accuracy(root: Path) -> list[float]:
    """Median error per capture, labels decoded at the scale read from the image."""
    errors = []
    with h5py.File(root / "ground_truth.h5", "r") as gt:
        for item in _duals(root)[0]:
            (r,) = read_instance(pydicom.dcmread(root / item["path"]))
            assert r.scale == (item["scale_min"], item["scale_max"]), (r.scale, item)
            truth = np.clip(gt[item["sop_uid"]]["swe"][()], *r.scale)  # the bar saturates
            used = np.isfinite(truth) & np.isfinite(r.swe) & (r.confidence > 0)
            errors.append(float(np.median(np.abs(r.swe[used] - truth[used]))))
    return errors


def _reading_paths(root: Path, repeat: int) -> None:
    """Per dual capture: today's path against the new one, best of ``repeat``, same files."""
    duals, scale, _ = _duals(root)
    paths = [root / i["path"] for i in duals]

    def today(path: Path) -> None:
        for r in read_instance(
            pydicom.dcmread(path), scale=scale, read_labels=False, find_marks=False
        ):
            r.model_input()
            r.label_on_grid()

    def new(path: Path) -> None:
        for r in read_instance(pydicom.dcmread(path)):  # scale from the labels, marks found
            r.model_input()
            r.label_on_grid()

    fallback = ScaleSetting(*scale, source="manifest", explicit=False)

    def node_today(path: Path) -> None:  # the node reads the B-mode only
        for r in read_instance(pydicom.dcmread(path), read_labels=False, find_marks=False):
            r.model_input()

    def node_new(path: Path) -> None:  # scale chosen (labels), marks filled, no decoding
        for r in read_instance(pydicom.dcmread(path), scale=fallback, decode=False):
            r.model_input()

    paths_of = {"today": today, "new": new, "node today": node_today, "node new": node_new}
    for path in paths:  # a series: the bar is read once, then found in the cache
        new(path)
    # wall time, and this process's CPU time (what a busy shared machine disturbs less)
    best = {(n, c): float("inf") for n in paths_of for c in ("wall", "cpu")}
    for _ in range(repeat):  # alternate, so that a busy machine slows all alike
        for name, func in paths_of.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for path in paths:
                func(path)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            best[name, "wall"] = min(best[name, "wall"], wall / len(paths))
            best[name, "cpu"] = min(best[name, "cpu"], cpu / len(paths))
    lines = (
        ("today", "dataset path, today (configured scale, no labels, no marks)"),
        ("new", "dataset path, labels read (cached per bar) + marks found"),
        ("node today", "node path (B-mode only), today"),
        ("node new", "node path, scale chosen from the labels + marks filled"),
    )
    for name, text in lines:
        base = "today" if name in ("today", "new") else "node today"
        ratio = {c: best[name, c] / best[base, c] for c in ("wall", "cpu")}
        print(
            f"  {text:60s} wall {best[name, 'wall'] * 1e3:6.2f} ms ({ratio['wall']:.2f} x), "
            f"CPU {best[name, 'cpu'] * 1e3:6.2f} ms ({ratio['cpu']:.2f} x)"
        )
    print(f"  ({len(paths)} annotated captures, best of {repeat}; goal <= 1.3 x today's)")


def _issue9(tmp: Path, patients: int, repeat: int) -> None:
    print("issue 9: colour-bar labels, annotations, reading time")
    roots = []
    for organ, jpeg in (("prostate", False), ("thyroid", True)):
        roots.append(tmp / f"scales-{organ}")
        options = dict(scales="random", annotations=True, jpeg=jpeg, other_scanner=False)
        write_archive(roots[-1], patients=patients, seed=9, organ=organ, images_per_patient=5,
                      **options)  # fmt: skip
    print("scale read from the bar's labels (Tesseract, cache emptied before each capture):")
    _scale_reading(roots)
    print("decoding error with annotations burned in (median absolute error per capture, "
          "against the ground truth clipped to the bar's range; marks excluded):")  # fmt: skip
    annotated = {}
    for name, opacity, scales in (
        ("full opacity, 0-70 kPa", 1.0, "fixed"),
        ("50% opacity, 0-70 kPa", 0.5, "fixed"),
        ("full opacity, random", 1.0, "random"),
        ("50% opacity, random", 0.5, "random"),
    ):
        annotated[name] = tmp / f"annotated-{len(annotated)}"
        write_archive(annotated[name], patients=2, seed=17, opacity=opacity, scales=scales,
                      annotations=True, other_scanner=False)  # fmt: skip
        errors = _annotated_accuracy(annotated[name])
        limit = 1.0 if opacity == 1.0 else 2.0
        print(
            f"  {name:22s} {len(errors)} captures: median {np.median(errors):.3f} kPa, worst "
            f"{max(errors):.3f} kPa (limit {limit:g} kPa on the median)"
        )
    print("reading time per dual capture (dcmread + read_instance + model grid + labels):")
    _reading_paths(annotated["full opacity, 0-70 kPa"], repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--issue9-only", action="store_true", help="only the issue 9 measures (labels, marks)"
    )
    parser.add_argument(
        "--scale-patients",
        type=int,
        default=20,
        help="patients per organ (5 dual captures each) for the scale-reading accuracy",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        _issue9(Path(tmp), args.scale_patients, args.repeat)
        if args.issue9_only:
            return
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
