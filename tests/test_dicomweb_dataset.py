"""Datasets from a DICOMweb archive: a simulated archive in Orthanc's DICOMweb plugin (HTTP
basic authentication on); QIDO-RS + WADO-RS builds equal the folder build, resume, grow."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sswe_node.cli import main
from tests.peers import Orthanc, free_port
from tests.test_dataset_pacs import _assert_same, _common, _upload_new_dual
from training.datafile import read_dataset

write_archive = pytest.importorskip("training.simulate").write_archive

USER, PASSWORD = "researcher", "s3cret-pw"


@pytest.fixture(scope="module")
def web_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    work = tmp_path_factory.mktemp("web")
    archive = work / "archive"
    write_archive(archive, patients=2, seed=5, images_per_patient=1, opacity=1.0)
    (work / "key").write_text("web-test-key\n")
    (work / "password").write_text(PASSWORD + "\n")
    server = Orthanc(work / "orthanc", dicomweb=True, users={USER: PASSWORD})
    try:
        server.upload(sorted((archive / "dicom").rglob("*.dcm")))
        yield {"work": work, "archive": archive, "server": server}
    finally:
        server.stop()


def test_dicomweb_build_equals_folder_build_resumes_and_grows(
    web_archive: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    work, archive, server = web_archive["work"], web_archive["archive"], web_archive["server"]
    index = json.loads((archive / "archive.json").read_text())
    common = _common(work, index["scale"])
    folder_out = tmp_path / "folder.h5"
    assert main(["dataset", "build", str(folder_out), "--folder", str(archive), *common]) == 0

    cache = tmp_path / "cache"
    web = ["--dicomweb", server.dicomweb_url, "--username", USER,
           "--password-file", str(work / "password"), "--cache", str(cache),
           "--parallel", "3"]  # fmt: skip
    web_out = tmp_path / "web.h5"
    capsys.readouterr()
    assert main(["dataset", "build", str(web_out), *web, *common]) == 0
    printed = capsys.readouterr().out
    total = len(index["instances"])
    assert f"fetched {total} instances" in printed, printed
    folder, fetched = read_dataset(folder_out), read_dataset(web_out)
    _assert_same(folder, fetched)
    assert fetched.manifest["rejections"] == {}
    build = fetched.manifest["builds"][-1]
    assert build["source"].startswith("dicomweb:")
    assert PASSWORD not in build["command"] and "--password-file" in build["command"]

    # A rerun asks for nothing new and adds nothing.
    assert main(["dataset", "build", str(web_out), *web, *common]) == 0
    printed = capsys.readouterr().out
    assert "fetched 0 instances" in printed and "+0 rows" in printed

    # An interrupted retrieval (one cached file and its series marker gone): only it is
    # fetched again, instance by instance; the grown archive's new instance too.
    lost = next(cache.rglob("*.dcm"))
    lost.unlink()
    shutil.rmtree(cache / ".series")
    _upload_new_dual(archive, index, server, tmp_path / "new.dcm")
    assert main(["dataset", "build", str(web_out), *web, *common]) == 0
    printed = capsys.readouterr().out
    assert "fetched 2 instances" in printed and "+1 rows (1 labelled" in printed, printed
    assert len(read_dataset(web_out)) == len(folder) + 1


def test_filters_and_errors(web_archive: dict, tmp_path: Path, capsys) -> None:
    work, server = web_archive["work"], web_archive["server"]
    auth = ["--username", USER, "--password-file", str(work / "password")]
    common = _common(work, [0, 70])
    # A manufacturer nobody has: no series, an empty dataset.
    out = tmp_path / "none.h5"
    assert main(["dataset", "build", str(out), "--dicomweb", server.dicomweb_url, *auth,
                 "--manufacturer", "NoSuchVendor*", "--cache", str(tmp_path / "c1"),
                 *common]) == 0  # fmt: skip
    assert ": 0 series" in capsys.readouterr().out
    # A patients file and a date range: one patient's series, then none after 2999.
    first, *others = server.get("/patients?expand")  # what the archive holds now
    assert others
    patient = first["MainDicomTags"]["PatientID"]
    theirs = server.get(f"/patients/{first['ID']}/instances")
    (tmp_path / "ids.txt").write_text(f"# one patient\n{patient}\n")
    out = tmp_path / "one.h5"
    assert main(["dataset", "build", str(out), "--dicomweb", server.dicomweb_url, *auth,
                 "--patients", str(tmp_path / "ids.txt"), "--date-from", "19000101",
                 "--cache", str(tmp_path / "c4"), *common]) == 0  # fmt: skip
    assert f"fetched {len(theirs)} instances" in capsys.readouterr().out
    assert main(["dataset", "build", str(tmp_path / "late.h5"), "--dicomweb",
                 server.dicomweb_url, *auth, "--date-from", "29990101",
                 "--cache", str(tmp_path / "c5"), *common]) == 0  # fmt: skip
    assert ": 0 series" in capsys.readouterr().out
    # The wrong password: a clear error naming the HTTP status.
    (tmp_path / "bad").write_text("wrong\n")
    code = main(["dataset", "build", str(tmp_path / "x.h5"), "--dicomweb", server.dicomweb_url,
                 "--username", USER, "--password-file", str(tmp_path / "bad"),
                 "--cache", str(tmp_path / "c2"), *common])  # fmt: skip
    assert code != 0
    assert "HTTP 401" in capsys.readouterr().err
    # Nobody listening: a clear error too (one try here; the command tries 5 times in ~30 s).
    from training.dicomweb_source import DicomwebError, DicomwebSource
    from training.pacs import QueryFilters

    down = DicomwebSource(f"http://127.0.0.1:{free_port()}/dicom-web", attempts=1)
    with pytest.raises(DicomwebError, match="QIDO-RS search for studies .* failed: .*refused"):
        down.find_series(QueryFilters())


def test_readme_dicomweb_dataset_commands(web_archive: dict, tmp_path: Path) -> None:
    """The README's "From a DICOMweb archive" block as written (Orthanc's port substituted)."""
    import re
    import shlex
    import subprocess

    root = Path(__file__).resolve().parent.parent
    section = (root / "README.md").read_text().split("**From a DICOMweb archive**", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the README DICOMweb dataset paragraph has no sh block"
    with Orthanc(tmp_path / "orthanc", dicomweb=True) as server:
        server.upload(sorted((web_archive["archive"] / "dicom").rglob("*.dcm")))
        (tmp_path / "var").mkdir()
        outputs = []
        for line in block.group(1).splitlines():
            line = line.replace("http://127.0.0.1:8042/dicom-web", server.dicomweb_url)
            argv = shlex.split(line)
            argv[0] = str(root / argv[0])
            done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-2000:]
            outputs.append(done.stdout)
    index = json.loads((web_archive["archive"] / "archive.json").read_text())
    duals = sum(i["kind"] == "dual" for i in index["instances"])
    assert f"{duals} labelled" in outputs[1] and "dicomweb:" in outputs[1], outputs[1]
