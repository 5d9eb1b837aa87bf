"""Stored files and records under careless senders (issue 11, items 2, 3, 6 and 7).

Instances go through the real SCP, sent by pynetdicom (which, unlike dcmtk, sends malformed
UIDs as they are) and by dcmtk's storescu.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import UltrasoundImageStorage
from sqlalchemy import select

from sswe_node.node.app import Node
from sswe_node.node.schema import Case
from sswe_node.node.storage import file_stem, incoming_path
from sswe_node.node.store import CaseStore
from sswe_node.outputs.uids import UID_SALT_ATTRIBUTE, derived_instance_uid
from sswe_node.quiet import quiet_libraries
from tests.node_support import StartNode, storescu_keep


@pytest.fixture
def start_node(start_node: StartNode, require_dcmtk: None) -> StartNode:
    """The shared paused-node starter (tests/conftest.py), with dcmtk required."""
    return start_node


def _send(port: int, datasets: list[Dataset]) -> list[int]:
    """C-STORE datasets with pynetdicom (UIDs sent as they are); return the statuses."""
    ae = AE(ae_title="CARELESS")
    ae.add_requested_context(UltrasoundImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="SSWE_NODE")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def _cases(node: Node) -> list[dict]:
    store = CaseStore(node.settings.node.database_url)
    try:
        return sorted(store.list_cases(), key=lambda c: c["id"])
    finally:
        store.close()


def _files(node: Node) -> list[Path]:
    """The received file of each case, by case id."""
    store = CaseStore(node.settings.node.database_url)
    try:
        with store.session() as session:
            return [Path(p) for p in session.scalars(select(Case.path).order_by(Case.id))]
    finally:
        store.close()


def test_file_names_are_injective_and_stay_in_the_folder() -> None:
    root = Path("/srv/storage")
    names = ["1.2.826.78.aa", "1.2.826.78.bb", "../../etc/passwd", "1.2.3", "1.2.3 ", "x" * 200]
    paths = [incoming_path(root, uid) for uid in names]
    assert paths[3] == root / "incoming" / "1.2.3.dcm"  # a valid UID is its own name
    assert len(set(paths[:4])) == 4 and paths[4] == paths[3]  # padding is not part of a UID
    for path in paths:
        assert path.parent == root / "incoming"
        assert len(path.name) < 80
    assert file_stem("01.2") != "01.2"  # a leading zero is not a valid UID component


def test_distinct_nonstandard_uids_keep_distinct_files(
    start_node: StartNode, make_us_source
) -> None:
    node = start_node()
    first, second = make_us_source(rows=64, cols=64), make_us_source(rows=64, cols=64, seed=1)
    first.SOPInstanceUID, second.SOPInstanceUID = "1.2.826.78.aa", "1.2.826.78.bb"
    assert _send(node.port, [first, second]) == [0, 0]
    cases = _cases(node)
    assert [c["sop_instance_uid"] for c in cases] == ["1.2.826.78.aa", "1.2.826.78.bb"]
    assert all(c["warnings"] == ["nonstandard-uid"] for c in cases)
    stored = _files(node)
    assert len(set(stored)) == 2
    for path, source in zip(stored, (first, second), strict=True):
        assert dcmread(path).PixelData == source.PixelData  # each its own pixels


def test_same_uid_other_content_keeps_both(
    start_node: StartNode, make_us_source, caplog: pytest.LogCaptureFixture
) -> None:
    node = start_node()
    original = make_us_source(rows=64, cols=64)
    other = make_us_source(rows=64, cols=64, seed=1)
    other.SOPInstanceUID = original.SOPInstanceUID
    other.PatientID = "ANOTHER-PATIENT"
    assert _send(node.port, [original, original, other]) == [0, 0, 0]
    cases = _cases(node)
    assert len(cases) == 2
    assert cases[0]["times_received"] == 2 and cases[0]["warnings"] == []  # identical resend
    assert cases[1]["warnings"] == ["uid-conflict"]
    assert cases[0]["content_sha256"] != cases[1]["content_sha256"]
    files = _files(node)
    assert files[0] != files[1]
    assert [dcmread(f).PatientID for f in files] == ["SSWE-TEST-1", "ANOTHER-PATIENT"]
    assert any("event=uid-conflict" in r.getMessage() for r in caplog.records)
    assert not any("ANOTHER-PATIENT" in r.getMessage() for r in caplog.records)
    # The conflicting case's outputs are derived with its content hash: new output UIDs.
    store = CaseStore(node.settings.node.database_url)
    salts = store.uid_salts([c["id"] for c in cases])
    store.close()
    assert list(salts) == [cases[1]["id"]]
    salted = dcmread(files[1])
    setattr(salted, UID_SALT_ATTRIBUTE, salts[cases[1]["id"]])
    plain = dcmread(files[0])
    assert derived_instance_uid(salted, 0, "m", "1", "pm") != derived_instance_uid(
        plain, 0, "m", "1", "pm"
    )


def test_dataset_without_uids_is_corrupt_not_another_modality(tmp_path: Path) -> None:
    from sswe_node.node.intake import missing_identity

    ds = Dataset()
    ds.PatientID = "X"
    assert "SOPInstanceUID" in (missing_identity(ds) or "")
    ds.SOPClassUID, ds.SOPInstanceUID = UltrasoundImageStorage, "1.2.3"
    assert missing_identity(ds) is None


def test_storage_and_database_are_private_whatever_the_umask(
    start_node: StartNode, make_us_source, tmp_path: Path
) -> None:
    previous = os.umask(0o022)
    try:
        node = start_node()
        ds = make_us_source(rows=64, cols=64)
        ds.save_as(tmp_path / "one.dcm", enforce_file_format=True)
        storescu_keep([tmp_path / "one.dcm"], node.port)
    finally:
        os.umask(previous)
    storage = Path(node.settings.node.storage_dir)
    database = Path(node.settings.node.database_url.removeprefix("sqlite:///"))
    for folder in (storage, storage / "incoming"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    files = [*storage.rglob("*.dcm"), database]
    files += [Path(f"{database}{s}") for s in ("-wal", "-shm") if Path(f"{database}{s}").exists()]
    assert len(files) >= 3
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_pynetdicom_is_quiet_below_warning_unless_debug() -> None:
    quiet_libraries("INFO")
    assert logging.getLogger("pynetdicom").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("pynetdicom.acse").isEnabledFor(logging.INFO) is False
    assert not logging.getLogger("pydicom.pixels.decoders.base").isEnabledFor(logging.ERROR)
    cut = logging.LogRecord(
        "pynetdicom.dul",
        logging.ERROR,
        "",
        0,
        "The received PDU is shorter than expected (6 of 1006 bytes received)",
        None,
        None,
    )
    assert not logging.getLogger("pynetdicom.dul").filter(cut)  # the node says it instead
    quiet_libraries("DEBUG")
    assert logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("pynetdicom.dul").filter(cut)
    quiet_libraries("INFO")
