"""Each queued output is sent once (issue 11, item 5), and the back-off has jitter (issue 14).

The destination is dcmtk's storescp with unique file names: every C-STORE it receives is one
file, so a duplicate send is a second file, whatever the SOP Instance UID.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from sswe_node.config import SendingSettings, TlsSettings
from sswe_node.node.metrics import Metrics
from sswe_node.node.records import CaseOutcome, OutputRecord, ReceivedInstance, Target
from sswe_node.node.sender import Sender, backoff_seconds
from sswe_node.node.store import CaseStore
from tests.peers import dcmtk_env, free_port, wait_for_port


def _queue_outputs(store: CaseStore, folder: Path, port: int, count: int, make_us_source) -> None:
    """Record ``count`` done cases, each with one output queued to 127.0.0.1:port."""
    folder.mkdir()
    source = make_us_source(rows=16, cols=16, regions=False)
    target = Target("storescp", "STORESCP", "127.0.0.1", port)
    for i in range(count):
        source.SOPInstanceUID = source.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = folder / f"{i}.dcm"
        source.save_as(path, enforce_file_format=True)
        case = store.record_received(
            ReceivedInstance(f"1.2.3.{i}", str(source.SOPClassUID), str(path))
        )
        store.claim(1)
        record = OutputRecord(str(source.SOPInstanceUID), str(source.SOPClassUID), str(path))
        store.finish(case, CaseOutcome("done"), [record], [target])


def _sent_total(metrics: Metrics) -> float:
    for line in metrics.render({}).splitlines():
        if line.startswith("sswe_sent_total{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize(("outage", "senders"), [("seen", 1), ("seen", 2), ("before-start", 2)])
def test_300_queued_outputs_are_each_sent_once_when_the_destination_comes_back(
    tmp_path: Path, make_us_source, require_dcmtk: None, outage: str, senders: int
) -> None:
    """``seen``: the senders try during the outage; ``before-start``: the outage ended while
    the node was down (a restart), so every output is due at once. Two senders share the
    store as two node processes (or replicas) do."""
    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    port = free_port()
    _queue_outputs(store, tmp_path / "outputs", port, 300, make_us_source)
    stop, metrics = threading.Event(), Metrics()
    sending = SendingSettings(
        initial_backoff_seconds=0.2, max_backoff_seconds=0.5, max_attempts=1000
    )
    pool = [
        Sender(
            CaseStore(store.url),
            "SSWE_NODE",
            sending,
            TlsSettings(),
            threading.Event(),
            stop,
            metrics,
            poll_seconds=0.1,
        )  # fmt: skip
        for _ in range(senders)
    ]
    received = tmp_path / "received"
    received.mkdir()
    destination = None

    def destination_up() -> subprocess.Popen:
        up = subprocess.Popen(
            ["/usr/bin/storescp", "--fork", "+uf", "-od", str(received), str(port)],
            env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(port)
        return up

    try:
        if outage == "before-start":
            destination = destination_up()
        for sender in pool:
            sender.start()
        if outage == "seen":
            deadline = time.monotonic() + 30
            while min(s["attempts"] for s in store.list_sends()) < 1:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            destination = destination_up()
        deadline = time.monotonic() + 120
        while store.counts()["sends"]["sent"] < 300:
            assert time.monotonic() < deadline, store.counts()
            time.sleep(0.2)
        time.sleep(1.0)  # anything sent twice would arrive now
    finally:
        stop.set()
        for sender in pool:
            sender.join(timeout=30)
            sender.store.close()
        if destination is not None:
            destination.terminate()
            destination.wait(timeout=10)
        store.close()
    files = list(received.iterdir())
    assert len(files) == 300, f"{len(files) - 300} duplicate C-STOREs"
    assert _sent_total(metrics) == 300


def test_claimed_sends_are_not_handed_out_twice(tmp_path: Path, make_us_source) -> None:
    store = CaseStore(f"sqlite:///{tmp_path / 'cases.db'}")
    _queue_outputs(store, tmp_path / "outputs", free_port(), 5, make_us_source)
    first = store.claim_sends("host:1:1", limit=3)
    second = store.claim_sends("host:2:1", limit=10)
    assert len(first) == 3 and len(second) == 2
    assert not {j.id for j in first} & {j.id for j in second}
    assert store.due_sends(limit=10) == []  # all held
    assert store.mark_sent(first[0].id, "host:1:1")
    assert not store.mark_sent(first[0].id, "host:1:1")  # recorded (and counted) once
    assert store.release_sends([j.id for j in first], "host:1:1") == 2
    assert len(store.claim_sends("host:3:1", limit=10)) == 2
    # An expired lease is taken over.
    store.release_sends([j.id for j in second], "host:2:1")
    held = store.claim_sends("host:4:1", limit=10, lease_seconds=-1.0)
    assert len(held) == 2 and len(store.claim_sends("host:5:1", limit=10)) == 2
    store.close()


def test_backoff_has_jitter() -> None:
    settings = SendingSettings(initial_backoff_seconds=4.0, max_backoff_seconds=60.0)
    rng = random.Random(1)
    waits = [backoff_seconds(3, settings, rng) for _ in range(50)]
    assert all(16.0 * 0.75 <= w <= 16.0 for w in waits)
    assert len(set(waits)) > 40  # spread, not one instant for every send
    flat = SendingSettings(initial_backoff_seconds=4.0, backoff_jitter=0.0)
    assert backoff_seconds(3, flat) == 16.0
    assert backoff_seconds(30, flat) == 600.0
