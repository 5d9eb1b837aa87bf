"""The reading core on the simulator's archives, against the simulator's ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pydicom
import pytest

from sswe_node.imaging import Layout, PixelBox, read_instance

simulate = pytest.importorskip("training.simulate", reason="the simulator (issue 2) is missing")


def _archive(tmp_path_factory: pytest.TempPathFactory, **options: Any) -> Path:
    out = tmp_path_factory.mktemp("archive")
    simulate.write_archive(out, patients=1, seed=11, images_per_patient=4, **options)
    return out


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {
        "full": _archive(tmp_path_factory, opacity=1.0, other_scanner=True),
        "half": _archive(tmp_path_factory, opacity=0.5, other_scanner=False),
        "jpeg": _archive(tmp_path_factory, opacity=0.8, other_scanner=False, jpeg=True),
    }


def decode_archive(root: Path) -> list[dict[str, Any]]:
    """Read every dual capture of an archive; per instance errors against the ground truth."""
    index = json.loads((root / "archive.json").read_text())
    scale = tuple(index["scale"])
    results = []
    with h5py.File(root / "ground_truth.h5", "r") as truth_file:
        for item in index["instances"]:
            if item["kind"] != "dual":
                continue
            ds = pydicom.dcmread(root / item["path"])
            (reading,) = read_instance(ds, scale=scale, quantity=index["quantity"])
            truth = truth_file[item["sop_uid"]]["swe"][()]
            both = np.isfinite(truth) & np.isfinite(reading.swe)
            results.append(
                {
                    "reading": reading,
                    "item": item,
                    "median_error": float(np.median(np.abs(reading.swe[both] - truth[both]))),
                    "void_agreement": float(
                        np.mean(np.isfinite(truth) == np.isfinite(reading.swe))
                    ),
                }
            )
    return results


@pytest.mark.parametrize(("archive", "limit"), [("full", 1.0), ("half", 2.0), ("jpeg", 2.0)])
def test_decoding_error_against_ground_truth(
    archives: dict[str, Path], archive: str, limit: float
) -> None:
    results = decode_archive(archives[archive])
    assert results
    errors = [r["median_error"] for r in results]
    print(f"{archive}: median absolute decoding error per capture (kPa): {np.round(errors, 3)}")
    assert max(errors) <= limit
    assert min(r["void_agreement"] for r in results) > 0.97
    for r in results:
        reading, boxes = r["reading"], r["item"]["boxes"]
        assert reading.layout is Layout.DUAL_SWE
        assert reading.overlay_roi == PixelBox(*boxes["swe_box"])
        assert reading.roi == PixelBox(*boxes["bmode_box"])
        assert reading.spacing_mm == pytest.approx(tuple(r["item"]["spacing_mm"]))
        assert reading.opacity == pytest.approx(r["item"]["opacity"], abs=0.02)


def test_bmode_instances_read_their_imaging_region(archives: dict[str, Path]) -> None:
    root = archives["full"]
    index = json.loads((root / "archive.json").read_text())
    kinds = set()
    for item in index["instances"]:
        if item["kind"] == "dual":
            continue
        kinds.add(item["kind"])
        (reading,) = read_instance(pydicom.dcmread(root / item["path"]))
        assert reading.layout is Layout.BMODE
        assert reading.roi == PixelBox(*item["boxes"]["imaging_region"])
        assert reading.model_input().shape == (96, 64)
    assert kinds == {"bmode", "other-scanner"}


@pytest.mark.parametrize("archive", ["full", "half"])
def test_dual_captures_without_regions_are_found_by_pixel_analysis(
    archives: dict[str, Path], archive: str
) -> None:
    root = archives[archive]
    index = json.loads((root / "archive.json").read_text())
    for item in index["instances"]:
        if item["kind"] != "dual":
            continue
        ds = pydicom.dcmread(root / item["path"])
        del ds.SequenceOfUltrasoundRegions
        (reading,) = read_instance(ds, scale=tuple(index["scale"]))
        assert reading.layout is Layout.DUAL_SWE and reading.layout_source == "pixels"
        # voids along the box edges are bridged by the box outline
        assert reading.overlay_roi == PixelBox(*item["boxes"]["swe_box"])
        assert reading.roi == PixelBox(*item["boxes"]["bmode_box"])
        assert reading.opacity == pytest.approx(item["opacity"], abs=0.02)
