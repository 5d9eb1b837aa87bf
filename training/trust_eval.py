"""Evaluation of the trust features (issue 12): calibration, rim, OOD rates, scanner alignment.

Used by ``sswe-node evaluate`` (:mod:`training.evaluate`); each function returns a small
JSON-friendly dictionary and :func:`render_markdown` turns them into report lines.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

#: Rim test: the outer band and the band inside it (pixels).
RIM_OUTER, RIM_INNER = 3, 5


def calibration(
    predictions: NDArray[np.floating],
    sd: NDArray[np.floating],
    labels: NDArray[np.floating],
    weights: NDArray[np.bool_],
    out_png: Path | None = None,
    unit: str = "",
    bins: int = 10,
) -> dict[str, Any]:
    """|error| against the predicted standard deviation, in deciles of the sd.

    A Gaussian error with standard deviation ``sd`` has ``E|error| = sqrt(2/pi) sd ~= 0.8 sd``;
    a ratio well above that means the model is over-confident, below it under-confident.

    Returns
    -------
    dict
        ``deciles`` (per bin: ``sd_mean``, ``abs_error_mean``, ``ratio``, ``pixels``),
        ``ratio`` (mean |error| / mean sd over all pixels), ``spearman`` (rank correlation of
        the bins' sd and error), ``figure``.
    """
    err = np.abs(labels - predictions)[weights].astype(np.float64)
    s = np.asarray(sd)[weights].astype(np.float64)
    edges = np.quantile(s, np.linspace(0, 1, bins + 1))
    index = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, bins - 1)
    deciles = []
    for b in range(bins):
        sel = index == b
        if not sel.any():
            continue
        sd_mean, err_mean = float(s[sel].mean()), float(err[sel].mean())
        deciles.append(
            {
                "sd_mean": sd_mean,
                "abs_error_mean": err_mean,
                "ratio": err_mean / sd_mean if sd_mean > 0 else float("nan"),
                "pixels": int(sel.sum()),
            }
        )
    from scipy.stats import spearmanr

    xs = [d["sd_mean"] for d in deciles]
    ys = [d["abs_error_mean"] for d in deciles]
    rho = float(spearmanr(xs, ys).statistic) if len(deciles) > 2 else float("nan")
    report = {
        "deciles": deciles,
        "ratio": float(err.mean() / s.mean()) if s.mean() > 0 else float("nan"),
        "ideal_ratio": float(np.sqrt(2 / np.pi)),
        "spearman": rho,
        "pixels": int(err.size),
    }
    if out_png is not None:
        report["figure"] = _plot_calibration(deciles, out_png, unit).name
    return report


def _plot_calibration(deciles: list[dict[str, Any]], path: Path, unit: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.asarray([d["sd_mean"] for d in deciles])
    ys = np.asarray([d["abs_error_mean"] for d in deciles])
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.plot(xs, ys, "o-", label="model (deciles of predicted sd)")
    top = float(max(xs.max(), ys.max()) * 1.1) if len(xs) else 1.0
    ax.plot(
        [0, top], [0, np.sqrt(2 / np.pi) * top], "k--", lw=1, label="|error| = 0.8 sd (calibrated)"
    )
    ax.set_xlabel(f"predicted sd ({unit})")
    ax.set_ylabel(f"mean |error| ({unit})")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.legend(fontsize=7)
    ax.set_title("MC dropout calibration", fontsize=9)
    fig.text(0.01, 0.01, "Synthetic SWE research output - not for diagnosis", fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def rim(predictions: NDArray[np.floating]) -> dict[str, float]:
    """Mean of the outer 3 pixels of the maps against the 5 pixels inside them.

    Returns ``outer``, ``inner`` (means over every map) and ``difference`` (outer - inner);
    the rim goal is ``|difference| <= 1 kPa``.
    """
    p = np.asarray(predictions, np.float64)
    rows, cols = p.shape[1:]
    outer = np.zeros((rows, cols), bool)
    o, i = RIM_OUTER, RIM_OUTER + RIM_INNER
    outer[:o] = outer[-o:] = True
    outer[:, :o] = outer[:, -o:] = True
    band = np.zeros((rows, cols), bool)
    band[:i] = band[-i:] = True
    band[:, :i] = band[:, -i:] = True
    band &= ~outer
    return {
        "outer": float(p[:, outer].mean()),
        "inner": float(p[:, band].mean()),
        "difference": float(p[:, outer].mean() - p[:, band].mean()),
        "maps": int(len(p)),
    }


def ood_rate(
    model: Any,
    images: NDArray[np.floating],
    percentile: float = 99.0,
    spacing: NDArray[np.floating] | None = None,
) -> dict[str, Any]:
    """Fraction of frames the OOD gate flags (score above ``percentile``).

    ``flagged`` is on the image alone (as the node scores today); with ``spacing`` (``(N, 2)``
    grid-cell size in mm) and a model with a field-of-view score, ``flagged_with_field_of_view``
    adds it.
    """
    if model.trust is None or not len(images):
        return {"frames": int(len(images)), "flagged": None}
    mean, _ = model.features(images)
    scores = model.trust.score(images, mean)
    each = model.trust.percentiles(images, spacing)  # the gate's scores, the largest wins
    report = {
        "frames": int(len(images)),
        "flagged": float(np.mean(scores > percentile)),
        "median_score": float(np.median(scores)),
        "percentile": float(percentile),
        "flagged_by_score": {k: float(np.mean(v > percentile)) for k, v in each.items()},
    }
    if "field_of_view" in each:
        both = np.maximum(scores, each["field_of_view"])
        report["flagged_with_field_of_view"] = float(np.mean(both > percentile))
    return report


def _scanner_labels(meta: dict[str, NDArray[Any]], rows: NDArray[np.intp]) -> NDArray[Any]:
    return np.asarray(
        [f"{meta['manufacturer'][r]} {meta['model_name'][r]}".strip() for r in rows], dtype=object
    )


def _alignment_keys(meta: dict[str, NDArray[Any]], rows: NDArray[np.intp]) -> NDArray[Any]:
    """Return each row's alignment statistics key in the node: scanner and layout."""
    scanners = _scanner_labels(meta, rows)
    layouts = [str(meta["layout"][r]) for r in rows]
    return np.asarray([f"{s} [{lay}]" for s, lay in zip(scanners, layouts, strict=True)], object)


def _cells(
    meta: dict[str, NDArray[Any]], rows: NDArray[np.intp], grid: Any
) -> NDArray[np.float64] | None:
    """Return the rows' grid-cell sizes in mm, ``None`` when the dataset has no spacing."""
    from training.package import grid_spacing

    needed = ("spacing_row_mm", "spacing_col_mm", "roi_rows", "roi_cols")
    return grid_spacing(meta, rows, grid) if all(k in meta for k in needed) else None


def _group_alignment(
    model: Any, images: NDArray[np.floating], spacing: NDArray[np.floating] | None = None
) -> tuple[NDArray, NDArray]:
    """Return the alignment of one statistics key's frames, from their own statistics.

    The statistics are those of the latent maps the node aligns
    (:meth:`~sswe_node.model.PackagedModel.reference_latent`: frames far from the model's
    spacing run at it, their latent maps resampled onto the grid's latent shape).
    """
    from sswe_node.alignment import depth_matching, key_alignment
    from sswe_node.trust import FeatureStats

    latent = model.reference_latent(images, spacing)
    target = FeatureStats.from_frames(latent.reshape(len(latent), -1))
    cell, axes = None, depth_matching(model)
    if axes and spacing is not None:
        # the key's mean cell size over its frames of a known spacing (as the node keeps it)
        cells = np.asarray(spacing, np.float64).reshape(-1, 2)
        known = np.isfinite(cells).all(axis=1)
        cell = cells[known].mean(axis=0) if known.all() else None
    return key_alignment(model, target, cell, axes)


def aligned_knn(
    model: Any,
    images: NDArray[np.floating],
    meta: dict[str, NDArray[Any]],
    groups: dict[str, NDArray[np.intp]],
    pool: NDArray[np.intp] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """5-NN scanner accuracy of latent features without and with scanner alignment.

    Each frame's latent features are mapped feature-wise onto the training frames' mean and
    variance as the node does once it has seen enough frames: with the statistics of all
    frames in ``pool`` (default: those of ``groups``) of the same scanner *and layout*
    (:func:`sswe_node.alignment.scanner_key`), as the node's running statistics hold them.
    """
    from training.tsne import knn_scanner_accuracy

    pool = np.concatenate(list(groups.values())) if pool is None else np.asarray(pool)
    pool_keys = _alignment_keys(meta, pool)
    grid = model.manifest.grid
    cache: dict[str, tuple[NDArray, NDArray]] = {}
    raw, aligned, labels = [], [], []
    for name, rows in groups.items():
        z = model.reference_latent(images[rows], _cells(meta, rows, grid))
        raw.append(z.reshape(len(rows), -1))
        z = z.copy()
        if model.trust is not None:
            keys = _alignment_keys(meta, rows)
            for key in dict.fromkeys(keys):
                if key not in cache:
                    chosen = pool[pool_keys == key]
                    cache[key] = _group_alignment(model, images[chosen], _cells(meta, chosen, grid))
                a, b = cache[key]
                sel = keys == key
                z[sel] = z[sel] * a.reshape(z.shape[1:]) + b.reshape(z.shape[1:])
        aligned.append(z.reshape(len(rows), -1))
        labels += [name] * len(rows)
    labels_arr = np.asarray(labels)
    return {
        "without": knn_scanner_accuracy(np.concatenate(raw), labels_arr, seed=seed),
        "with": knn_scanner_accuracy(np.concatenate(aligned), labels_arr, seed=seed),
        "scanners": list(groups),
        "statistics": "per scanner and layout, over " + str(len(pool)) + " frames",
    }


def _depth_matching_name(model: Any) -> str:
    """``[inference] align_depth`` as its name (``"none"``, ``"rows"``, ``"rows+cols"``)."""
    from sswe_node.alignment import DEPTH_MATCHING, depth_matching

    axes = depth_matching(model)
    return next(name for name, matched in DEPTH_MATCHING.items() if matched == axes)


def second_scanner_error(
    model: Any,
    data: Any,
    rows: NDArray[np.intp],
    ground_truth: Path,
) -> dict[str, Any] | None:
    """MAE against the simulator's true modulus of other-scanner frames, without/with alignment.

    ``rows`` are full-screen B-mode frames of scanners the model was not trained on; the true
    map comes from the archive's ``ground_truth.h5`` (same SOP Instance UID, same region).
    """
    import h5py

    from sswe_node.alignment import MemoryScannerStats, make_aligner
    from sswe_node.imaging.grid import to_grid

    if model.trust is None or not len(rows):
        return None
    keep, truths = [], []
    with h5py.File(ground_truth, "r") as f:
        for r in rows:
            uid = str(data.meta["sop_uid"][r])
            if uid not in f or "true_modulus" not in f[uid]:
                continue
            truth = np.asarray(f[uid]["true_modulus"], np.float32)
            if truth.shape != (data.meta["roi_rows"][r], data.meta["roi_cols"][r]):
                continue
            keep.append(r)
            truths.append(to_grid(truth, tuple(model.manifest.grid)))
    if not keep:
        return None
    rows = np.asarray(keep, np.intp)
    truth = np.stack(truths)
    valid = np.isfinite(truth)
    images = data.images[rows]
    result: dict[str, Any] = {"frames": int(len(rows)), "by_scanner": {}}
    plain_all, aligned_all, change = [], [], []
    keys = _alignment_keys(data.meta, rows)
    cells = _cells(data.meta, rows, model.manifest.grid)
    for name in dict.fromkeys(keys):
        sel = keys == name
        cell = None if cells is None else cells[sel]
        plain = model.infer(images[sel], passes=1, spacing=cell).values
        n = int(sel.sum())
        # the key's statistics (and output level) over all its frames, as the node's
        # running ones hold them once it has seen them
        fixed = make_aligner(model, [str(name)] * n, MemoryScannerStats(), min_frames=1)

        switch = model.inference  # measured whatever the manifest's switch says
        model.inference = dataclasses.replace(switch, align_scanners=True)
        try:
            aligned = model.infer(images[sel], passes=1, aligner=fixed, spacing=cell).values
        finally:
            model.inference = switch
        e_plain = np.abs(plain - truth[sel])[valid[sel]]
        e_aligned = np.abs(aligned - truth[sel])[valid[sel]]
        ok = valid[sel]
        per_frame = np.where(ok, np.abs(aligned - truth[sel]) - np.abs(plain - truth[sel]), 0)
        counted = ok.sum(axis=(1, 2))
        change.append(per_frame.sum(axis=(1, 2))[counted > 0] / counted[counted > 0])
        plain_all.append(e_plain)
        aligned_all.append(e_aligned)
        result["by_scanner"][str(name)] = {
            "frames": n,
            "mae_without": float(e_plain.mean()),
            "mae_with": float(e_aligned.mean()),
        }
    result["mae_without"] = float(np.concatenate(plain_all).mean())
    result["mae_with"] = float(np.concatenate(aligned_all).mean())
    # paired per frame: is the change bigger than its frame-to-frame spread says?
    diff = np.concatenate(change)
    result["frame_mae_change"] = {
        "mean": float(diff.mean()),
        "standard_error": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0,
        "frames_worse": int((diff > 0).sum()),
    }
    return result


def trust_report(
    model: Any,
    data: Any,
    rows: NDArray[np.intp],
    predictions: NDArray[np.floating],
    sd: NDArray[np.floating] | None,
    labels: NDArray[np.floating],
    weights: NDArray[np.bool_],
    out: Path,
    *,
    ground_truth: Path | None = None,
    tsne_groups: dict[str, NDArray[np.intp]] | None = None,
    percentile: float = 99.0,
) -> dict[str, Any]:
    """Return the ``trust`` section of the evaluation report (figures written to ``out``)."""
    from training.package import grid_spacing

    m = model.manifest

    def cells(chosen: NDArray[np.intp]) -> NDArray[np.float64]:
        return grid_spacing(data.meta, chosen, m.grid)

    report: dict[str, Any] = {
        "mc_passes": int(model.inference.mc_passes),
        "align_scanners": bool(model.inference.align_scanners),
        "align_level": str(getattr(model.inference, "align_level", "none")),
        "resample_tolerance": float(getattr(model.inference, "resample_tolerance", 0.0)),
        "align_depth": _depth_matching_name(model),
        "pad": int(model.inference.pad),
        "rim": rim(predictions),
        "ood": {"test_frames": ood_rate(model, data.images[rows], percentile, cells(rows))},
    }
    if sd is not None:
        report["calibration"] = calibration(
            predictions, sd, labels, weights, out / "calibration.png", m.unit
        )
    meta = data.meta
    trained = set(model.trust.scanners) if model.trust is not None else set()
    every = np.arange(len(data))
    scanners = _scanner_labels(meta, every)
    unlabelled = ~meta["labelled"].astype(bool)
    for name in sorted(set(scanners)):
        sel = every[(scanners == name) & unlabelled]
        if len(sel):
            key = f"unlabelled {name}" + (" (a training scanner)" if name in trained else "")
            report["ood"][key] = ood_rate(model, data.images[sel], percentile, cells(sel))
    others = every[np.asarray([s not in trained for s in scanners]) & unlabelled]
    if tsne_groups and len(tsne_groups) >= 2 and model.trust is not None:
        # what the node's running statistics would hold: every frame of the evaluated
        # patients (both layouts) and the other scanners' frames
        patients = np.isin(meta["patient_key"], meta["patient_key"][rows])
        pool = np.union1d(every[patients], others).astype(np.intp)
        report["alignment"] = aligned_knn(model, data.images, meta, tsne_groups, pool)
    if ground_truth is not None and model.trust is not None:
        second = second_scanner_error(model, data, others, Path(ground_truth))
        if second is not None:
            report.setdefault("alignment", {})["second_scanner"] = second
    return report


def render_markdown(trust: dict[str, Any], unit: str) -> list[str]:
    """Return the report lines of the trust section."""
    lines = ["", "## Trust: uncertainty, rim, out-of-distribution gate, scanner alignment", ""]
    r = trust["rim"]
    lines.append(
        f"- Rim (reflection padding {trust['pad']} px): outer {RIM_OUTER} px mean "
        f"{r['outer']:.3g} {unit}, next {RIM_INNER} px {r['inner']:.3g} {unit}: difference "
        f"{r['difference']:+.2g} {unit} over {r['maps']} maps."
    )
    cal = trust.get("calibration")
    if cal:
        lines += [
            f"- MC dropout ({trust['mc_passes']} passes) calibration over {cal['pixels']} "
            f"confident pixels: mean |error| / mean sd = {cal['ratio']:.2f} (calibrated: "
            f"{cal['ideal_ratio']:.2f}); rank correlation of sd and |error| over deciles "
            f"{cal['spearman']:.2f}.",
            "",
            f"| sd decile | mean sd ({unit}) | mean abs error ({unit}) | ratio | pixels |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {k + 1} | {d['sd_mean']:.3g} | {d['abs_error_mean']:.3g} | {d['ratio']:.2f} "
            f"| {d['pixels']} |"
            for k, d in enumerate(cal["deciles"])
        ]
        if cal.get("figure"):
            lines += ["", f"![calibration]({cal['figure']})"]
    lines += [
        "",
        "| frames | count | flagged, image statistics | flagged as the node scores (with the "
        "field of view) | median score (image) |",
        "|---|---|---|---|---|",
    ]
    for name, o in trust["ood"].items():
        flagged = "-" if o.get("flagged") is None else f"{100 * o['flagged']:.1f} %"
        fov = o.get("flagged_with_field_of_view")
        with_fov = "-" if fov is None else f"{100 * fov:.1f} %"
        median = f"{o['median_score']:.1f}" if "median_score" in o else "-"
        lines.append(f"| {name} | {o['frames']} | {flagged} | {with_fov} | {median} |")
    al = trust.get("alignment")
    if al:
        lines.append("")
        lines.append(
            "- Scanner alignment is "
            + ("on" if trust.get("align_scanners") else "off")
            + " for this model in the node ([inference] align_scanners); measured either way,"
            + f" with the output level kept per {trust.get('align_level', 'none')!r}"
            + " (align_level) and frames resampled to the model's spacing beyond a relative"
            + f" cell-size difference of {trust.get('resample_tolerance', 0.0):g}"
            + " (resample_tolerance, 0: never), depth-matched reference "
            + repr(trust.get("align_depth", "none"))
            + " (align_depth):"
        )
        if "without" in al:
            lines.append(
                f"- 5-NN scanner accuracy ({', '.join(al['scanners'])}): {al['without']:.2f} "
                f"without alignment, {al['with']:.2f} with (0.5 = overlap; goal <= 0.65)."
            )
        second = al.get("second_scanner")
        if second:
            lines.append(
                f"- Second-scanner MAE against the simulator's true map ({second['frames']} "
                f"frames): {second['mae_without']:.3g} {unit} without alignment, "
                f"{second['mae_with']:.3g} {unit} with."
            )
            change = second.get("frame_mae_change")
            if change:
                lines.append(
                    f"  Per frame (paired): {change['mean']:+.3g} ± {change['standard_error']:.2g} "
                    f"{unit} (standard error); {change['frames_worse']} of {second['frames']} "
                    "frames worse with alignment."
                )
    return lines
