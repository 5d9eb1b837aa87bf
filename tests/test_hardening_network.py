"""Hostile and careless peers (issue 11, item 1 and the C-STORE without UIDs of item 6).

Raw TCP sockets play the half-open and idle peers; dcmtk's echoscu/storescu and pynetdicom
play the legitimate senders.
"""

from __future__ import annotations

import socket
import struct
import time
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import UltrasoundImageStorage, Verification

from tests.node_support import (
    ServeProcess,
    StartNode,
    echo_while_holding,
    node_sections,
    storescu_keep,
    write_config,
)
from tests.peers import echoscu, free_port


@pytest.fixture
def start_node(start_node: StartNode, require_dcmtk: None) -> StartNode:
    """The shared paused-node starter (tests/conftest.py), with dcmtk required."""
    return start_node


def half_open(port: int, count: int) -> list[socket.socket]:
    """Open ``count`` connections that send the first 6 bytes of an A-ASSOCIATE-RQ only."""
    peers = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(struct.pack(">BBL", 0x01, 0x00, 1000))  # announces 1000 bytes, sends none
        peers.append(sock)
    return peers


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Return whether the other end closes ``sock`` within ``timeout`` seconds."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except TimeoutError:
        return False
    except OSError:  # reset by the peer
        return True


def test_half_open_peers_do_not_lock_out_senders(start_node: StartNode) -> None:
    node = start_node(node={"max_associations": 2, "association_request_timeout": 1.0})
    peers = half_open(node.port, 10)
    try:
        # Slots are for established associations: a sender is served while they hang.
        started = time.monotonic()
        assert echoscu(node.port, called_aet="SSWE_NODE")
        assert echoscu(node.port, called_aet="SSWE_NODE")
        assert time.monotonic() - started < 5
        # The node closes each half-sent request after the request timeout.
        assert all(closed_by_peer(p, timeout=5) for p in peers)
    finally:
        for p in peers:
            p.close()


def test_idle_connections_are_closed_after_the_request_timeout(start_node: StartNode) -> None:
    node = start_node(node={"association_request_timeout": 1.0, "acse_timeout": 30.0})
    idle = socket.create_connection(("127.0.0.1", node.port), timeout=5)
    try:
        started = time.monotonic()
        assert closed_by_peer(idle, timeout=10)
        assert time.monotonic() - started < 5  # not the 30 s ACSE timeout
    finally:
        idle.close()


def test_limit_counts_established_associations_only(
    start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    node = start_node(node={"max_associations": 1})
    scu, second = echo_while_holding(node.port)
    assert second.returncode != 0
    assert "Local Limit Exceeded" in second.stderr
    lines = [r.getMessage() for r in caplog.records if "association-rejected" in r.getMessage()]
    assert any("reason=local-limit-exceeded established=1 limit=1" in m for m in lines), lines
    # Rejected associations do not hold the slot: senders one after the other all pass.
    for _ in range(5):
        deadline = time.monotonic() + 5
        while not echoscu(node.port, called_aet="SSWE_NODE"):
            assert time.monotonic() < deadline, "rejected with the slot free"
            time.sleep(0.05)


def test_sigterm_exits_in_time_with_a_half_sent_request(tmp_path: Path) -> None:
    port = free_port()
    sections = node_sections(
        tmp_path,
        port=port,
        node={"association_request_timeout": 30.0, "shutdown_timeout": 4.0},
        processing={"paused": True},
    )
    config = write_config(tmp_path / "node.toml", sections)
    serve = ServeProcess(config, port, tmp_path / "serve.log")
    peers = half_open(port, 3)
    held = AE(ae_title="HOLDER")
    held.add_requested_context(Verification)
    assoc = held.associate("127.0.0.1", port, ae_title="SSWE_NODE")  # an idle, established one
    try:
        assert assoc.is_established
        started = time.monotonic()
        assert serve.terminate(timeout=15) == 0
        assert time.monotonic() - started < 4.0 + 2.0, serve.log()[-2000:]
    finally:
        serve.kill()
        for p in peers:
            p.close()
        if assoc.is_established:
            assoc.abort()


def _store_without_uid(port: int, uid: str | None) -> tuple[float, int | None]:
    """Send a C-STORE whose Affected SOP Instance UID is ``uid`` (None: absent)."""
    ae = AE(ae_title="CARELESS")
    ae.add_requested_context(UltrasoundImageStorage, ExplicitVRLittleEndian)
    ae.dimse_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title="SSWE_NODE")
    assert assoc.is_established
    try:
        ds = dcmread(get_testdata_file("US1_UNCR.dcm"))
        req = C_STORE()
        req.MessageID = 7
        req.Priority = 2
        req.AffectedSOPClassUID = UltrasoundImageStorage
        req._affected_sop_instance_uid = uid  # noqa: SLF001 - what a broken sender puts there
        req.DataSet = BytesIO(encode(ds, False, True))
        # As pynetdicom's own send_c_store does: pause the reactor so it leaves us the reply.
        assoc._reactor_checkpoint.clear()  # noqa: SLF001
        while not assoc._is_paused:  # noqa: SLF001
            time.sleep(0.001)
        started = time.monotonic()
        try:
            assoc.dimse.send_msg(req, assoc.accepted_contexts[0].context_id)
            _, rsp = assoc.dimse.get_msg(block=True)
        finally:
            assoc._reactor_checkpoint.set()  # noqa: SLF001
        status = int(rsp.Status) if rsp is not None and rsp.Status is not None else None
        return time.monotonic() - started, status
    finally:
        assoc.release()


@pytest.mark.parametrize("uid", ["", None])
def test_store_without_sop_instance_uid_is_answered_at_once(
    start_node: StartNode, uid: str | None
) -> None:
    node = start_node()
    seconds, status = _store_without_uid(node.port, uid)
    assert status == 0xC210
    assert seconds < 5
    # The association is still usable and nothing was kept.
    storescu_keep([Path(get_testdata_file("US1_UNCR.dcm"))], node.port)
    assert len(list(Path(node.settings.node.storage_dir, "incoming").glob("*.dcm"))) == 1
