"""Strain elastography captures are recognised from the screen and never decoded as SWE (kPa)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from sswe_node.errors import UnsupportedLayoutError
from sswe_node.imaging import read_instance
from sswe_node.imaging.strain import clear_strain_cache, strain_bar_reason

pytest.importorskip("pytesseract")
STRAIN = r"strain elastography \(relative\), not SWE"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    from training.simulate import write_archive

    out = tmp_path_factory.mktemp("qse")
    write_archive(out, patients=2, seed=21, images_per_patient=2, qse=True)
    return out, json.loads((out / "archive.json").read_text())["instances"]


def _of(records: list[dict], kind: str) -> list[dict]:
    return [r for r in records if r["kind"] == kind]


def test_archive_has_strain_captures_with_their_settings(archive) -> None:
    root, records = archive
    strain = _of(records, "strain")
    assert len(strain) == 4 and len(_of(records, "other-scanner")) == 4
    for rec in strain:
        assert rec["quantity"] == "relative-strain" and "scale_max" not in rec
        assert {"colour_map", "gain", "stress_decay_mm", "smoothing_mm"} <= set(rec["strain"])
        ds = pydicom.dcmread(root / rec["path"])
        assert ds.Manufacturer and "iU22" in ds.ManufacturerModelName
        assert ds.SeriesDescription.startswith("Strain elastography")


def test_reader_refuses_strain_captures_and_still_decodes_swe(archive) -> None:
    root, records = archive
    clear_strain_cache()
    for rec in _of(records, "strain"):
        ds = pydicom.dcmread(root / rec["path"])
        with pytest.raises(UnsupportedLayoutError, match=STRAIN) as info:
            read_instance(ds, scale=(0.0, 70.0))
        assert info.value.reason == "unsupported-layout"
        assert "labelled" in str(info.value) and "without a kPa or m/s scale" in str(info.value)
    for rec in _of(records, "dual"):
        (reading,) = read_instance(pydicom.dcmread(root / rec["path"]), scale=(0.0, 70.0))
        assert reading.swe is not None and np.isfinite(reading.swe).any()


def test_strain_is_recognised_from_pixels_not_from_the_regions(archive) -> None:
    """The regions of a strain capture look like an SWE capture's: the bar's labels decide."""
    root, records = archive
    rec = _of(records, "strain")[0]
    frame = pydicom.dcmread(root / rec["path"]).pixel_array
    bar = rec["boxes"]["colour_bar"]
    from sswe_node.imaging.boxes import PixelBox

    box = PixelBox(*bar)
    assert strain_bar_reason(frame, box) is not None
    # the same bar with its words blanked out is not called strain (no evidence either way)
    blank = frame.copy()
    blank[: box.top - 1] = 0
    blank[box.bottom + 1 :] = 0
    assert strain_bar_reason(blank, box) is None
    # an SWE capture's "70 kPa" / "0" bar is not strain
    dual = _of(records, "dual")[0]
    dual_frame = pydicom.dcmread(root / dual["path"]).pixel_array
    assert strain_bar_reason(dual_frame, PixelBox(*dual["boxes"]["colour_bar"])) is None


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sswe_node.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_dataset_build_and_convert_refuse_strain(archive, tmp_path: Path, tiny_model_dir) -> None:
    root, records = archive
    out = tmp_path / "ds.h5"
    done = _cli("dataset", "build", str(out), "--folder", str(root), "--scale", "0", "70",
                "--organ", "prostate", "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    from training.datafile import read_dataset

    data = read_dataset(out)
    strain_uids = {r["sop_uid"] for r in _of(records, "strain")}
    assert strain_uids.isdisjoint(set(data.meta["sop_uid"].tolist()))
    assert int(data.meta["labelled"].sum()) == len(_of(records, "dual"))
    assert "strain elastography" in done.stderr  # the reason is logged per skipped frame
    assert data.manifest["rejections"]["unsupported-layout"] == len(strain_uids)

    strain_dir = tmp_path / "strain-only"
    strain_dir.mkdir()
    for n, rec in enumerate(_of(records, "strain")):
        (strain_dir / f"{n}.dcm").write_bytes((root / rec["path"]).read_bytes())
    converted = tmp_path / "converted"
    done = _cli("convert", str(strain_dir), "--out", str(converted), "--model",
                str(tiny_model_dir), "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((converted / "convert-summary.json").read_text())
    assert summary["converted"] == 0 and summary["outputs"] == 0
    assert len(summary["skipped"]) == len(strain_uids)
    for item in summary["skipped"]:
        assert item["reason"] == "unsupported-layout"
        assert "strain elastography (relative), not SWE" in item["message"]


def test_node_pipeline_skips_strain_with_the_reason(archive, tiny_model_dir) -> None:
    from sswe_node.config import load_settings
    from sswe_node.model import load_model
    from sswe_node.pipeline import process_batch

    root, records = archive
    model = load_model(tiny_model_dir)
    strain = [pydicom.dcmread(root / r["path"]) for r in _of(records, "strain")[:2]]
    dual = pydicom.dcmread(root / _of(records, "dual")[0]["path"])
    results = process_batch([*strain, dual], model, load_settings())
    assert [r.status for r in results] == ["skipped", "skipped", "done"]
    for r in results[:2]:
        assert r.reason == "unsupported-layout" and "strain elastography" in r.message
        assert r.outputs == []


@pytest.mark.parametrize("soft_on_top", [True, False])
def test_every_simulated_bar_label_style_is_recognised(soft_on_top: bool) -> None:
    from training.simulate.render import Box
    from training.simulate.strain import BAR_LABELS, StrainSettings, render_strain_dual

    rng = np.random.default_rng(3)
    bmode = rng.integers(20, 200, (300, 450), dtype=np.uint8)
    display = rng.uniform(0, 1, (180, 260)).astype(np.float32)
    for colour_map in ("bgr", "gr"):
        for labels in BAR_LABELS:
            settings = StrainSettings(colour_map=colour_map, soft_on_top=soft_on_top, labels=labels)
            frame, layout = render_strain_dual(
                bmode, display, Box(40, 90, 220, 350), settings, spacing_mm=0.12, top_mm=1.0
            )
            reason = strain_bar_reason(frame, layout.boxes["colour_bar"])
            assert reason is not None and "not SWE" in reason, (labels, colour_map)
