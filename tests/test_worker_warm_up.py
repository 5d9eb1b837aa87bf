"""The worker's warm-up traces every model call a batch makes (the level pass included)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sswe_node.config import load_settings
from sswe_node.model import load_model
from sswe_node.node.worker import warm_up


@pytest.mark.parametrize("passes", [1, 4])
def test_warm_up_traces_what_a_batch_calls(passes: int) -> None:
    model = load_model("prostate-sim", "models")
    assert model.inference.align_scanners and model.inference.align_level != "none"
    settings = load_settings(overrides={"trust.mc_passes": passes})
    warm_up(model, settings)
    grid = tuple(model.manifest.grid)
    # the encoder once, the MC passes (more than one), and the decoder: the output at T = 1,
    # and the level passes of aligned frames
    expected = {("encode", grid), ("decode", grid)} | (
        {("mc", passes, grid)} if passes > 1 else set()
    )
    assert set(model._calls) == expected


def test_warm_up_without_alignment_traces_no_level_pass() -> None:
    model = load_model("prostate-sim", "models")
    model.inference = dataclasses.replace(model.inference, align_scanners=False)
    warm_up(model, load_settings(overrides={"trust.mc_passes": 4}))
    grid = tuple(model.manifest.grid)
    assert set(model._calls) == {("encode", grid), ("mc", 4, grid)}


_AFTER_WARM_UP = """
import json, sys
import numba
from pydicom import dcmread
from sswe_node.alignment import MemoryScannerStats
from sswe_node.config import load_settings
from sswe_node.model import load_model
from sswe_node.node.worker import warm_up
from sswe_node.pipeline import process_batch
import sswe_node.imaging.grid_kernels, sswe_node.imaging.kernels, sswe_node.outputs.kernels

def signatures():
    modules = (sswe_node.imaging.kernels, sswe_node.imaging.grid_kernels, sswe_node.outputs.kernels)
    return {
        f"{m.__name__}.{name}": {str(s) for s in f.signatures}
        for m in modules for name, f in vars(m).items()
        if isinstance(f, numba.core.registry.CPUDispatcher)
    }

model = load_model("prostate-sim", "models")
warm_up(model, load_settings())
before = signatures()
datasets = [dcmread(p) for p in sys.argv[1:]]
results = process_batch(datasets, model, load_settings(), scanner_stats=MemoryScannerStats())
after = signatures()
new = {k: sorted(after[k] - before[k]) for k in after if after[k] - before[k]}
print(json.dumps({"new": new, "warmed": sum(map(len, before.values())),
                  "status": [r.status for r in results]}))
"""


def test_warm_up_captures_are_read_as_the_scanners_send_them() -> None:
    from sswe_node.node.worker import warm_up_captures
    from sswe_node.pipeline import process_batch

    captures = warm_up_captures()
    model = load_model("prostate-sim", "models")
    results = process_batch(captures, model, load_settings())
    assert [r.status for r in results] == ["done"] * 3
    assert sorted(r.layout for r in results) == ["bmode", "bmode", "dual-swe"]
    assert len({str(ds.ManufacturerModelName) for ds in captures}) == 2  # two scanners


def test_after_warm_up_a_batch_compiles_no_kernel(tmp_path: Path) -> None:
    """In a fresh process: captures the warm-up never saw need no kernel compiled or loaded."""
    from pydicom.data import get_testdata_file

    from training.simulate import write_archive

    write_archive(tmp_path / "archive", patients=1, seed=7, images_per_patient=2)
    files = sorted(str(p) for p in (tmp_path / "archive").rglob("*.dcm"))
    files.append(get_testdata_file("gdcm-US-ALOKA-16.dcm"))  # a real scanner's, a grey wedge
    done = subprocess.run(
        [sys.executable, "-c", _AFTER_WARM_UP, *files],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"].count("done") >= len(files) - 1, report["status"]
    assert report["warmed"] >= 8, report  # the warm-up ran the kernels
    assert report["new"] == {}
