"""The receiving path's shortcuts: received files linked into place, contexts copied fast,
batches that stop waiting when no burst arrives. Each keeps the persist-before-success rule."""

from __future__ import annotations

import copy
import os
import queue
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE, dimse_messages
from pynetdicom import association as association_module
from pynetdicom.sop_class import Verification

from sswe_node.config import load_settings
from sswe_node.node import worker as worker_module
from sswe_node.node.metrics import Metrics
from sswe_node.node.records import ReceivedInstance
from sswe_node.node.scp import _Contexts, _ReactorClock, build_ae
from sswe_node.node.storage import (
    INCOMING,
    TooLargeError,
    atomic_write_many,
    file_sha256,
    stage_incoming,
)
from sswe_node.node.store import CaseStore
from sswe_node.node.worker import BATCH_GAP_SECONDS, Worker
from tests.node_support import StartNode, storescu_keep


def test_a_received_file_is_linked_not_copied(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    (storage / INCOMING).mkdir(parents=True)
    received = storage / INCOMING / ".tmp-recv-x.dcm"
    received.write_bytes(Path(get_testdata_file("US1_UNCR.dcm")).read_bytes())
    staged, sha256, size = stage_incoming(storage, received)
    assert staged.parent == storage / INCOMING and staged.name.startswith(".tmp-")
    assert os.stat(staged).st_ino == os.stat(received).st_ino  # the same bytes on disk
    assert (sha256, size) == (file_sha256(received), received.stat().st_size)
    received.unlink()  # as pynetdicom does after the handler: the staged file stays whole
    assert file_sha256(staged) == sha256
    with pytest.raises(TooLargeError):
        stage_incoming(storage, staged, max_bytes=size - 1)
    assert sorted(p.name for p in (storage / INCOMING).iterdir()) == [staged.name]


def test_a_file_that_cannot_be_linked_is_copied(tmp_path: Path, monkeypatch) -> None:
    storage = tmp_path / "storage"
    source = tmp_path / "elsewhere.dcm"  # as if on another file system
    source.write_bytes(Path(get_testdata_file("US1_UNCR.dcm")).read_bytes())

    def cross_device(*_args: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    staged, sha256, size = stage_incoming(storage, source)
    assert os.stat(staged).st_ino != os.stat(source).st_ino
    assert staged.read_bytes() == source.read_bytes() and sha256 == file_sha256(source)


def test_chunked_receive_writes_into_the_incoming_folder(
    start_node: StartNode, require_dcmtk: None, tmp_path: Path
) -> None:
    node = start_node()
    incoming = Path(node.settings.node.storage_dir) / INCOMING
    handle = dimse_messages.NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")
    handle.close()
    assert Path(handle.name).parent == incoming and Path(handle.name).name.startswith(".tmp-")
    Path(handle.name).unlink()
    source = Path(get_testdata_file("US1_UNCR.dcm"))
    storescu_keep([source], node.port)
    stored = incoming / f"{dcmread(source).SOPInstanceUID}.dcm"
    assert dcmread(stored).PixelData == dcmread(source).PixelData
    assert [p for p in incoming.iterdir() if p.name.startswith(".tmp-")] == []
    node.stop(grace_seconds=5)
    handle = dimse_messages.NamedTemporaryFile(delete=True)
    assert Path(handle.name).parent != incoming  # back to pynetdicom's own once stopped
    handle.close()


def test_contexts_copy_like_a_deep_copy() -> None:
    contexts = build_ae(load_settings()).supported_contexts
    fast = copy.deepcopy(_Contexts(contexts))
    slow = copy.deepcopy(contexts)
    assert [vars(c) for c in fast] == [vars(c) for c in slow]
    fast[0].transfer_syntax.append("1.2.3")  # a copy of its own, as pynetdicom needs
    assert "1.2.3" not in contexts[0].transfer_syntax
    assert all(a is not b for a, b in zip(fast, contexts, strict=True))


def _worker(tmp_path: Path, wait: float) -> tuple[Worker, CaseStore, threading.Event]:
    settings = load_settings(
        overrides={
            "node.storage_dir": str(tmp_path / "storage"),
            "node.database_url": f"sqlite:///{tmp_path / 'cases.db'}",
            "processing.batch_size": 16,
            "processing.batch_wait_seconds": wait,
        }
    )
    store = CaseStore(settings.node.database_url)
    wake = threading.Event()
    worker = Worker(store, settings, wake, threading.Event(), threading.Event(), Metrics())
    return worker, store, wake


def _receive(store: CaseStore, wake: threading.Event, uid: str) -> None:
    store.record_received(ReceivedInstance(uid, "1.2.840.10008.5.1.4.1.1.6.1", f"/x/{uid}.dcm"))
    wake.set()


def test_a_lone_capture_does_not_wait_out_the_batch_wait(tmp_path: Path) -> None:
    worker, store, wake = _worker(tmp_path, wait=30.0)
    _receive(store, wake, "1.2.3.1")
    started = time.monotonic()
    batch = worker._next_batch()
    assert [c.sop_instance_uid for c in batch] == ["1.2.3.1"]
    assert time.monotonic() - started < 15.0  # not the 30 s batch wait
    store.close()


def test_a_burst_is_gathered_into_one_batch(tmp_path: Path, monkeypatch) -> None:
    # A wide gap, so that a loaded test machine's scheduling does not split the burst.
    monkeypatch.setattr(worker_module, "BATCH_GAP_SECONDS", 1.0)
    worker, store, wake = _worker(tmp_path, wait=30.0)
    _receive(store, wake, "1.2.4.0")

    def burst() -> None:
        for i in range(1, 16):
            time.sleep(BATCH_GAP_SECONDS / 2)
            _receive(store, wake, f"1.2.4.{i}")

    sender = threading.Thread(target=burst)
    sender.start()
    batch = worker._next_batch()
    sender.join()
    assert len(batch) > 1  # kept waiting while instances kept coming
    assert len(batch) + len(worker._next_batch()) == 16
    store.close()


def test_files_written_together_are_all_in_place_or_reported(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_bytes(b"a file where a folder should be")
    items = [
        (tmp_path / "out" / "a.dcm", b"first"),
        (tmp_path / "blocked" / "b.dcm", b"cannot be written"),
        (tmp_path / "out" / "c.dcm", lambda handle: handle.write(b"third")),
        (tmp_path / "out" / "d.dcm", [b"fou", b"rth"]),
    ]
    errors = atomic_write_many(items, threads=2)
    assert [error is None for error in errors] == [True, False, True, True]
    assert isinstance(errors[1], OSError)
    assert (tmp_path / "out" / "a.dcm").read_bytes() == b"first"
    assert (tmp_path / "out" / "c.dcm").read_bytes() == b"third"
    assert (tmp_path / "out" / "d.dcm").read_bytes() == b"fourth"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.dcm", "c.dcm", "d.dcm"]

    def fails(handle) -> None:
        handle.write(b"half")
        raise OSError(28, "No space left on device")

    errors = atomic_write_many([(tmp_path / "out" / "a.dcm", fails)])
    assert isinstance(errors[0], OSError)
    assert (tmp_path / "out" / "a.dcm").read_bytes() == b"first"  # the old file, whole
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.dcm", "c.dcm", "d.dcm"]


def test_a_node_association_waits_on_its_queue(start_node: StartNode) -> None:
    node = start_node()
    scu = AE(ae_title="HOLDER")
    scu.add_requested_context(Verification)
    assoc = scu.associate("127.0.0.1", node.port, ae_title="SSWE_NODE")
    try:
        assert assoc.is_established
        acceptors = [a for a in node.server.active_associations if a.is_established]
        assert acceptors and all(getattr(a, "_sswe_quiet", False) for a in acceptors)
        assert isinstance(association_module.time, _ReactorClock)
        assert assoc.send_c_echo().Status == 0x0000  # served at once, released below
    finally:
        assoc.release()
    assert assoc.is_released


def test_the_reactor_clock_returns_when_a_message_waits() -> None:
    class Dimse:
        msg_queue: queue.Queue = queue.Queue()

    me = threading.current_thread()
    me.dimse = Dimse()  # type: ignore[attr-defined]
    me._sswe_quiet = True  # type: ignore[attr-defined]
    try:
        Dimse.msg_queue.put((1, "message"))
        _ReactorClock.sleep(0.001)  # returns at once, leaving the message for the reactor
        assert Dimse.msg_queue.qsize() == 1
        Dimse.msg_queue.get()
        woken = threading.Timer(0.2, lambda: Dimse.msg_queue.put((1, "late")))
        woken.start()
        _ReactorClock.sleep(0.001)  # an empty queue: at most QUIET_WAIT_SECONDS
        woken.join()
    finally:
        del me.dimse, me._sswe_quiet  # type: ignore[attr-defined]
    assert _ReactorClock().monotonic is time.monotonic  # everything else is the time module
