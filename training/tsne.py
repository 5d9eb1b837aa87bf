"""t-SNE of latent (bottleneck) features from two scanners, and a number for their overlap."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)


def scanner_groups(
    meta: dict[str, NDArray[Any]], rows: NDArray[np.intp], max_per_scanner: int, seed: int
) -> dict[str, NDArray[np.intp]]:
    """Return the two largest scanner groups among ``rows``, balanced by subsampling.

    Parameters
    ----------
    meta : dict
        Dataset metadata columns (``manufacturer``, ``model_name``).
    rows : numpy.ndarray
        Candidate row indices.
    max_per_scanner : int
        Upper bound of images per scanner.
    seed : int
        Seed of the subsampling.

    Returns
    -------
    dict
        ``{scanner label: rows}`` with two entries of equal size, or fewer than two entries
        when the rows do not come from two scanners.
    """
    labels = np.asarray(
        [f"{meta['manufacturer'][r]} {meta['model_name'][r]}".strip() for r in rows]
    )
    names, counts = np.unique(labels, return_counts=True)
    if len(names) < 2:
        return {str(n): rows[labels == n] for n in names}
    top = names[np.argsort(-counts, kind="stable")[:2]]
    size = min(max_per_scanner, *(int(np.sum(labels == n)) for n in top))
    rng = np.random.default_rng(seed)
    return {str(n): np.sort(rng.choice(rows[labels == n], size, replace=False)) for n in top}


def knn_scanner_accuracy(
    features: NDArray[np.floating], scanner: NDArray[Any], k: int = 5, seed: int = 0
) -> float:
    """Cross-validated accuracy of a k-NN classifier telling the scanners apart.

    With balanced groups, 0.5 means the latent features of the two scanners overlap
    completely and 1.0 means they are fully separable.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, counts = np.unique(scanner, return_counts=True)
    folds = int(min(5, counts.min()))
    if folds < 2:
        return float("nan")
    k = int(max(1, min(k, counts.min() - 1)))
    classifier = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=k))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(classifier, features, scanner, cv=cv)))


def embed(features: NDArray[np.floating], seed: int = 0) -> NDArray[np.float64]:
    """Return a 2-D t-SNE embedding of flattened features (PCA to 50 dimensions first)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(features, np.float64).reshape(len(features), -1)
    n_comp = int(min(50, x.shape[0] - 1, x.shape[1]))
    if n_comp >= 2:
        x = PCA(n_components=n_comp, random_state=seed).fit_transform(x)
    perplexity = float(max(2.0, min(30.0, (len(x) - 1) / 3.0)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def plot_embedding(
    embedding: NDArray[np.floating], scanner: NDArray[Any], path: Path, title: str
) -> Path:
    """Save a scatter plot of a t-SNE embedding coloured by scanner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name in np.unique(scanner):
        sel = scanner == name
        ax.scatter(embedding[sel, 0], embedding[sel, 1], s=12, alpha=0.7, label=str(name))
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, "Synthetic SWE research output - not for diagnosis", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def latent_tsne(
    model: Any,
    images: NDArray[np.floating],
    meta: dict[str, NDArray[Any]],
    rows: NDArray[np.intp],
    out_png: Path,
    *,
    max_per_scanner: int = 200,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Embed latent features of two scanners' images; plot them and measure their overlap.

    Parameters
    ----------
    model : sswe_node.model.PackagedModel
        Provides ``latent(images)``.
    images : numpy.ndarray
        All dataset images ``(N, rows, cols)``.
    meta : dict
        Dataset metadata columns.
    rows : numpy.ndarray
        Candidate rows (e.g. the test patients plus other-scanner images).
    out_png : pathlib.Path
        Figure to write.
    max_per_scanner : int
        Images per scanner at most.
    seed : int
        Seed of subsampling, t-SNE and the classifier folds.

    Returns
    -------
    dict or None
        ``{"scanners", "images_per_scanner", "knn_accuracy", "figure"}``, or ``None`` when the
        rows do not hold two scanners.
    """
    groups = scanner_groups(meta, rows, max_per_scanner, seed)
    if len(groups) < 2 or min(len(g) for g in groups.values()) < 3:
        logger.info("t-SNE skipped: the evaluation rows do not hold two scanners")
        return None
    chosen = np.concatenate(list(groups.values()))
    scanner = np.concatenate([[name] * len(g) for name, g in groups.items()])
    features = model.latent(images[chosen]).reshape(len(chosen), -1)
    accuracy = knn_scanner_accuracy(features, scanner, seed=seed)
    embedding = embed(features, seed=seed)
    title = f"t-SNE of latent features; 5-NN scanner accuracy {accuracy:.2f} (0.5 = overlap)"
    plot_embedding(embedding, scanner, out_png, title)
    return {
        "scanners": list(groups),
        "images_per_scanner": int(len(next(iter(groups.values())))),
        "knn_accuracy": accuracy,
        "figure": out_png.name,
    }
