"""PACS query/retrieve against a real Orthanc: C-FIND filters, C-MOVE, C-GET, resumption."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from sswe_node.cli import main
from sswe_node.errors import ConfigError
from tests.peers import Orthanc, free_port
from training.pacs import PacsClient, PacsError, PacsPeer, QueryFilters, read_patient_list

MOVE_AET = "SSWE_MOVE"

# (patient, study date, station, manufacturer, modality, instances, source file)
SERIES = [
    ("PAT-A", "20240105", "ROOM1", "ACME Ultrasound", "US", 2, "US1_J2KR.dcm"),
    ("PAT-A", "20240105", "ROOM2", "Other Corp", "US", 1, "US1_J2KR.dcm"),
    ("PAT-B", "20240312", "ROOM1", "ACME Ultrasound", "US", 1, "US1_UNCI.dcm"),
    ("PAT-B", "20240312", "CT1", "GE", "CT", 1, "CT_small.dcm"),
]


def _write_archive(folder: Path) -> dict[str, set[str]]:
    """Write the small test archive; return SOP UIDs per series label."""
    folder.mkdir(parents=True, exist_ok=True)
    studies: dict[str, str] = {}
    by_label: dict[str, set[str]] = {}
    for i, (patient, date, station, maker, modality, count, name) in enumerate(SERIES):
        study_uid = studies.setdefault(patient, generate_uid())
        series_uid = generate_uid()
        label = f"{patient}/{station}"
        for j in range(count):
            ds = dcmread(get_testdata_file(name))
            ds.PatientID = patient
            ds.PatientName = f"Test^{patient}"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.StudyDate = date
            ds.StationName = station
            ds.Manufacturer = maker
            ds.Modality = modality
            ds.SeriesNumber = i + 1
            ds.InstanceNumber = j + 1
            ds.save_as(folder / f"{i}-{j}.dcm", enforce_file_format=True)
            by_label.setdefault(label, set()).add(ds.SOPInstanceUID)
    return by_label


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, int, dict]]:
    work = tmp_path_factory.mktemp("pacs")
    uids = _write_archive(work / "archive")
    move_port = free_port()
    server = Orthanc(work / "orthanc", modalities={"sswe": (MOVE_AET, "127.0.0.1", move_port)})
    try:
        server.upload(sorted((work / "archive").iterdir()))
        yield server, move_port, uids
    finally:
        server.stop()


def _client(server: Orthanc) -> PacsClient:
    return PacsClient(PacsPeer.parse(f"{server.aet}@127.0.0.1:{server.dicom_port}"), "SSWE_TEST")


def _cached_uids(cache: Path) -> set[str]:
    return {p.stem for p in cache.rglob("*.dcm")}


def test_peer_parsing() -> None:
    assert PacsPeer.parse("PACS@host.example:4242") == PacsPeer("PACS", "host.example", 4242)
    for bad in ("PACS@host", "host:104", "TOOLONGAETITLE1234@h:1", "A@h:0"):
        with pytest.raises(ConfigError):
            PacsPeer.parse(bad)
    with pytest.raises(ConfigError):
        QueryFilters(date_from="2024-01-01")


def test_find_filters(pacs: tuple[Orthanc, int, dict]) -> None:
    server, _, _ = pacs
    client = _client(server)
    assert len(client.find_series(QueryFilters(modality="US"))) == 3
    assert len(client.find_series(QueryFilters(modality="CT"))) == 1
    assert len(client.find_series(QueryFilters(modality="US", patients=("PAT-B",)))) == 1
    assert len(client.find_series(QueryFilters(modality="US", date_from="20240201"))) == 1
    assert len(client.find_series(QueryFilters(modality="US", date_to="20240201"))) == 2
    assert len(client.find_series(QueryFilters(modality="US", station="ROOM1"))) == 2
    found = client.find_series(QueryFilters(modality="US", manufacturer="ACME*"))
    assert len(found) == 2
    assert sorted(s.instances for s in found) == [1, 2]
    assert client.find_series(QueryFilters(modality="US", patients=("NOBODY",))) == []


def test_move_then_resume(pacs: tuple[Orthanc, int, dict], tmp_path: Path) -> None:
    server, move_port, uids = pacs
    client = _client(server)
    series = client.find_series(QueryFilters(modality="US"))
    cache = tmp_path / "cache"
    kwargs = {"method": "move", "move_aet": MOVE_AET, "move_port": move_port, "parallel": 2}
    report = client.retrieve(series, cache, move_bind="127.0.0.1", **kwargs)
    expected = uids["PAT-A/ROOM1"] | uids["PAT-A/ROOM2"] | uids["PAT-B/ROOM1"]
    assert _cached_uids(cache) == expected
    assert (report.instances_fetched, report.series_skipped) == (4, 0)
    for path in cache.rglob("*.dcm"):  # complete DICOM files, in their series folders
        ds = dcmread(path)
        assert path.stem == ds.SOPInstanceUID
        assert path.parent.parts[-2:] == (ds.StudyInstanceUID, ds.SeriesInstanceUID)

    again = client.retrieve(series, cache, move_bind="127.0.0.1", **kwargs)
    assert (again.instances_fetched, again.series_skipped, again.instances_cached) == (0, 3, 4)


def test_get_fetches_only_missing(pacs: tuple[Orthanc, int, dict], tmp_path: Path) -> None:
    server, _, uids = pacs
    client = _client(server)
    series = client.find_series(QueryFilters(modality="US", station="ROOM1"))
    cache = tmp_path / "cache"
    first = client.retrieve(series, cache, method="get", parallel=2)
    expected = uids["PAT-A/ROOM1"] | uids["PAT-B/ROOM1"]
    assert _cached_uids(cache) == expected
    assert first.instances_fetched == 3
    # Lose one instance of the two-instance series and its completion marker: only it returns.
    lost = sorted(uids["PAT-A/ROOM1"])[0]
    next(cache.rglob(f"{lost}.dcm")).unlink()
    shutil.rmtree(cache / ".series")
    second = client.retrieve(series, cache, method="get", parallel=1)
    assert (second.instances_fetched, second.instances_cached) == (1, 2)
    assert _cached_uids(cache) == expected


def test_move_to_unknown_destination_fails(pacs: tuple[Orthanc, int, dict], tmp_path: Path) -> None:
    server, _, _ = pacs
    client = _client(server)
    series = client.find_series(QueryFilters(modality="US", patients=("PAT-B",)))
    with pytest.raises(PacsError):
        client.retrieve(
            series, tmp_path / "c", method="move", move_aet="NOT_KNOWN", move_port=free_port(),
            move_bind="127.0.0.1",
        )  # fmt: skip
    assert _cached_uids(tmp_path / "c") == set()


def test_patient_list_file(pacs: tuple[Orthanc, int, dict], tmp_path: Path) -> None:
    server, _, _ = pacs
    ids = tmp_path / "ids.txt"
    ids.write_text("# study cohort\nPAT-A\n\n  PAT-B  \n")
    patients = read_patient_list(ids)
    assert patients == ("PAT-A", "PAT-B")
    found = _client(server).find_series(QueryFilters(modality="US", patients=patients[:1]))
    assert len(found) == 2


def test_cli_move_needs_destination(
    pacs: tuple[Orthanc, int, dict], tmp_path: Path, capsys
) -> None:
    server, _, _ = pacs
    argv = ["dataset", "build", str(tmp_path / "d.h5"), "--pacs",
            f"{server.aet}@127.0.0.1:{server.dicom_port}", "--key-file", __file__]  # fmt: skip
    assert main(argv) == 1
    assert "--move-aet and --move-port" in capsys.readouterr().err


def test_move_port_in_use_is_a_clear_error(pacs: tuple, tmp_path: Path) -> None:
    server, _, _ = pacs
    client = _client(server)
    series = client.find_series(QueryFilters(modality="US", patients=("PAT-B",)))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PacsError, match="cannot listen"):
            client.retrieve(series, tmp_path / "c", move_aet=MOVE_AET, move_port=port,
                            move_bind="127.0.0.1")  # fmt: skip
