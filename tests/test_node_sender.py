"""The persistent send queue against a real Orthanc that is down at first; `sswe-node echo`."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import UltrasoundImageStorage

from sswe_node.cli import main
from sswe_node.config import NodeSettings, SendingSettings, TlsSettings, load_settings
from sswe_node.errors import ConfigError
from sswe_node.node.app import Node
from sswe_node.node.metrics import Metrics
from sswe_node.node.records import CaseOutcome, ClaimedCase, OutputRecord, ReceivedInstance, Target
from sswe_node.node.sender import Sender
from sswe_node.node.store import CaseStore
from sswe_node.node.worker import targets_for
from tests.node_support import make_certificate, node_sections, write_config
from tests.peers import Orthanc, free_port


def _queue_file(store: CaseStore, tmp_path: Path, port: int, tls: bool = False) -> str:
    """Record a done case whose one output (a real US file) goes to 127.0.0.1:port."""
    output = tmp_path / "out.dcm"
    shutil.copy(get_testdata_file("US1_UNCR.dcm"), output)
    ds = dcmread(output, stop_before_pixels=True)
    case = store.record_received(ReceivedInstance("1.2.3.4", str(ds.SOPClassUID), str(output)))
    store.claim(1)
    record = OutputRecord(str(ds.SOPInstanceUID), str(ds.SOPClassUID), str(output))
    target = Target("pacs", "ORTHANC", "127.0.0.1", port, tls)
    store.finish(case, CaseOutcome("done"), [record], [target])
    return str(ds.SOPInstanceUID)


@pytest.fixture
def sender_factory(tmp_path: Path) -> Iterator:
    stops: list[tuple[threading.Event, Sender]] = []

    def _make(store: CaseStore, **sending: float) -> Sender:
        stop = threading.Event()
        settings = SendingSettings(**{"initial_backoff_seconds": 0.2, **sending})
        sender = Sender(
            store, "SSWE_NODE", settings, TlsSettings(), threading.Event(), stop, Metrics(),
            poll_seconds=0.1,
        )  # fmt: skip
        sender.start()
        stops.append((stop, sender))
        return sender

    yield _make
    for stop, sender in stops:
        stop.set()
        sender.join(timeout=10)


def _wait(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_destination_down_then_up_receives_once(tmp_path: Path, sender_factory) -> None:
    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    port = free_port()
    uid = _queue_file(store, tmp_path, port)
    sender_factory(store, max_backoff_seconds=0.5, max_attempts=100)
    _wait(lambda: store.list_sends()[0]["attempts"] >= 2)
    send = store.list_sends()[0]
    assert send["status"] == "queued"
    assert "association" in send["last_error"]

    with Orthanc(tmp_path / "orthanc", dicom_port=port) as orthanc:
        _wait(lambda: store.list_sends()[0]["status"] == "sent")
        found = orthanc.instances()
        assert [i["MainDicomTags"]["SOPInstanceUID"] for i in found] == [uid]
        stats = orthanc.get("/statistics")
        assert stats["CountInstances"] == 1
    assert store.counts()["sends"] == {"queued": 0, "sent": 1, "failed": 0}
    store.close()


def test_gives_up_after_max_attempts(tmp_path: Path, sender_factory) -> None:
    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    _queue_file(store, tmp_path, free_port())
    sender_factory(store, max_backoff_seconds=0.2, max_attempts=2)
    _wait(lambda: store.list_sends()[0]["status"] == "failed")
    assert store.list_sends()[0]["attempts"] == 2
    store.close()


def test_sends_over_tls(tmp_path: Path, sender_factory) -> None:
    key, cert = make_certificate(tmp_path)
    sections = node_sections(
        tmp_path / "dest",
        processing={"paused": True},
        tls={"enabled": True, "certificate": str(cert), "private_key": str(key)},
    )
    destination = Node(load_settings(write_config(tmp_path / "dest.toml", sections)))
    destination.start()
    try:
        store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
        uid = _queue_file(store, tmp_path, destination.port, tls=True)
        stop = threading.Event()
        tls = TlsSettings(ca_certificates=str(cert))
        sender = Sender(
            store, "SSWE_NODE", SendingSettings(), tls, threading.Event(), stop, Metrics(),
            poll_seconds=0.1,
        )  # fmt: skip
        sender.start()
        _wait(lambda: store.list_sends()[0]["status"] == "sent")
        stop.set()
        sender.join(timeout=10)
        received = CaseStore(destination.settings.node.database_url)
        assert [c["sop_instance_uid"] for c in received.list_cases()] == [uid]
        received.close()
        store.close()
    finally:
        destination.stop(grace_seconds=5)


def test_echo_command(orthanc: Orthanc, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["echo", f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"]) == 0
    assert "C-ECHO success" in capsys.readouterr().out
    assert main(["echo", f"NOBODY@127.0.0.1:{free_port()}", "--timeout", "2"]) == 1
    assert "association failed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # a malformed peer is a usage error: exit 2
        main(["echo", "not-a-peer"])
    assert usage.value.code == 2
    assert "AE@HOST:PORT" in capsys.readouterr().err


def test_send_back_targets(tmp_path: Path) -> None:
    sections = node_sections(tmp_path, node={"send_back_to_caller": True, "caller_port": 11112})
    destinations = [{"name": "pacs", "ae_title": "PACS", "host": "10.0.0.5", "port": 104}]
    callers = [
        {"ae_title": "ORTHANC", "port": 4242},
        {"ae_title": "PACS", "host": "10.0.0.5", "port": 104},
        {"ae_title": "SCANNER", "host": "scanner.example", "port": 5678, "tls": True},
    ]
    settings = load_settings(write_config(tmp_path / "node.toml", sections, destinations, callers))

    def targets(calling_ae: str, address: str = "10.0.0.9") -> list[tuple]:
        case = ClaimedCase(1, "1.2.3", "/x.dcm", calling_ae, address)
        return [(t.name, t.ae_title, t.host, t.port, t.tls) for t in targets_for(case, settings)]

    pacs = ("pacs", "PACS", "10.0.0.5", 104, False)
    # A listed caller without host: the address it called from, at its listed port.
    assert targets("ORTHANC") == [pacs, ("caller:ORTHANC", "ORTHANC", "10.0.0.9", 4242, False)]
    assert targets("SCANNER")[1] == ("caller:SCANNER", "SCANNER", "scanner.example", 5678, True)
    assert targets("PACS", "10.0.0.5") == [pacs]  # the caller is a destination: sent once
    assert targets("OTHER") == [pacs, ("caller:OTHER", "OTHER", "10.0.0.9", 11112, False)]
    settings.node.caller_port = 0  # only listed callers get their outputs back
    assert targets("OTHER") == [pacs]
    settings.node.send_back_to_caller = False
    assert targets("ORTHANC") == [pacs]


def test_callers_are_checked(tmp_path: Path) -> None:
    callers = [{"ae_title": "A", "port": 1}, {"ae_title": "A", "port": 2}]
    config = write_config(tmp_path / "node.toml", node_sections(tmp_path), callers=callers)
    with pytest.raises(ConfigError, match=r"callers\[1\]\.ae_title"):
        load_settings(config)


def test_sender_uses_the_node_timeouts(tmp_path: Path) -> None:
    node = NodeSettings(acse_timeout=3.0, dimse_timeout=4.0, network_timeout=5.0)
    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    sender = Sender(
        store, "SSWE_NODE", SendingSettings(), TlsSettings(), threading.Event(),
        threading.Event(), Metrics(), timeouts=node,
    )  # fmt: skip
    ae = sender.new_ae()
    assert (ae.connection_timeout, ae.acse_timeout) == (3.0, 3.0)
    assert (ae.dimse_timeout, ae.network_timeout) == (4.0, 5.0)
    assert ae.maximum_pdu_size == 0 and ae.ae_title == "SSWE_NODE"
    store.close()


def test_sends_stored_bytes_on_one_association(tmp_path: Path, sender_factory) -> None:
    """A peer preferring Implicit VR still gets the stored Explicit VR file, unchanged."""
    received: list[tuple[str, bytes]] = []
    associations: list[int] = []
    ae = AE(ae_title="IMPLICIT")
    ae.add_supported_context(
        UltrasoundImageStorage, [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
    )
    ae.maximum_pdu_size = 0

    def _store(event: Event) -> int:
        received.append(
            (str(event.context.transfer_syntax), bytes(event.request.DataSet.getvalue()))
        )
        return 0

    port = free_port()
    handlers = [(evt.EVT_C_STORE, _store), (evt.EVT_ACCEPTED, lambda e: associations.append(1))]
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    try:
        store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
        source = Path(get_testdata_file("US1_UNCR.dcm"))
        case = store.record_received(ReceivedInstance("1.2.3.4", UltrasoundImageStorage, "/x"))
        store.claim(1)
        records = []
        for index in range(3):
            ds = dcmread(source)
            ds.SOPInstanceUID = f"1.2.3.4.{index}"
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            path = tmp_path / f"out{index}.dcm"
            ds.save_as(path, enforce_file_format=True)
            records.append(OutputRecord(ds.SOPInstanceUID, UltrasoundImageStorage, str(path)))
        target = Target("peer", "IMPLICIT", "127.0.0.1", port)
        store.finish(case, CaseOutcome("done"), records, [target])
        sender_factory(store)
        _wait(lambda: store.counts()["sends"]["sent"] == 3)
        store.close()
    finally:
        server.shutdown()
    assert len(associations) == 1
    assert {syntax for syntax, _ in received} == {ExplicitVRLittleEndian}
    stored = Path(records[0].path).read_bytes()
    assert stored.endswith(received[0][1])  # the dataset bytes as stored, not re-encoded
