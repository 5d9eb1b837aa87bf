"""Building a dataset from a folder of real DICOM files: walk, DICOMDIR, rejections, increments."""

from __future__ import annotations

import doctest
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

import training.dataset
from sswe_node.cli import main
from sswe_node.errors import ConfigError
from training.datafile import DatasetWriter, dataset_summary, read_dataset
from training.dataset import BuildOptions, build_from_folder, find_dicom_files
from training.pseudonym import PseudonymKey

KEY = PseudonymKey(b"test-key", "test")
OPTIONS = BuildOptions(workers=1)


def _copy(name: str, patient: str, body_part: str = "PROSTATE"):
    ds = dcmread(get_testdata_file(name))
    ds.PatientID = patient
    ds.PatientName = f"Doe^{patient}"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.BodyPartExamined = body_part
    return ds


def _save(ds, path: Path) -> None:
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """B-mode (ALOKA), a colour Doppler-like US, a CT, a text file, a duplicate, a DICOMDIR set."""
    root = tmp_path / "archive"
    (root / "a" / "b").mkdir(parents=True)
    _save(_copy("gdcm-US-ALOKA-16.dcm", "PAT-ONE"), root / "a" / "img1")
    shutil.copy(root / "a" / "img1", root / "a" / "b" / "same-as-img1.dcm")
    _copy("gdcm-US-ALOKA-16.dcm", "PAT-TWO").save_as(
        root / "a" / "b" / "x", enforce_file_format=True
    )
    _save(_copy("US1_J2KR.dcm", "PAT-ONE"), root / "doppler.dcm")
    _save(_copy("CT_small.dcm", "PAT-TWO"), root / "ct.dcm")
    (root / "notes.txt").write_text("not DICOM")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "skip.dcm").write_bytes((root / "a" / "img1").read_bytes())
    fileset = FileSet()
    fileset.add(_copy("gdcm-US-ALOKA-16.dcm", "PAT-THREE", body_part=""))
    fileset.write(root / "media")
    return root


def test_walk_finds_dicomdir_references(archive: Path) -> None:
    files = find_dicom_files(archive)
    names = {p.relative_to(archive).as_posix() for p in files}
    assert "media/DICOMDIR" not in names
    assert any(n.startswith("media/PT") for n in names)  # referenced by the DICOMDIR
    assert not any(".hidden" in n for n in names)
    assert len(files) == 7
    with pytest.raises(ConfigError):
        find_dicom_files(archive / "missing")


def test_build_counts_rejections_and_pseudonymises(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds.h5"
    report = build_from_folder(archive, out, KEY, OPTIONS, command="test build")
    assert report.files == 7
    assert report.instances_new == 5  # the duplicate, the text file are not instances
    assert dict(report.rejections) == {
        "duplicate": 1, "not-dicom": 1, "unsupported-layout": 1, "wrong-modality": 1,
    }  # fmt: skip
    assert (report.rows, report.labelled, report.unlabelled) == (3, 0, 3)

    data = read_dataset(out)
    assert len(data) == 3
    assert list(data.meta["sop_uid"]) == sorted(data.meta["sop_uid"])  # deterministic order
    assert set(data.meta["layout"]) == {"bmode"}
    assert sorted(data.meta["organ"]) == ["", "prostate", "prostate"]
    assert np.isnan(data.labels).all() and not data.meta["labelled"].any()
    assert data.images.shape == (3, 96, 64)
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0 and data.images.std() > 0.05
    assert (data.meta["spacing_row_mm"] > 0.3).all() and (data.meta["roi_rows"] > 300).all()
    expected = {KEY.patient_key(p) for p in ("PAT-ONE", "PAT-TWO", "PAT-THREE")}
    assert set(data.meta["patient_key"]) == expected
    assert set(data.meta["manufacturer"]) == {"ALOKA CO., LTD."}
    raw = out.read_bytes()
    assert b"PAT-ONE" not in raw and b"Doe^" not in raw  # raw identifiers are never stored
    manifest = data.manifest
    assert "not for diagnosis" in manifest["notice"]
    assert manifest["command"] == "test build"
    assert manifest["rejections"]["wrong-modality"] == 1
    assert manifest["key_fingerprint"] == KEY.fingerprint


def test_incremental_build_processes_only_new(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds.h5"
    build_from_folder(archive, out, KEY, OPTIONS)
    second = build_from_folder(archive, out, KEY, OPTIONS)
    assert (second.instances_new, second.rows, second.instances_skipped) == (0, 0, 5)
    assert dict(second.rejections) == {"duplicate": 1, "not-dicom": 1}
    _save(_copy("gdcm-US-ALOKA-16.dcm", "PAT-FOUR"), archive / "new.dcm")
    third = build_from_folder(archive, out, KEY, OPTIONS)
    assert (third.instances_new, third.rows, third.instances_skipped) == (1, 1, 5)
    summary = dataset_summary(out)
    assert summary["rows"] == 4 and summary["patients"] == 4
    assert len(summary["manifest"]["builds"]) == 3
    assert summary["manifest"]["counts"]["rows"] == 4
    assert summary["manifest"]["rejections"] == {
        "duplicate": 1, "not-dicom": 1, "unsupported-layout": 1, "wrong-modality": 1,
    }  # fmt: skip
    with DatasetWriter(out) as writer:  # rejected instances are remembered too
        outcomes = writer.processed()
    assert sorted(outcomes.values()).count("ok") == 4 and "wrong-modality" in outcomes.values()


def test_incremental_build_refuses_other_key_or_options(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds.h5"
    build_from_folder(archive / "a", out, KEY, OPTIONS)
    with pytest.raises(ConfigError, match="another pseudonymisation key"):
        build_from_folder(archive, out, PseudonymKey(b"other", "t"), OPTIONS)
    with pytest.raises(ConfigError, match="min_coverage"):
        build_from_folder(archive, out, KEY, BuildOptions(workers=1, min_coverage=0.5))


def test_writer_refusing_another_grid_closes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "ds.h5"
    DatasetWriter(out, grid=(96, 64)).close()
    with pytest.raises(ValueError, match=r"grid \(96, 64\) != \(32, 32\)") as refused:
        DatasetWriter(out, grid=(32, 32))
    # The error's traceback keeps the refused writer alive: its file must be closed already.
    with h5py.File(out, "w"):
        assert refused.traceback


def test_cli_build_and_info(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli.h5"
    assert main(["dataset", "build", str(out), "--folder", str(archive), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "generated a pseudonymisation key" in printed and "+3 rows" in printed
    assert Path(str(out) + ".key").exists()
    assert main(["dataset", "info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "rows 3: 0 labelled, 3 unlabelled; 3 patients" in info
    assert "wrong-modality: 1" in info and "not for diagnosis" in info
    command = read_dataset(out).manifest["command"]
    assert command.startswith(f"sswe-node dataset build {out} --folder {archive}")
    assert "--workers 1" in command and "--grid 96x64" in command
    with h5py.File(out) as f:
        assert f["processed/sop_uid"].shape == (5,)
    assert main(["dataset", "info", str(tmp_path / "none.h5")]) == 1


def test_multiframe_instance_gives_one_row_per_frame(tmp_path: Path, make_us_source) -> None:
    folder = tmp_path / "mf"
    folder.mkdir()
    _save(make_us_source(frames=5, seed=1), folder / "cine.dcm")
    out = tmp_path / "mf.h5"
    report = build_from_folder(folder, out, KEY, BuildOptions(workers=1, max_frames=3))
    assert (report.instances_new, report.rows, report.unlabelled) == (1, 3, 3)
    data = read_dataset(out)
    assert list(data.meta["frame"]) == [0, 2, 4]  # evenly spaced, first and last included
    assert len(set(data.meta["sop_uid"])) == 1
    assert not np.array_equal(data.images[0], data.images[1])


@pytest.fixture(scope="module")
def thyroid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated thyroid archive: one dual capture (m/s, bar 0-10) and one full-screen B-mode."""
    simulate = pytest.importorskip("training.simulate", reason="the simulator is not there yet")
    root = tmp_path_factory.mktemp("thyroid") / "archive"
    simulate.write_archive(
        root, patients=1, seed=5, organ="thyroid", images_per_patient=1, opacity=1.0,
        other_scanner=False,
    )  # fmt: skip
    return root


def _label_error(data, archive: Path) -> float:
    """Median absolute difference of the labelled rows to the simulator's ground truth."""
    from sswe_node.imaging.grid import to_grid

    errors = []
    with h5py.File(archive / "ground_truth.h5") as truth:
        for row in np.flatnonzero(data.meta["labelled"]):
            expected = to_grid(truth[data.meta["sop_uid"][row]]["swe"][:], data.labels.shape[1:])
            both = np.isfinite(expected) & np.isfinite(data.labels[row])
            errors.append(np.abs(data.labels[row][both] - expected[both]))
    return float(np.median(np.concatenate(errors)))


def test_quantity_follows_the_organ() -> None:
    assert BuildOptions(organ="thyroid").quantity == "shear-wave-speed"
    assert BuildOptions(organ="Thyroid").quantity == "shear-wave-speed"
    assert BuildOptions(organ="prostate").quantity == "youngs-modulus"
    assert BuildOptions(organ="liver").quantity == "youngs-modulus"
    assert BuildOptions(organ="thyroid", quantity="youngs-modulus").quantity == "youngs-modulus"
    assert BuildOptions().quantity is None  # decided per instance from BodyPartExamined
    with pytest.raises(ConfigError, match="--quantity"):
        BuildOptions(quantity="kPa")
    assert doctest.testmod(training.dataset).failed == 0


def test_cli_thyroid_labels_are_shear_wave_speed(
    thyroid: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "thyroid.h5"
    common = ["--workers", "1", "--key-file", str(tmp_path / "key")]
    argv = ["dataset", "build", str(out), "--folder", str(thyroid), "--organ", "thyroid",
            "--scale", "0", "10", *common]  # fmt: skip
    (tmp_path / "key").write_text("thyroid-test-key\n")
    assert main(argv) == 0
    assert "labels: shear-wave-speed in m/s (the default for --organ thyroid)" in (
        capsys.readouterr().out
    )
    data = read_dataset(out)
    labelled = data.meta["labelled"]
    assert labelled.sum() == 1 and len(data) == 2
    assert list(data.meta["quantity"][labelled]) == ["shear-wave-speed"]
    assert list(data.meta["unit"][labelled]) == ["m/s"]
    assert data.manifest["options"]["quantity"] == "shear-wave-speed"
    assert np.nanmax(data.labels) <= 10.0 + 1e-3
    assert _label_error(data, thyroid) <= 0.2  # m/s
    # The same file cannot grow with the other quantity: the labels would mix units.
    assert main([*argv, "--quantity", "youngs-modulus"]) == 1
    assert "options quantity differ" in capsys.readouterr().err


def test_body_part_decides_the_quantity_without_organ(thyroid: Path, tmp_path: Path) -> None:
    out = tmp_path / "by-body-part.h5"
    report = build_from_folder(thyroid, out, KEY, BuildOptions(scale=(0.0, 10.0), workers=1))
    assert report.labelled == 1
    data = read_dataset(out)
    labelled = data.meta["labelled"]
    assert list(data.meta["organ"][labelled]) == ["thyroid"]  # from BodyPartExamined THYROID
    assert list(data.meta["unit"][labelled]) == ["m/s"]
    assert data.manifest["options"]["quantity"] is None
    # Forced to kPa, the bar labelled "10.0 m/s" is refused, not decoded as kPa (issue 9).
    forced = BuildOptions(scale=(0.0, 10.0), workers=1, quantity="youngs-modulus")
    report = build_from_folder(thyroid, tmp_path / "forced.h5", KEY, forced)
    assert report.rejections["scale-mismatch"] == 1 and report.labelled == 0
    assert set(read_dataset(tmp_path / "forced.h5").meta["unit"]) == {""}


def without_bar_labels(archive: Path, out: Path) -> Path:
    """Copy an archive's instances with the text beside the colour bar blacked out."""
    import json

    out.mkdir()
    for number, entry in enumerate(json.loads((archive / "archive.json").read_text())["instances"]):
        ds = dcmread(archive / entry["path"])
        if entry["kind"] == "dual":
            top, left, bottom, right = entry["boxes"]["colour_bar"]
            pixels = ds.pixel_array.copy()
            pixels[max(0, top - 30) : bottom + 30, left - 60 : right + 60] = 0
            pixels[top:bottom, left:right] = ds.pixel_array[top:bottom, left:right]
            ds.PixelData = pixels.tobytes()
        ds.save_as(out / f"{number:04d}-{entry['kind']}.dcm", enforce_file_format=True)
    return out


def test_cli_dual_capture_without_scale_is_an_error_that_says_how_to_fix_it(
    thyroid: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "no-scale.h5"
    unlabelled = without_bar_labels(thyroid, tmp_path / "unlabelled")  # labels give a scale
    argv = ["dataset", "build", str(out), "--folder", str(unlabelled), "--organ", "thyroid",
            "--workers", "1", "--key-file", str(tmp_path / "key")]  # fmt: skip
    (tmp_path / "key").write_text("thyroid-test-key\n")
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "rejected no-scale: 1" in captured.out
    assert "1 dual SWE capture(s) rejected as no-scale" in captured.err
    assert "--scale MIN MAX" in captured.err and "in m/s (e.g. --scale 0 10)" in captured.err
    assert "new dataset file" in captured.err
    data = read_dataset(out)  # the B-mode row was still written
    assert (len(data), int(data.meta["labelled"].sum())) == (1, 0)
    # A folder without dual captures needs no scale and succeeds.
    bmode_only = tmp_path / "bmode"
    bmode_only.mkdir()
    _save(_copy("gdcm-US-ALOKA-16.dcm", "PAT-FIVE"), bmode_only / "b.dcm")
    assert main(["dataset", "build", str(tmp_path / "b.h5"), "--folder", str(bmode_only),
                 "--workers", "1", "--key-file", str(tmp_path / "key")]) == 0  # fmt: skip
    assert "no-scale" not in capsys.readouterr().err
