"""Small synthetic dataset files with a learnable B-mode -> stiffness relation (for tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from training.datafile import DatasetWriter, Sample


def toy_sample(rng: np.random.Generator, grid: tuple[int, int], scale_max: float):
    """Return (image 0-1, stiffness, confidence): speckle brightness rises with stiffness."""
    rows, cols = grid
    field = gaussian_filter(rng.normal(size=grid), sigma=6.0)
    field = (field - field.min()) / (np.ptp(field) + 1e-9)
    stiffness = (0.1 + 0.6 * field) * scale_max
    speckle = gaussian_filter(rng.rayleigh(size=grid), sigma=0.7)
    image = np.clip((0.15 + 0.7 * field) * speckle / 1.25, 0.0, 1.0)
    confidence = np.zeros(grid)
    top, left = rng.integers(0, rows // 4), rng.integers(0, cols // 4)
    confidence[top : top + rows // 2 + 10, left : left + cols // 2 + 8] = 1.0
    confidence = gaussian_filter(confidence, 2.0) * rng.uniform(0.85, 1.0)
    label = np.where(confidence > 0.05, stiffness, np.nan)
    return image.astype(np.float32), label.astype(np.float32), confidence.astype(np.float32)


def write_toy_dataset(
    path: str | Path,
    *,
    patients: int = 8,
    per_patient: int = 6,
    seed: int = 0,
    grid: tuple[int, int] = (96, 64),
    organ: str = "prostate",
    quantity: str = "youngs-modulus",
    other_scanner: int = 0,
) -> Path:
    """Write a toy dataset file; ``other_scanner`` extra unlabelled images from a 2nd scanner."""
    rng = np.random.default_rng(seed)
    unit, scale_max = ("kPa", 100.0) if quantity == "youngs-modulus" else ("m/s", 10.0)
    samples = []
    for p in range(patients):
        for i in range(per_patient):
            image, label, confidence = toy_sample(rng, grid, scale_max)
            meta = {
                "patient_key": f"toy-patient-{p:03d}",
                "sop_uid": f"1.2.826.0.1.3680043.10.1{p:03d}.{i}",
                "manufacturer": "ToyScanner",
                "model_name": "A",
                "organ": organ,
                "quantity": quantity,
                "unit": unit,
                "layout": "dual-swe",
                "labelled": True,
                "spacing_row_mm": 0.16,
                "spacing_col_mm": 0.16,
                "roi_rows": 600,
                "roi_cols": 400,
                "confident_fraction": float(np.mean(confidence > 0.75)),
            }
            samples.append(Sample(image, label, confidence, meta))
    for i in range(other_scanner):
        image, _, _ = toy_sample(rng, grid, scale_max)
        image = np.clip(gaussian_filter(image, 1.2) * 1.3, 0, 1).astype(np.float32)
        meta = {
            "patient_key": f"toy-other-{i:03d}",
            "sop_uid": f"1.2.826.0.1.3680043.10.2.{i}",
            "manufacturer": "OtherScanner",
            "model_name": "B",
            "organ": organ,
            "layout": "bmode",
            "labelled": False,
        }
        samples.append(Sample(image, None, None, meta))
    with DatasetWriter(path, grid=grid) as writer:
        writer.append(samples)
        writer.set_manifest({"source": "tests/toydata.py (synthetic speckle, not images)"})
    return Path(path)


def blob_frames(n: int, seed: int = 0, bright: float = 0.0) -> np.ndarray:
    """Return ``n`` speckle-like 96 x 64 model-grid frames (smooth blobs plus noise, 0-1)."""
    rng = np.random.default_rng(seed)
    base = rng.random((n, 12, 8)).repeat(8, axis=1).repeat(8, axis=2)
    return np.clip(0.4 * base + 0.2 * rng.random((n, 96, 64)) + bright, 0, 1).astype(np.float32)


def tiny_trusted_package(folder: Path, init_range: float, sd_scale: float | None = None) -> Path:
    """Write an untrained 8-filter U-Net package on a 96 x 64 grid, with trust statistics.

    The statistics come from 60 :func:`blob_frames` of one scanner (``"SIM A"``); the package
    is named after ``folder``. Returns ``folder``.
    """
    from sswe_node.model import load_model
    from training.package import compute_statistics, write_package, write_statistics
    from training.unet import build_unet

    network = build_unet((96, 64), filters=8, seed=5, init_range=init_range)
    write_package(
        network, folder, name=folder.name, version="0.0.1", organ="prostate",
        quantity="youngs-modulus", trained_on="untrained test network", status="provisional",
    )  # fmt: skip
    packaged = load_model(folder, device="cpu")
    stats = compute_statistics(packaged, blob_frames(60), ["SIM A"] * 60, {"split": "train"})
    extra = {} if sd_scale is None else {"sd_scale": sd_scale}
    write_statistics(folder, stats, **extra)
    return folder
