"""The processing pipeline on real instances with a real (small, untrained) packaged model."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from sswe_node.config import load_settings
from sswe_node.imaging import read_instance
from sswe_node.imaging.grid import from_grid
from sswe_node.model import load_model
from sswe_node.pipeline import chunk_plan, process_batch, process_instance


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path):
    return load_model(tiny_model_dir, device="cpu")


class CountingModel:
    """The real model, counting its predict calls."""

    def __init__(self, model) -> None:
        self.model, self.manifest, self.calls = model, model.manifest, []

    def predict(self, images):
        self.calls.append(len(images))
        return self.model.predict(images)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from training.simulate import write_archive

    out = tmp_path_factory.mktemp("archive")
    write_archive(out, patients=1, seed=4, images_per_patient=1)
    listing = json.loads((out / "archive.json").read_text())
    return {item["kind"]: out / item["path"] for item in listing["instances"]}


def _expected_values(ds: pydicom.Dataset, model) -> list[np.ndarray]:
    grid = model.manifest.grid
    readings = read_instance(ds, grid=grid, quantity=model.manifest.quantity)
    predictions = model.predict(np.stack([r.model_input(grid) for r in readings]))
    values = [from_grid(p, r.bmode.shape) for r, p in zip(readings, predictions, strict=True)]
    for r, v in zip(readings, values, strict=True):
        if r.outside is not None:  # outside a sector fan: NaN in the map (issue 9)
            v[r.outside] = np.nan
    return values


def test_batch_of_mixed_instances(model, archive, make_us_source, dciodvfy_errors, tmp_path):
    names = ["dual", "bmode", "other-scanner", "gdcm-US-ALOKA-16.dcm", "CT_small.dcm"]
    datasets = [pydicom.dcmread(archive[n]) for n in names[:3]]
    datasets += [pydicom.dcmread(get_testdata_file(n)) for n in names[3:]]
    settings = load_settings()
    counting = CountingModel(model)
    results = process_batch(datasets, counting, settings)

    assert [r.status for r in results] == ["done", "done", "done", "done", "skipped"]
    assert results[4].reason == "wrong-modality" and results[4].outputs == []
    assert results[4].message.startswith("wrong-modality: ")
    assert [r.layout for r in results[:4]] == ["dual-swe", "bmode", "bmode", "bmode"]
    # One model call per chunk of the batch (the CT is not read): 2 + 2 frames.
    assert chunk_plan(len(datasets)) == [2, 3] and counting.calls == [2, 2]
    assert sum(counting.calls) == sum(r.frames for r in results)
    for ds, result in zip(datasets[:4], results[:4], strict=True):
        assert result.sop_instance_uid == ds.SOPInstanceUID
        assert result.frames == 1
        assert set(result.timings) == {"read", "predict", "build"}
        pm, sc = result.outputs
        assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"
        assert sc.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
        for i, derived in enumerate(result.outputs):
            path = tmp_path / f"{result.sop_instance_uid}-{i}.dcm"
            derived.save_as(path, enforce_file_format=True)
            assert dciodvfy_errors(path) == [], path
            assert pydicom.dcmread(path).StudyInstanceUID == ds.StudyInstanceUID
        # highdicom reads the map back and its values are the model's prediction on the ROI
        back = hd.pm.ParametricMap.from_dataset(
            pydicom.dcmread(tmp_path / f"{ds.SOPInstanceUID}-0.dcm")
        )
        (expected,) = _expected_values(ds, model)
        np.testing.assert_allclose(back.pixel_array, expected, rtol=1e-5, atol=1e-3)
    # The ALOKA file's spacing comes from its Sequence of Ultrasound Regions (0.0383 cm).
    measures = results[3].outputs[0].SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == pytest.approx([0.38265, 0.38265], abs=1e-4)


def test_minimal_deidentified_source(model, archive, tmp_path, dciodvfy_errors) -> None:
    ds = pydicom.dcmread(archive["bmode"])
    for keyword in [
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
        "AccessionNumber", "StudyID", "ReferringPhysicianName", "SeriesNumber", "InstanceNumber",
        "PixelSpacing", "FrameOfReferenceUID", "SequenceOfUltrasoundRegions", "StudyInstanceUID",
    ]:  # fmt: skip
        if keyword in ds:
            delattr(ds, keyword)
    result = process_instance(ds, model, load_settings())
    assert result.status == "done", result.message
    for i, derived in enumerate(result.outputs):
        path = tmp_path / f"{i}.dcm"
        derived.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == []
    assert result.outputs[0].StudyInstanceUID == result.outputs[1].StudyInstanceUID


def test_multi_frame_source_gives_outputs_per_frame(model, make_us_source) -> None:
    ds = pydicom.dcmread(get_testdata_file("gdcm-US-ALOKA-16.dcm"))
    frames = 3
    mf = make_us_source(frames=frames, rows=ds.Rows, cols=ds.Columns)
    grey = ds.pixel_array.astype(np.float32)
    mf.PixelData = np.stack([grey] * frames).clip(0, 255).astype(np.uint8).tobytes()
    mf.SequenceOfUltrasoundRegions = ds.SequenceOfUltrasoundRegions
    settings = load_settings()
    settings.reading.max_frames = 2
    result = process_instance(mf, model, settings)
    if result.status != "done":
        pytest.skip(f"the reading core does not read this multi-frame capture: {result.message}")
    assert result.frames == 2 and len(result.outputs) == 4
    references = [o.SourceImageSequence[0].ReferencedFrameNumber for o in result.outputs]
    assert references == [1, 1, frames, frames]
    assert len({o.SOPInstanceUID for o in result.outputs}) == 4


class CountingInfer:
    """The real model, counting the frames of each ``infer`` call."""

    def __init__(self, model) -> None:
        self.model, self.calls = model, []

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def infer(self, images, **kwargs):
        self.calls.append(len(images))
        return self.model.infer(images, **kwargs)


def test_a_batch_of_several_chunks_gives_the_outputs_of_single_instances(model, archive):
    datasets = [pydicom.dcmread(archive[k]) for k in ["dual", "bmode", "other-scanner"] * 3]
    broken = pydicom.dcmread(archive["bmode"])
    broken.PixelData = broken.PixelData[: len(broken.PixelData) // 3]
    datasets.insert(5, broken)
    settings = load_settings(overrides={"trust.mc_passes": 3})
    counting = CountingInfer(model)
    assert chunk_plan(len(datasets)) == [2, 4, 4]
    results = process_batch(datasets, counting, settings)

    # One call per chunk, predicted while the next chunk is read; the broken one is left out.
    assert counting.calls == [2, 3, 4]
    assert [r.status for r in results] == ["done"] * 5 + ["failed"] + ["done"] * 4
    assert results[5].reason == "pixel-decode"
    for ds, result in zip(datasets, results, strict=True):
        if result.status != "done":
            continue
        alone = process_instance(ds, model, settings)
        assert set(result.timings) == {"read", "predict", "build"}
        assert result.ood_score == alone.ood_score
        pm, sc = result.outputs
        assert pm.FloatPixelData == alone.outputs[0].FloatPixelData  # values and SD frame
        assert pm.NumberOfFrames == 2
        assert sc.PixelData == alone.outputs[1].PixelData


def test_outputs_follow_settings_and_are_deterministic(model, archive) -> None:
    ds = pydicom.dcmread(archive["bmode"])
    settings = load_settings()
    settings.processing.parametric_map = False
    (first,) = process_batch([ds], model, settings)
    (again,) = process_batch([ds], model, settings)
    assert [o.SOPClassUID for o in first.outputs] == [pydicom.uid.SecondaryCaptureImageStorage]
    assert first.outputs[0].SOPInstanceUID == again.outputs[0].SOPInstanceUID
    assert first.outputs[0].SeriesInstanceUID == again.outputs[0].SeriesInstanceUID


def test_own_outputs_and_corrupt_instances_do_not_break_a_batch(model, archive) -> None:
    good = pydicom.dcmread(archive["bmode"])
    (done,) = process_batch([good], model, load_settings())
    own_capture = done.outputs[1]
    broken = pydicom.dcmread(archive["other-scanner"])
    broken.PixelData = broken.PixelData[: len(broken.PixelData) // 3]
    results = process_batch([own_capture, broken, good], model, load_settings())
    assert [(r.status, r.reason) for r in results[:2]] == [
        ("skipped", "own-output"),
        ("failed", "pixel-decode"),
    ]
    assert results[2].status == "done"


def test_prediction_failure_fails_the_batch_with_a_reason(model, archive) -> None:
    # A manifest grid the network does not accept: the real model refuses the inputs.
    wrong = SimpleNamespace(manifest=replace(model.manifest, grid=(64, 64)), predict=model.predict)
    results = process_batch([pydicom.dcmread(archive["bmode"])], wrong, load_settings())
    assert (results[0].status, results[0].reason) == ("failed", "predict")
    assert results[0].outputs == []


def test_organ_mismatch_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    from pydicom import Dataset

    from sswe_node.pipeline import warn_if_other_organ

    ds = Dataset()
    ds.BodyPartExamined = "THYROID"
    with caplog.at_level("WARNING", logger="sswe_node.pipeline"):
        assert warn_if_other_organ(ds, "prostate")
    assert "organ-mismatch" in caplog.text
    ds.BodyPartExamined = "PROSTATE"
    assert not warn_if_other_organ(ds, "prostate")
    del ds.BodyPartExamined
    assert not warn_if_other_organ(ds, "prostate")


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_freed_memory_is_kept_unless_the_environment_says_otherwise() -> None:
    # Outputs kept and temporaries freed, of a few MB each, as in a batch's build.
    code = (
        "import numpy as np, resource\n"
        "from sswe_node.pipeline import keep_freed_memory\n"
        "print(keep_freed_memory())\n"
        "def work():\n"
        "    kept = [np.ones(n) for n in (300_000, 540_000, 270_000)]\n"
        "    tmp = [np.ones(n) for n in (540_000, 1_000_000)]\n"
        "    return kept\n"
        "for _ in range(3): work()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(20): work()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    kept = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    env["MALLOC_TRIM_THRESHOLD_"] = str(128 << 10)  # glibc's default
    left = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    (set_, kept_faults), (unset, left_faults) = (p.stdout.split() for p in (kept, left))
    assert (set_, unset) == ("True", "False")
    # Freed blocks are reused, not faulted in afresh (~40,000 page faults with the defaults).
    assert int(kept_faults) < 2_000 < int(left_faults), (kept_faults, left_faults)
