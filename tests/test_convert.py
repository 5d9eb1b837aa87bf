"""`sswe-node convert` on a folder: simulated and real ultrasound files, a CT, corrupt files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.fileset import FileSet

from sswe_node.cli import main
from sswe_node.convert import find_input_files


@pytest.fixture(scope="module")
def input_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.simulate import write_archive

    root = tmp_path_factory.mktemp("inputs")
    write_archive(root / "simulated", patients=1, seed=7, images_per_patient=1)
    real = root / "real" / "nested"
    real.mkdir(parents=True)
    for name in ["US1_UNCR.dcm", "US1_J2KR.dcm", "gdcm-US-ALOKA-16.dcm", "CT_small.dcm"]:
        shutil.copy(get_testdata_file(name), real / name)
    aloka = (real / "gdcm-US-ALOKA-16.dcm").read_bytes()
    (real / "truncated.dcm").write_bytes(aloka[: len(aloka) // 2])  # header intact, pixels cut
    (real / "garbage.dcm").write_bytes(b"\x00\x01 not a DICOM file" * 20)
    (root / ".hidden.dcm").write_bytes(aloka)  # hidden files are ignored
    return root


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sswe_node.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def converted(input_folder: Path, tiny_model_dir: Path, tmp_path_factory) -> tuple[Path, str]:
    """The folder converted once by the real CLI: (output folder, stdout)."""
    out = tmp_path_factory.mktemp("converted")
    done = _run_cli(
        "convert", str(input_folder), "--out", str(out), "--model", str(tiny_model_dir),
        "--png", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


def test_convert_folder(converted, input_folder: Path, tiny_model_dir: Path, dciodvfy_errors):
    out, stdout = converted
    summary = json.loads((out / "convert-summary.json").read_text())
    # 3 simulated captures, 2 archive side files, 4 real files, 2 corrupt files
    assert summary["files"] == 11
    assert summary["converted"] == 4  # 3 simulated + the ALOKA B-mode
    assert summary["outputs"] == 8
    skipped = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    failed = {Path(f["path"]).name: f["reason"] for f in summary["failed"]}
    assert skipped["CT_small.dcm"] == "wrong-modality"
    assert skipped["US1_UNCR.dcm"] == skipped["US1_J2KR.dcm"] == "unsupported-layout"
    assert skipped["garbage.dcm"] == skipped["archive.json"] == "not-dicom"
    assert failed == {"truncated.dcm": "pixel-decode"}
    assert "11 files: 4 converted (8 derived objects), 6 skipped, 1 failed" in stdout
    assert "wrong-modality" in stdout and "truncated.dcm: pixel-decode" in stdout

    written = sorted(out.rglob("*.dcm"))
    assert len(written) == 8
    for path in written:
        ds = pydicom.dcmread(path)
        assert path.relative_to(out).parts == (
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            f"{ds.SOPInstanceUID}.dcm",
        )
        assert "SYNTHETIC SWE" in ds.SeriesDescription
    assert len(list(out.rglob("*.png"))) == 4
    assert dciodvfy_errors(written[0]) == [] and dciodvfy_errors(written[-1]) == []

    # Converting again replaces the same files (deterministic UIDs), it does not add new ones.
    before = {p.relative_to(out) for p in written}
    code = main(["convert", str(input_folder), "--out", str(out), "--model", str(tiny_model_dir),
                 "--no-progress"])  # fmt: skip
    assert code == 0
    assert {p.relative_to(out) for p in out.rglob("*.dcm")} == before


def test_a_pacs_stores_the_outputs_and_a_resend_replaces(converted, orthanc, require_dcmtk):
    from tests.peers import storescu

    out, _ = converted
    files = sorted(out.rglob("*.dcm"))
    storescu(files, orthanc.dicom_port, called_aet=orthanc.aet)
    stored = orthanc.wait_for_instances(len(files))
    storescu(files, orthanc.dicom_port, called_aet=orthanc.aet)  # resend: same UIDs
    assert len(orthanc.instances()) == len(stored) == 8
    classes = {pydicom.dcmread(f).SOPClassUID for f in files}
    assert classes == {"1.2.840.10008.5.1.4.1.1.30", pydicom.uid.SecondaryCaptureImageStorage}


def test_missing_model_is_one_error_line(input_folder: Path, tmp_path: Path) -> None:
    done = _run_cli("convert", str(input_folder), "--out", str(tmp_path), "--model", "no-such")
    assert done.returncode == 1
    assert "sswe-node convert: error: model 'no-such' not found" in done.stderr


def test_dicomdir_is_followed_not_converted(tmp_path: Path) -> None:
    fileset = FileSet()
    for name in ["gdcm-US-ALOKA-16.dcm", "CT_small.dcm"]:
        fileset.add(pydicom.dcmread(get_testdata_file(name)))
    fileset.write(tmp_path / "media")
    files = find_input_files([tmp_path / "media", tmp_path / "media" / "DICOMDIR"])
    assert len(files) == 2
    assert all(p.name != "DICOMDIR" for p in files)


@pytest.mark.slow
def test_readme_sequence_with_the_shipped_model(tmp_path: Path) -> None:
    """The README's "Convert files offline" commands, run in a scratch folder."""
    from sswe_node.model import resolve_model_dir

    try:
        resolve_model_dir("prostate-sim")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"the shipped model is not there yet: {exc}")
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Convert files offline", 1)[1].split("```sh", 1)[1].split("```")[0]
    commands = [line.split()[1:] for line in section.strip().splitlines()]
    for argv in commands:
        done = subprocess.run(
            [sys.executable, "-m", "sswe_node.cli", *argv],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    assert "converted" in done.stdout
    assert list((tmp_path / "var" / "converted").rglob("*.png"))
