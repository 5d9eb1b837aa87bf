"""Scanner alignment keeps its statistics per scanner *and* image layout (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from sswe_node.alignment import MemoryScannerStats, make_aligner, scanner_key
from sswe_node.model import load_model

pytest.importorskip("keras")

from tests.toydata import blob_frames, tiny_trusted_package  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> object:
    folder = tmp_path_factory.mktemp("models") / "tiny-align"
    return load_model(tiny_trusted_package(folder, 0.5, sd_scale=2.0), device="cpu")


def test_scanner_key_names_the_layout() -> None:
    ds = Dataset()
    ds.Manufacturer, ds.ManufacturerModelName = " ACME ", "Scan 1"
    assert scanner_key(ds) == "ACME Scan 1"
    assert scanner_key(ds, "dual-swe") == "ACME Scan 1 [dual-swe]"
    assert scanner_key(Dataset(), "bmode") == "[bmode]" and scanner_key(Dataset()) == ""


def _aligned_latent(model, images, keys):
    store = MemoryScannerStats()
    _, latent = model.features(images)
    flat = latent.reshape(len(images), -1)
    scale, shift, aligned = make_aligner(model, keys, store, min_frames=16)(flat)
    assert aligned.all()
    return flat * scale + shift


def test_a_scanners_two_layouts_are_aligned_apart(model) -> None:
    """A training scanner's dual frames keep the reference statistics when it also sends
    full-screen frames of other statistics; one running mean over both would move them."""
    dual, full = blob_frames(40, seed=1), blob_frames(40, seed=2, bright=0.3)
    images = np.concatenate([dual, full])
    reference = model.trust.reference.mean
    apart = _aligned_latent(model, images, ["SIM A [dual-swe]"] * 40 + ["SIM A [bmode]"] * 40)
    mixed = _aligned_latent(model, images, ["SIM A"] * 80)
    np.testing.assert_allclose(apart[:40].mean(axis=0), reference, atol=1e-5)
    np.testing.assert_allclose(apart[40:].mean(axis=0), reference, atol=1e-5)
    off_apart = np.abs(apart[:40].mean(axis=0) - reference).mean()
    off_mixed = np.abs(mixed[:40].mean(axis=0) - reference).mean()
    assert off_mixed > 100 * max(off_apart, 1e-9)


def test_evaluation_aligns_each_layout_with_its_own_statistics(model) -> None:
    from training.trust_eval import aligned_knn

    n = 30
    images = np.concatenate(
        [blob_frames(n, 3), blob_frames(n, 4, bright=0.3), blob_frames(n, 5, 0.15)]
    )
    meta = {
        "manufacturer": np.array(["SIM"] * (3 * n)),
        "model_name": np.array(["A"] * (2 * n) + ["B"] * n),
        "layout": np.array(["dual-swe"] * n + ["bmode"] * (2 * n)),
    }
    # scanner A's group is its dual frames, while the node (and the pool) also saw its
    # full-screen ones: one statistics key for A would move its dual frames off the
    # reference (0.78 here), statistics per layout do not
    groups = {"SIM A": np.arange(n), "SIM B": np.arange(2 * n, 3 * n)}
    result = aligned_knn(model, images, meta, groups, pool=np.arange(3 * n))
    assert result["without"] > 0.9  # B is brighter
    assert result["with"] < 0.65
    assert "layout" in result["statistics"]


def test_the_node_keeps_statistics_per_scanner_and_layout(tmp_path) -> None:
    """process_batch names each frame's layout: three keys for dual, full-screen and the
    second scanner's captures of a simulated archive."""
    import json

    from pydicom import dcmread

    from sswe_node.config import load_settings
    from sswe_node.pipeline import process_batch
    from training.simulate import write_archive

    write_archive(tmp_path, patients=1, seed=3, organ="prostate", images_per_patient=2)
    index = json.loads((tmp_path / "archive.json").read_text())
    datasets = [dcmread(tmp_path / item["path"]) for item in index["instances"]]
    kinds = [item["kind"] for item in index["instances"]]
    model = load_model("prostate-sim", device="cpu")
    store = MemoryScannerStats()
    results = process_batch(datasets, model, load_settings(), scanner_stats=store)
    assert all(r.status == "done" for r in results), [(r.status, r.reason) for r in results]
    counts = {scanner: frames for (_, scanner), frames in store.all().items()}
    swe, other = "SSWE Simulator SWE-Sim Aixplorer-like", "SSWE Simulator BMode-Sim iU22-like"
    assert counts == {
        f"{swe} [dual-swe]": kinds.count("dual"),
        f"{swe} [bmode]": kinds.count("bmode"),
        f"{other} [bmode]": kinds.count("other-scanner"),
    }
