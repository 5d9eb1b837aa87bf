"""The paper's evaluation protocol on a simulated archive, as one command.

``python -m training.protocol`` runs, on an archive
written by ``sswe-node simulate --qse`` and the dataset file built from it:

1. training (``--train``): the model with augmentation and the same recipe without it (the
   ablation), on the SWE scanner's dual captures only (``sswe-node train``'s split by patient);
   or two packaged models given with ``--model`` / ``--ablation-model``;
2. the SWE-scanner test patients: per-patient RMSE / MAE / ME against the scanner's SWE over
   confident pixels (the paper's numbers), and the trivial baseline;
3. generalisation to the full-screen "B-mode-only protocol" images and to the second scanner
   of the same test patients: per-patient error against the simulator's true stiffness over the
   gland (the SWE scanner's dual images are scored the same way for comparison), and the
   latent-space overlap of each with the dual B-mode (t-SNE, 5-NN accuracy; 0.5 = overlap);
4. the augmentation ablation: paired t-tests over the same patients on the SWE test set and on
   the second scanner (and the full-screen images);
5. the QSE comparison (paper Fig. 6): per strain capture of the second scanner, the Spearman
   rank correlation over the gland between sSWE (predicted from the same B-mode image) and
   inverse strain, against the ceiling, the correlation of the true stiffness with inverse
   strain.

Everything is written to ``OUT`` (``report.md``, ``report.json``, PNG figures). Simulated data
only: the truth comes from the simulator's ``ground_truth.h5``; the displayed strain is the
simulator's (the capture itself is refused by the reading core, by design).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from sswe_node.errors import SsweError

logger = logging.getLogger(__name__)

__all__ = ["run_protocol", "main", "configure_parser", "fill_outside_fan", "GLAND_CLASSES"]

DISCLAIMER = "Synthetic SWE research output on simulated data: not for diagnosis."
#: Tissue classes of the simulator counted as the gland (peripheral, transition zone, lesion).
GLAND_CLASSES = (1, 2, 3)
#: Kinds of unlabelled images scored against the truth.
TRUTH_KINDS = ("dual", "bmode", "other-scanner")
KIND_NAMES = {
    "dual": "SWE scanner, dual panel",
    "bmode": "SWE scanner, full-screen B-mode-only protocol",
    "other-scanner": "second scanner (no SWE)",
}


def _kinds(archive: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    index = json.loads((archive / "archive.json").read_text())
    return {r["sop_uid"]: r for r in index["instances"]}, index


def _truth_on_grid(
    h5: h5py.File, sop_uid: str, grid: tuple[int, int], scale: float
) -> tuple[NDArray[np.float32], NDArray[np.bool_]] | None:
    """Return the true stiffness (clipped to the model's scale) and the gland mask on the grid."""
    from sswe_node.imaging.grid import to_grid

    if sop_uid not in h5:
        return None
    group = h5[sop_uid]
    true = to_grid(group["true_modulus"][()], grid)
    if "label" in group:
        label = to_grid(group["label"][()], grid)
    else:  # dual: the label map is not stored; fall back to the tissue under the SWE box
        label = np.where(np.isfinite(true), 1.0, np.nan).astype(np.float32)
    gland = np.isfinite(true) & np.isfinite(label)
    gland &= np.isin(np.rint(np.nan_to_num(label, nan=-1)), GLAND_CLASSES)
    return np.clip(np.nan_to_num(true), 0.0, scale).astype(np.float32), gland


def _score(
    models: dict[str, Any],
    data: Any,
    rows: NDArray[np.intp],
    labels: NDArray[np.float32],
    weights: NDArray[np.bool_],
) -> dict[str, Any]:
    from training.evaluate import per_patient_metrics, summarise

    patients = data.meta["patient_key"][rows]
    out: dict[str, Any] = {"images": int(len(rows)), "patients": int(len(np.unique(patients)))}
    for name, model in models.items():
        pred = model.predict(data.images[rows])
        pp = per_patient_metrics(pred, labels, weights, patients)
        out[name] = {"per_patient": pp, "summary": summarise(pp)}
    return out


def _ablation(scored: dict[str, Any]) -> dict[str, Any]:
    from training.evaluate import paired_t_tests

    if "model" not in scored or "ablation" not in scored:
        return {}
    return paired_t_tests(scored["model"]["per_patient"], scored["ablation"]["per_patient"])


def fill_outside_fan(images: NDArray[np.floating]) -> NDArray[np.float32]:
    """Return copies of model inputs with exact-zero pixels (a sector's black corners) filled.

    Each image's zeros get the median of its other pixels: a diagnostic of how much the
    sector's black area alone moves the latent features and the predictions.
    """
    out = np.array(images, dtype=np.float32, copy=True)
    for image in out:
        zero = image == 0.0
        if zero.any() and (~zero).any():
            image[zero] = np.median(image[~zero])
    return out


def _overlap(
    model: Any,
    data: Any,
    groups: dict[str, NDArray[np.intp]],
    out_png: Path,
    max_per_group: int,
    seed: int,
) -> dict[str, Any] | None:
    """t-SNE and 5-NN accuracy of two groups of images (by kind), balanced by subsampling."""
    from training.tsne import embed, knn_scanner_accuracy, plot_embedding

    if len(groups) != 2 or min(len(g) for g in groups.values()) < 3:
        return None
    rng = np.random.default_rng(seed)
    size = min(max_per_group, *(len(g) for g in groups.values()))
    chosen = {k: np.sort(rng.choice(g, size, replace=False)) for k, g in groups.items()}
    rows = np.concatenate(list(chosen.values()))
    names = np.concatenate([[k] * size for k in chosen])
    features = model.latent(data.images[rows]).reshape(len(rows), -1)
    accuracy = knn_scanner_accuracy(features, names, seed=seed)
    title = f"t-SNE of latent features; 5-NN accuracy {accuracy:.2f} (0.5 = overlap)"
    plot_embedding(embed(features, seed=seed), names, out_png, title)
    return {"groups": list(chosen), "images_per_group": int(size), "knn_accuracy": accuracy,
            "figure": out_png.name}  # fmt: skip


def _spearman(a: NDArray[np.floating], b: NDArray[np.floating]) -> float:
    from scipy.stats import spearmanr

    if a.size < 10 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def _qse(
    models: dict[str, Any],
    data: Any,
    records: dict[str, dict[str, Any]],
    h5: h5py.File,
    test_patient_ids: set[str],
    rows_by_sop: dict[str, int],
    out: Path,
    figures: int,
) -> dict[str, Any]:
    """Rank correlation of sSWE and of the true stiffness with inverse strain, per image."""
    from scipy.stats import wilcoxon

    from sswe_node.imaging.grid import from_grid

    by_plane = {
        (r["plane_id"], r["kind"]): uid
        for uid, r in records.items()
        if r["kind"] in ("strain", "other-scanner")
    }
    per_image: list[dict[str, Any]] = []
    drawn = 0
    for uid, rec in records.items():
        if rec["kind"] != "strain" or rec["patient_id"] not in test_patient_ids:
            continue
        source = by_plane.get((rec["plane_id"], "other-scanner"))
        if source is None or source not in rows_by_sop or uid not in h5:
            continue
        row = rows_by_sop[source]
        roi_shape = (int(data.meta["roi_rows"][row]), int(data.meta["roi_cols"][row]))
        g = h5[uid]
        strain = g["relative_strain"][()]
        true = g["true_modulus"][()]
        label = g["label"][()]
        top, left = rec["boxes"]["strain_box"][:2]
        ptop, pleft = rec["boxes"]["strain_panel"][:2]
        rs = slice(top - ptop, top - ptop + strain.shape[0])
        cs = slice(left - pleft, left - pleft + strain.shape[1])
        gland = np.isfinite(strain) & np.isfinite(label) & (strain > 0)
        gland &= np.isin(np.rint(np.nan_to_num(label, nan=-1)), GLAND_CLASSES)
        if gland.sum() < 50:
            continue
        inverse = 1.0 / strain[gland]
        entry: dict[str, Any] = {
            "sop_uid": uid,
            "plane_id": rec["plane_id"],
            "pixels": int(gland.sum()),
            "ceiling": _spearman(true[gland], inverse),
        }
        maps = {}
        for name, model in models.items():
            pred = from_grid(model.predict(data.images[row : row + 1])[0], roi_shape)[rs, cs]
            maps[name] = pred
            entry[name] = _spearman(pred[gland], inverse)
        per_image.append(entry)
        if drawn < figures and "model" in maps:
            drawn += 1
            _figure_qse(data.images[row], strain, maps["model"], true, gland, rec, out, drawn)
    result: dict[str, Any] = {"images": len(per_image), "per_image": per_image}
    for key in ("ceiling", *models):
        values = np.asarray([e[key] for e in per_image], np.float64)
        values = values[np.isfinite(values)]
        result[key] = {
            "mean": float(values.mean()) if len(values) else float("nan"),
            "sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
            "median": float(np.median(values)) if len(values) else float("nan"),
        }
    pairs = [(e["model"], e["ceiling"]) for e in per_image if "model" in e]
    pairs = [p for p in pairs if np.isfinite(p[0]) and np.isfinite(p[1])]
    if len(pairs) >= 5:
        x, y = np.asarray(pairs).T
        result["wilcoxon_model_vs_ceiling_p"] = float(wilcoxon(x, y).pvalue)
    result["figures"] = [f"fig6-{n + 1}.png" for n in range(drawn)]
    return result


def _figure_qse(
    image: NDArray[np.floating],
    strain: NDArray[np.floating],
    sswe: NDArray[np.floating],
    true: NDArray[np.floating],
    gland: NDArray[np.bool_],
    rec: dict[str, Any],
    out: Path,
    n: int,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
    panels = [
        (image, "B-mode (model grid)", "gray", None),
        (np.log2(np.where(gland | np.isfinite(strain), strain, np.nan)), "log2 relative strain",
         "RdYlBu", None),
        (sswe, "sSWE (kPa)", "jet", (0, 70)),
        (true, "true stiffness (kPa)", "jet", (0, 70)),
    ]  # fmt: skip
    for ax, (values, title, cmap, lim) in zip(axes, panels, strict=True):
        shown = ax.imshow(values, cmap=cmap, vmin=None if lim is None else lim[0],
                          vmax=None if lim is None else lim[1])  # fmt: skip
        if values is not image:
            ax.contour(gland, levels=[0.5], colors="w", linewidths=0.6)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.suptitle(f"{rec['plane_id']} (second scanner, QSE): {DISCLAIMER}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"fig6-{n}.png", dpi=100)
    plt.close(fig)


def _train_pair(
    config_path: str, dataset: Path, model_out: Path, ablation_out: Path, epochs: int | None,
    work: Path,
) -> None:  # fmt: skip
    from training.train import load_config, train

    config = load_config(config_path)
    command = "python -m training.protocol " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with_aug = replace(config, training=replace(config.training, augment=True))
    without = replace(config, training=replace(config.training, augment=False))
    # the protocol's report is the evaluation: train's own report is not written
    train(with_aug, dataset, model_out, epochs=epochs, work_dir=work / "augment",
          command=command, progress=False, evaluate=False)  # fmt: skip
    train(without, dataset, ablation_out, epochs=epochs, work_dir=work / "no-augment",
          command=command, progress=False, evaluate=False)  # fmt: skip


def run_protocol(
    archive: str | Path,
    dataset: str | Path,
    out_dir: str | Path,
    *,
    model: str | Path,
    ablation_model: str | Path | None = None,
    models_dir: str | Path = "models",
    figures: int = 4,
    max_per_group: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the evaluation protocol (module docstring) and write the report.

    Parameters
    ----------
    archive : path-like
        The simulated archive folder (``archive.json``, ``ground_truth.h5``).
    dataset : path-like
        The dataset file built from it.
    out_dir : path-like
        Report folder (created).
    model : str or path-like
        The model (trained with augmentation).
    ablation_model : str or path-like, optional
        The same recipe without augmentation.
    models_dir : str or path-like
        Where named models live.
    figures : int
        QSE figures to draw.
    max_per_group : int
        Images per group in each t-SNE.
    seed : int
        Seed of subsampling, t-SNE and the classifier folds.

    Returns
    -------
    dict
        The report (also ``report.json``).
    """
    from sswe_node.model import load_model
    from training.datafile import read_dataset
    from training.evaluate import evaluation_rows, per_patient_metrics, summarise

    archive, dataset, out = Path(archive), Path(dataset), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = {"model": load_model(model, models_dir)}
    if ablation_model is not None:
        models["ablation"] = load_model(ablation_model, models_dir)
    m = models["model"].manifest
    data = read_dataset(dataset)
    grid = tuple(int(g) for g in data.images.shape[1:])
    records, index = _kinds(archive)
    threshold = float(m.training.get("recipe", {}).get("confidence_threshold", 0.75))
    test_rows, split_note = evaluation_rows(m, data, "test", dataset)
    test_keys = set(np.unique(data.meta["patient_key"][test_rows]).tolist())
    sops = data.meta["sop_uid"]
    rows_by_sop = {str(s): i for i, s in enumerate(sops)}
    test_patient_ids = {
        records[str(sops[r])]["patient_id"] for r in test_rows if str(sops[r]) in records
    }
    report: dict[str, Any] = {
        "disclaimer": DISCLAIMER,
        "archive": str(archive),
        "dataset": str(dataset),
        "archive_variability": index.get("variability", "none (archive predates profiles)"),
        "models": {
            k: {
                "name": v.manifest.name,
                "path": str(v.path),
                "augment": v.manifest.training.get("recipe", {}).get("augment"),
                "epochs_run": v.manifest.training.get("epochs_run"),
            }
            for k, v in models.items()
        },  # fmt: skip
        "unit": m.unit,
        **split_note,
    }

    # 1. the SWE scanner's test patients against its SWE (the paper's numbers)
    labelled = test_rows[data.meta["labelled"][test_rows].astype(bool)]
    labels = data.labels[labelled]
    weights = np.isfinite(labels) & (np.nan_to_num(data.confidence[labelled]) > threshold)
    swe = _score(models, data, labelled, np.nan_to_num(labels), weights)
    train_mean = float(m.training.get("train_mean", np.nan))
    if np.isfinite(train_mean):
        base = per_patient_metrics(
            np.full_like(labels, train_mean), np.nan_to_num(labels), weights,
            data.meta["patient_key"][labelled],
        )  # fmt: skip
        swe["baseline"] = {
            "per_patient": base,
            "summary": summarise(base),
            "description": f"the training mean {train_mean:.3g} {m.unit}",
        }
    swe["ablation_t_test"] = _ablation(swe)
    report["swe_test"] = swe

    # 2. every kind of the test patients' images against the simulator's true stiffness
    scale = float(m.scale)
    kind_rows: dict[str, list[int]] = {k: [] for k in TRUTH_KINDS}
    for r in np.flatnonzero(np.isin(data.meta["patient_key"], list(test_keys))):
        rec = records.get(str(sops[r]))
        if rec is not None and rec["kind"] in kind_rows:
            kind_rows[rec["kind"]].append(int(r))
    truth: dict[str, Any] = {}
    with h5py.File(archive / "ground_truth.h5", "r") as h5:
        for kind, rows_list in kind_rows.items():
            rows = np.asarray(rows_list, dtype=np.intp)
            got = [_truth_on_grid(h5, str(sops[r]), grid, scale) for r in rows]
            keep = np.asarray([g is not None for g in got], bool)
            if not keep.any():
                continue
            rows = rows[keep]
            true = np.stack([g[0] for g in got if g is not None])
            gland = np.stack([g[1] for g in got if g is not None])
            scored = _score(models, data, rows, true, gland)
            scored["ablation_t_test"] = _ablation(scored)
            scored["description"] = KIND_NAMES[kind]
            truth[kind] = scored
        report["truth"] = truth
        report["truth_note"] = (
            f"error against the simulator's true Young's modulus clipped to the model's scale "
            f"({scale:g} {m.unit}), over the gland (peripheral zone, transition zone, lesions) "
            "inside the image (sector) and, for dual panels, inside the SWE box"
        )

        # 3. latent overlap of the dual B-mode with the other kinds
        dual_rows = np.asarray(kind_rows["dual"], np.intp)
        report["tsne"] = {}
        for kind in ("other-scanner", "bmode"):
            groups = {"dual": dual_rows, kind: np.asarray(kind_rows[kind], np.intp)}
            report["tsne"][kind] = _overlap(
                models["model"], data, groups, out / f"tsne-dual-vs-{kind}.png", max_per_group,
                seed,
            )  # fmt: skip

        # 3b. diagnostic: the same with the sectors' black corners filled
        fan_rows = np.asarray(kind_rows["bmode"] + kind_rows["other-scanner"], np.intp)
        images = np.array(data.images, dtype=np.float32, copy=True)
        if len(fan_rows):
            images[fan_rows] = fill_outside_fan(data.images[fan_rows])
        filled = SimpleNamespace(images=images, meta=data.meta)
        diagnostic: dict[str, Any] = {"tsne": {}, "truth": {}}
        for kind in ("other-scanner", "bmode"):
            groups = {"dual": dual_rows, kind: np.asarray(kind_rows[kind], np.intp)}
            diagnostic["tsne"][kind] = _overlap(
                models["model"], filled, groups, out / f"tsne-dual-vs-{kind}-filled.png",
                max_per_group, seed,
            )  # fmt: skip
            rows = np.asarray(kind_rows[kind], np.intp)
            got = [_truth_on_grid(h5, str(sops[r]), grid, scale) for r in rows]
            if len(rows) and all(g is not None for g in got):
                true = np.stack([g[0] for g in got if g is not None])
                gland = np.stack([g[1] for g in got if g is not None])
                scored = _score(models, filled, rows, true, gland)
                scored["ablation_t_test"] = _ablation(scored)
                scored["description"] = KIND_NAMES[kind] + ", black corners filled"
                diagnostic["truth"][kind] = scored
        report["fan_filled"] = diagnostic

        # 4. QSE
        report["qse"] = _qse(models, data, records, h5, test_patient_ids, rows_by_sop, out, figures)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    (out / "report.md").write_text(render_markdown(report))
    logger.info("protocol report written to %s", out)
    return report


def _ms(summary: dict[str, Any], key: str) -> str:
    v = summary[key]
    return f"{v['mean']:.3g} ± {v['sd']:.2g}"


def _p(test: dict[str, Any], key: str) -> str:
    value = test.get(key, {}).get("p", float("nan"))
    return "n/a" if not np.isfinite(value) else f"{value:.2g}"


def _metric_table(scored: dict[str, Any], unit: str, names: tuple[str, ...]) -> list[str]:
    lines = [f"| model | RMSE ({unit}) | MAE ({unit}) | ME ({unit}) |", "|---|---|---|---|"]
    for name in names:
        if name in scored:
            s = scored[name]["summary"]
            lines.append(f"| {name} | {_ms(s, 'rmse')} | {_ms(s, 'mae')} | {_ms(s, 'me')} |")
    test = scored.get("ablation_t_test") or {}
    if test:
        lines.append(
            f"| paired t-test p (model vs ablation) | {_p(test, 'rmse')} | {_p(test, 'mae')} | "
            f"{_p(test, 'me')} |"
        )
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """Render the protocol report as Markdown."""
    unit = report["unit"]
    models = report["models"]
    lines = [
        "# Evaluation protocol of the paper (simulated archive)",
        "",
        f"> {report['disclaimer']}",
        "",
        f"Archive `{report['archive']}` (variability: {report['archive_variability']}), "
        f"dataset `{report['dataset']}`; test split re-drawn from the manifest (matches the "
        f"training split: {report.get('matches_training_split')}).",
        "",
        "| role | model | augmentation | epochs |",
        "|---|---|---|---|",
    ]
    for role, info in models.items():
        lines.append(f"| {role} | `{info['path']}` | {info['augment']} | {info['epochs_run']} |")
    swe = report["swe_test"]
    lines += [
        "",
        "## 1. SWE-scanner test patients (against the scanner's SWE, confident pixels)",
        "",
        f"{swe['patients']} patients, {swe['images']} dual captures; per-patient mean ± sd.",
        "",
        *_metric_table(swe, unit, ("model", "ablation", "baseline")),
        "",
        "## 2. Generalisation (against the simulator's true stiffness)",
        "",
        report["truth_note"] + ".",
    ]
    for scored in report["truth"].values():
        lines += [
            "",
            f"### {scored['description']} ({scored['patients']} patients, "
            f"{scored['images']} images)",
            "",
            *_metric_table(scored, unit, ("model", "ablation")),
        ]
    lines += ["", "## 3. Latent overlap (t-SNE, 5-NN accuracy; 0.5 = full overlap)", ""]
    for kind, result in report["tsne"].items():
        if result is None:
            lines.append(f"- dual vs {kind}: not enough images")
        else:
            lines.append(
                f"- dual B-mode vs {kind}: 5-NN accuracy {result['knn_accuracy']:.2f} "
                f"({result['images_per_group']} images each), `{result['figure']}`"
            )
    diagnostic = report.get("fan_filled")
    if diagnostic:
        lines += [
            "",
            "### 3b. Diagnostic: the sectors' black corners filled with each image's median grey",
            "",
            "The same comparisons after filling the exact-zero pixels of the full-screen and "
            "second-scanner model inputs (the area outside the fan) with the image's median: "
            "how much of the separation and of the error the black corners alone cause.",
            "",
        ]
        for kind, result in diagnostic["tsne"].items():
            if result is not None:
                lines.append(
                    f"- dual B-mode vs {kind} (filled): 5-NN accuracy "
                    f"{result['knn_accuracy']:.2f}, `{result['figure']}`"
                )
        for scored in diagnostic["truth"].values():
            lines += ["", f"{scored['description']}:", "",
                      *_metric_table(scored, unit, ("model", "ablation"))]  # fmt: skip
    q = report["qse"]
    lines += [
        "",
        "## 4. Augmentation ablation",
        "",
        "Paired t-tests over the same patients, model (with augmentation) minus ablation "
        "(without); a negative t on MAE/RMSE means augmentation lowered the error.",
        "",
        "| test set | MAE model | MAE ablation | t (MAE) | p (MAE) | p (RMSE) | better |",
        "|---|---|---|---|---|---|---|",
    ]
    sets = [("SWE scanner vs SWE", swe)] + [
        (f"{v['description']} vs truth", v) for v in report["truth"].values()
    ]
    for name, scored in sets:
        if "ablation" in scored:
            test = scored["ablation_t_test"]
            t = test.get("mae", {}).get("t", float("nan"))
            a = scored["model"]["summary"]["mae"]["mean"]
            b = scored["ablation"]["summary"]["mae"]["mean"]
            better = "augmentation" if a < b else "no augmentation" if b < a else "tie"
            lines.append(
                f"| {name} | {_ms(scored['model']['summary'], 'mae')} | "
                f"{_ms(scored['ablation']['summary'], 'mae')} | {t:.2f} | {_p(test, 'mae')} | "
                f"{_p(test, 'rmse')} | {better} |"
            )
    lines += [
        "",
        "## 5. QSE comparison (paper Fig. 6)",
        "",
        f"{q['images']} strain captures of the test patients' second-scanner planes; per image, "
        "Spearman rank correlation over the gland with inverse relative strain.",
        "",
        "| | mean ± sd | median |",
        "|---|---|---|",
    ]
    for key, name in (("ceiling", "ceiling: true stiffness"), ("model", "sSWE (model)"),
                      ("ablation", "sSWE (ablation)")):  # fmt: skip
        if key in q and isinstance(q[key], dict):
            lines.append(
                f"| {name} | {q[key]['mean']:.3f} ± {q[key]['sd']:.2f} | {q[key]['median']:.3f} |"
            )
    if "wilcoxon_model_vs_ceiling_p" in q:
        lines.append(f"\nWilcoxon signed-rank, sSWE vs ceiling: p = "
                     f"{q['wilcoxon_model_vs_ceiling_p']:.2g}.")  # fmt: skip
    lines += ["", *[f"![]({f})" for f in q["figures"]]]
    lines += [
        "",
        "Notes: the strain values are the simulator's displayed relative strain (the strain "
        "capture is refused by the reading core as strain elastography, by design); the sSWE "
        "map comes from the second scanner's B-mode image of the same plane (the same pixels "
        "as the capture's B-mode panel).",
        "",
    ]
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the protocol's options."""
    parser.add_argument("--archive", required=True, help="simulated archive folder (--qse)")
    parser.add_argument("--dataset", required=True, help="dataset file built from the archive")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--model", required=True, help="model (with augmentation): name/folder")
    parser.add_argument(
        "--ablation-model", default=None, help="the same recipe without augmentation"
    )
    parser.add_argument(
        "--train",
        action="store_true",
        help="first train --model and --ablation-model (folders) with --config on the dataset",
    )
    parser.add_argument("--config", default="training/configs/demo.toml", help="training recipe")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--work-dir", default=None, help="training work folder")
    parser.add_argument("--models-dir", default="models", help="folder of named models")
    parser.add_argument("--figures", type=int, default=4, help="QSE figures to draw")
    parser.add_argument("--seed", type=int, default=0, help="seed of t-SNE and subsampling")


def run(args: argparse.Namespace) -> int:
    """Run the protocol from parsed arguments."""
    if not Path(args.dataset).is_file():
        raise SsweError(f"dataset file {args.dataset} not found")
    if args.train:
        if args.ablation_model is None:
            raise SsweError("--train needs --ablation-model (the folder of the no-augment model)")
        work = Path(args.work_dir) if args.work_dir else Path(args.out) / "work"
        _train_pair(args.config, Path(args.dataset), Path(args.model),
                    Path(args.ablation_model), args.epochs, work)  # fmt: skip
    report = run_protocol(
        args.archive, args.dataset, args.out, model=args.model,
        ablation_model=args.ablation_model, models_dir=args.models_dir, figures=args.figures,
        seed=args.seed,
    )  # fmt: skip
    s = report["swe_test"]["model"]["summary"]
    q = report["qse"]
    print(
        f"protocol: SWE test MAE {_ms(s, 'mae')} {report['unit']}; QSE rho sSWE "
        f"{q['model']['mean']:.3f} vs ceiling {q['ceiling']['mean']:.3f}; report in "
        f"{args.out}/report.md"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m training.protocol``."""
    parser = argparse.ArgumentParser(prog="python -m training.protocol", description=__doc__)
    configure_parser(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return run(args)
    except SsweError as exc:
        print(f"protocol: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
