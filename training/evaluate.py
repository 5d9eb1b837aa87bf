"""`sswe-node evaluate`: per-patient RMSE/MAE/ME of a packaged model on held-out patients.

Metrics follow the paper (section II.D): per test patient, the errors over all confident
labelled pixels of that patient's full images (error = label minus prediction, so a negative
ME means the model over-estimates), then mean and standard deviation over patients. The
trivial baseline predicts the training mean everywhere. A second model can be compared with
a paired t-test over the same patients. Figures (like the paper's Fig. 3) and a t-SNE of the
latent features of two scanners go to PNG; the report to Markdown and JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sswe_node.errors import SsweError

logger = logging.getLogger(__name__)

HELP = "evaluate a packaged model per patient on a dataset file (report, figures, t-SNE)"
DISCLAIMER = "Synthetic SWE research output: not for diagnosis or any clinical decision."
METRICS = ("rmse", "mae", "me")


def per_patient_metrics(
    predictions: NDArray[np.floating],
    labels: NDArray[np.floating],
    weights: NDArray[np.bool_],
    patients: NDArray[Any],
) -> dict[str, dict[str, float]]:
    """Return ``{patient: {rmse, mae, me, pixels}}`` over each patient's confident pixels."""
    result: dict[str, dict[str, float]] = {}
    for patient in np.unique(patients):
        sel = patients == patient
        mask = weights[sel]
        if not mask.any():
            continue
        err = (labels[sel] - predictions[sel])[mask].astype(np.float64)
        result[str(patient)] = {
            "rmse": float(np.sqrt(np.mean(err**2))),
            "mae": float(np.mean(np.abs(err))),
            "me": float(np.mean(err)),
            "pixels": int(err.size),
        }
    return result


def summarise(per_patient: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Return mean and sample standard deviation over patients of each metric."""
    summary = {}
    for key in METRICS:
        values = np.asarray([m[key] for m in per_patient.values()], np.float64)
        sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        summary[key] = {"mean": float(np.mean(values)) if len(values) else float("nan"), "sd": sd}
    return summary


def paired_t_tests(
    a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Paired t-test of each metric over the patients both evaluations share."""
    from scipy.stats import ttest_rel

    shared = sorted(set(a) & set(b))
    tests = {}
    for key in METRICS:
        x = np.asarray([a[p][key] for p in shared])
        y = np.asarray([b[p][key] for p in shared])
        if len(shared) < 2 or np.allclose(x, y):
            tests[key] = {"t": float("nan"), "p": float("nan"), "patients": len(shared)}
            continue
        result = ttest_rel(x, y)
        tests[key] = {
            "t": float(result.statistic),
            "p": float(result.pvalue),
            "patients": len(shared),
        }
    return tests


def evaluation_rows(
    manifest: Any, data: Any, split: str, dataset: Path
) -> tuple[NDArray[np.intp], dict[str, Any]]:
    """Return the rows to evaluate and a note on how they were chosen.

    ``split="test"`` re-draws the training split (seed and fractions from the manifest)
    and keeps the test patients; the patient digest in the manifest tells whether this
    is the same dataset the model was trained on. ``split="all"`` uses every row (for a
    dataset of patients the model never saw).
    """
    from training.datafile import patients_digest, split_rows

    keys = data.meta["patient_key"]
    if split == "all":
        return np.arange(len(data)), {"split": "all"}
    record = manifest.training.get("split", {})
    if "seed" not in record or "fractions" not in record:
        raise SsweError(f"model {manifest.name}: manifest has no split record; use --split all")
    rows = split_rows(data.meta, manifest.quantity, record["fractions"], int(record["seed"]))[2]
    same = patients_digest(keys[rows]) == record.get("test_patients_sha256")
    if not same:
        logger.warning(
            "%s: test patients differ from the model's training split (other dataset?)", dataset
        )
    return rows, {
        "split": "test",
        "seed": int(record["seed"]),
        "fractions": list(record["fractions"]),
        "matches_training_split": bool(same),
    }


def _evaluate_one(
    model: Any, data: Any, rows: NDArray[np.intp], threshold: float, passes: int = 0
) -> Any:
    labelled = data.meta["labelled"][rows].astype(bool)
    labelled &= data.meta["quantity"][rows] == model.manifest.quantity
    rows = rows[labelled]
    labels = data.labels[rows]
    weights = np.isfinite(labels) & (np.nan_to_num(data.confidence[rows]) > threshold)
    if hasattr(model, "infer"):  # MC dropout mean (as the node outputs) and per-pixel sd
        result = model.infer(data.images[rows], passes=passes or None)
        predictions, sd = result.values, result.sd
    else:
        predictions, sd = model.predict(data.images[rows]), None
    return rows, predictions, np.nan_to_num(labels), weights, sd


def figure_fig3(
    image: NDArray[np.floating],
    label: NDArray[np.floating],
    weight: NDArray[np.bool_],
    prediction: NDArray[np.floating],
    manifest: Any,
    path: Path,
) -> Path:
    """Save a B-mode / SWE / sSWE / difference panel like the paper's Fig. 3."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sswe_node.imaging.colormap import jet_lut

    cmap = matplotlib.colors.ListedColormap(jet_lut() / 255.0)
    vmin, vmax = manifest.colour_bar
    swe = np.where(weight, label, np.nan)
    diff = np.where(weight, 100.0 * (prediction - label) / np.maximum(prediction, 1e-6), np.nan)
    fig, axes = plt.subplots(1, 4, figsize=(10, 3.6))
    panels = [
        (image, "B-mode", "gray", (0, 1), ""),
        (swe, "SWE (label)", cmap, (vmin, vmax), manifest.unit),
        (prediction, "sSWE (synthetic)", cmap, (vmin, vmax), manifest.unit),
        (diff, "difference", "coolwarm", (-100, 100), "% of sSWE"),
    ]
    for ax, (values, title, colours, (lo, hi), unit) in zip(axes, panels, strict=True):
        shown = ax.imshow(values, cmap=colours, vmin=lo, vmax=hi)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if unit:
            fig.colorbar(shown, ax=ax, fraction=0.046, label=unit)
    fig.suptitle(f"{manifest.name}: {DISCLAIMER}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evaluate_model(
    model_dir: str | Path,
    dataset: str | Path,
    out_dir: str | Path,
    *,
    split: str = "test",
    compare: str | Path | None = None,
    models_dir: str | Path = "models",
    figures: int = 4,
    tsne: bool = True,
    max_per_scanner: int = 200,
    passes: int = 0,
    ground_truth: str | Path | None = None,
    ood_percentile: float = 99.0,
    pad: int | None = None,
) -> dict[str, Any]:
    """Evaluate a packaged model and write ``report.json``, ``report.md`` and figures.

    Parameters
    ----------
    model_dir : str or path-like
        Model name or folder.
    dataset : path-like
        Dataset file.
    out_dir : path-like
        Report folder (created).
    split : str
        ``"test"`` (the model's held-out patients) or ``"all"``.
    compare : str or path-like, optional
        A second model evaluated on the same patients, with paired t-tests.
    models_dir : str or path-like
        Where named models live.
    figures : int
        Number of Fig.-3-like panels (one image of each of the first test patients).
    tsne : bool
        Compute the latent t-SNE of two scanners when the rows hold two scanners.
    max_per_scanner : int
        Images per scanner in the t-SNE.
    passes : int
        MC dropout passes (0: the manifest's).
    ground_truth : path-like, optional
        The simulated archive's ``ground_truth.h5``: second-scanner error against the true
        map, without and with scanner alignment.
    ood_percentile : float
        Score above which a frame counts as out of distribution.
    pad : int, optional
        Reflection padding instead of the manifest's (0: none, to measure the rim without it).

    Returns
    -------
    dict
        The report (also written as JSON).
    """
    from sswe_node.model import load_model
    from training.datafile import read_dataset
    from training.trust_eval import trust_report
    from training.tsne import latent_tsne, scanner_groups

    dataset = Path(dataset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(model_dir, models_dir)
    if pad is not None:
        model.configure(pad=int(pad))
    m = model.manifest
    data = read_dataset(dataset)
    if tuple(data.images.shape[1:]) != tuple(m.grid):
        raise SsweError(f"{dataset}: grid {data.images.shape[1:]} != model grid {m.grid}")
    threshold = float(m.training.get("recipe", {}).get("confidence_threshold", 0.75))
    rows, split_note = evaluation_rows(m, data, split, dataset)
    labelled_rows, predictions, labels, weights, sd = _evaluate_one(
        model, data, rows, threshold, passes
    )
    if not weights.any():
        raise SsweError(f"{dataset}: no confident labelled pixels among the evaluation rows")
    patients = data.meta["patient_key"][labelled_rows]
    per_patient = per_patient_metrics(predictions, labels, weights, patients)
    train_mean = float(m.training.get("train_mean", np.nan))
    report: dict[str, Any] = {
        "disclaimer": DISCLAIMER,
        "model": {
            "name": m.name,
            "version": m.version,
            "status": m.status,
            "path": str(model.path),
        },
        "dataset": str(dataset),
        "unit": m.unit,
        "quantity": m.quantity,
        "confidence_threshold": threshold,
        **split_note,
        "patients": len(per_patient),
        "images": int(len(labelled_rows)),
    }
    report["model"].update(per_patient=per_patient, summary=summarise(per_patient))
    if np.isfinite(train_mean):
        baseline_pred = np.full_like(predictions, train_mean)
        base = per_patient_metrics(baseline_pred, labels, weights, patients)
        report["baseline"] = {
            "description": f"predicts the training mean {train_mean:.3g} {m.unit} everywhere",
            "per_patient": base,
            "summary": summarise(base),
            "t_test_vs_model": paired_t_tests(per_patient, base),
        }
        model_mae = report["model"]["summary"]["mae"]["mean"]
        base_mae = report["baseline"]["summary"]["mae"]["mean"]
        report["mae_margin_vs_baseline"] = {
            "absolute": base_mae - model_mae,
            "relative": (base_mae - model_mae) / base_mae if base_mae else float("nan"),
        }
    if compare is not None:
        other = load_model(compare, models_dir)
        if other.manifest.quantity != m.quantity:
            raise SsweError("cannot compare models of different quantities")
        _, other_pred, _, _, _ = _evaluate_one(other, data, rows, threshold, passes)
        other_pp = per_patient_metrics(other_pred, labels, weights, patients)
        report["comparison"] = {
            "model": {"name": other.manifest.name, "path": str(other.path)},
            "per_patient": other_pp,
            "summary": summarise(other_pp),
            "t_test": paired_t_tests(per_patient, other_pp),
        }

    report["figures"] = []
    first_rows: dict[str, int] = {}
    for i, patient in enumerate(patients):
        if len(first_rows) < figures and str(patient) not in first_rows and weights[i].any():
            first_rows[str(patient)] = i
    for n, i in enumerate(first_rows.values()):
        path = out / f"fig3-{n + 1}.png"
        row = labelled_rows[i]
        figure_fig3(data.images[row], labels[i], weights[i], predictions[i], m, path)
        report["figures"].append(path.name)

    if tsne:
        scanners_seen = {
            f"{a} {b}".strip()
            for a, b, lab in zip(
                data.meta["manufacturer"],
                data.meta["model_name"],
                data.meta["labelled"],
                strict=True,
            )
            if lab
        }
        other_rows = [
            r
            for r in range(len(data))
            if f"{data.meta['manufacturer'][r]} {data.meta['model_name'][r]}".strip()
            not in scanners_seen
        ]
        candidates = np.union1d(rows, np.asarray(other_rows, dtype=np.intp)).astype(np.intp)
        report["tsne"] = latent_tsne(
            model, data.images, data.meta, candidates, out / "tsne.png",
            max_per_scanner=max_per_scanner,
        )  # fmt: skip
        tsne_groups = scanner_groups(data.meta, candidates, max_per_scanner, 0)
    else:
        tsne_groups = None
    if hasattr(model, "infer"):
        report["trust"] = trust_report(
            model, data, labelled_rows, predictions, sd, labels, weights, out,
            ground_truth=ground_truth, tsne_groups=tsne_groups, percentile=ood_percentile,
        )  # fmt: skip

    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    (out / "report.md").write_text(render_markdown(report))
    logger.info("evaluation of %s on %d patients written to %s", m.name, len(per_patient), out)
    return report


def _fmt(summary: dict[str, dict[str, float]], key: str) -> str:
    return f"{summary[key]['mean']:.3g} ± {summary[key]['sd']:.2g}"


def render_markdown(report: dict[str, Any]) -> str:
    """Render the report as Markdown."""
    unit = report["unit"]
    lines = [
        f"# Evaluation of {report['model']['name']} {report['model']['version']}",
        "",
        f"**{report['disclaimer']}**",
        "",
        f"- Dataset: `{report['dataset']}`; split: {report['split']}"
        + (
            f" (seed {report['seed']}, same as training: {report['matches_training_split']})"
            if report["split"] == "test"
            else ""
        ),
        f"- {report['patients']} patients, {report['images']} labelled images; pixels with "
        f"confidence > {report['confidence_threshold']}; error = label - prediction.",
        "",
        f"| per-patient ({unit}) | RMSE | MAE | ME |",
        "|---|---|---|---|",
    ]
    rows = [("model", report["model"]["summary"])]
    if "baseline" in report:
        rows.append(("baseline (training mean)", report["baseline"]["summary"]))
    if "comparison" in report:
        rows.append(
            (f"compared: {report['comparison']['model']['name']}", report["comparison"]["summary"])
        )
    for name, s in rows:
        lines.append(f"| {name} | {_fmt(s, 'rmse')} | {_fmt(s, 'mae')} | {_fmt(s, 'me')} |")
    if "mae_margin_vs_baseline" in report:
        margin = report["mae_margin_vs_baseline"]
        p = report["baseline"]["t_test_vs_model"]["mae"]["p"]
        lines += [
            "",
            f"MAE margin over the baseline: {margin['absolute']:.3g} {unit} "
            f"({100 * margin['relative']:.1f}% lower; paired t-test p = {p:.3g}).",
        ]
    if "comparison" in report:
        t = report["comparison"]["t_test"]
        lines += ["", "Paired t-test model vs compared model: " + ", ".join(
            f"{k.upper()} p = {t[k]['p']:.3g}" for k in METRICS
        )]  # fmt: skip
    if report.get("figures"):
        lines += ["", "## Examples (B-mode, SWE, sSWE, difference)", ""]
        lines += [f"![{name}]({name})" for name in report["figures"]]
    tsne = report.get("tsne")
    if tsne:
        lines += [
            "",
            "## Latent features of two scanners",
            "",
            f"Scanners: {', '.join(tsne['scanners'])} ({tsne['images_per_scanner']} images each). "
            f"5-NN scanner classifier accuracy: {tsne['knn_accuracy']:.2f} "
            "(0.5 = the scanners overlap completely, 1.0 = fully separable).",
            "",
            f"![t-SNE]({tsne['figure']})",
        ]
    if report.get("trust"):
        from training.trust_eval import render_markdown as trust_markdown

        lines += trust_markdown(report["trust"], unit)
    return "\n".join(lines) + "\n"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add this sub-command's options."""
    parser.add_argument("--model", required=True, help="model name or package folder")
    parser.add_argument("--dataset", required=True, help="dataset file")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument(
        "--split",
        choices=("test", "all"),
        default="test",
        help="the model's held-out test patients (default) or every row",
    )
    parser.add_argument("--compare", default=None, help="second model for paired t-tests")
    parser.add_argument("--models-dir", default="models", help="folder of named models")
    parser.add_argument("--figures", type=int, default=4, help="Fig.-3-like panels to draw")
    parser.add_argument("--no-tsne", action="store_true", help="skip the latent t-SNE")
    parser.add_argument(
        "--passes", type=int, default=0, help="MC dropout passes (default: the model's)"
    )
    parser.add_argument(
        "--pad", type=int, default=None, help="reflection padding instead of the model's"
    )
    parser.add_argument(
        "--ground-truth",
        default=None,
        help="simulated archive's ground_truth.h5: second-scanner error with/without alignment",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``sswe-node evaluate``."""
    if not Path(args.dataset).is_file():
        raise SsweError(f"dataset file {args.dataset} not found")
    report = evaluate_model(
        args.model,
        args.dataset,
        args.out,
        split=args.split,
        compare=args.compare,
        models_dir=args.models_dir,
        figures=args.figures,
        tsne=not args.no_tsne,
        passes=args.passes,
        ground_truth=args.ground_truth,
        pad=args.pad,
    )
    s = report["model"]["summary"]
    unit = report["unit"]
    print(
        f"{report['model']['name']} on {report['patients']} patients: RMSE {_fmt(s, 'rmse')}, "
        f"MAE {_fmt(s, 'mae')}, ME {_fmt(s, 'me')} {unit}; report in {args.out}/report.md"
    )
    return 0
