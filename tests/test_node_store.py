"""The case store on a real SQLite file and a real PostgreSQL server: receive, claim, finish,
resend, resume, send queue."""

from __future__ import annotations

import datetime as dt
import itertools
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from sswe_node.config import SendingSettings
from sswe_node.node.records import CaseFinish, CaseOutcome, OutputRecord, ReceivedInstance, Target
from sswe_node.node.schema import utcnow
from sswe_node.node.sender import backoff_seconds
from sswe_node.node.storage import atomic_write, incoming_path
from sswe_node.node.store import CaseStore
from tests.node_support import Postgres

_DATABASE_NUMBERS = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh case store URL: an SQLite file (the default), or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'cases.db'}"
    server: Postgres = request.getfixturevalue("postgres")
    return server.create_database(f"cases_{next(_DATABASE_NUMBERS)}")


def _store(url: str) -> CaseStore:
    return CaseStore(url)


def _received(uid: str, path: str = "/x.dcm") -> ReceivedInstance:
    return ReceivedInstance(
        sop_instance_uid=uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.6.1", path=path,
        patient_id="P1", calling_ae="SCANNER",
    )  # fmt: skip


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    store = _store(f"sqlite:///{tmp_path / 'db' / 'cases.db'}")
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    store.close()


def test_case_life_cycle_and_send_queue(url: str) -> None:
    store = _store(url)
    first = store.record_received(_received("1.2.3.1"))
    store.record_received(_received("1.2.3.2"))
    claimed = store.claim(1)
    assert [c.id for c in claimed] == [first]
    assert store.pending_count() == 1

    outputs = [OutputRecord("1.2.9.1", "1.2.840.10008.5.1.4.1.1.30", "/o1.dcm")]
    targets = [Target("pacs", "PACS", "127.0.0.1", 4242), Target("ai", "AI", "127.0.0.1", 4243)]
    store.finish(first, CaseOutcome("done", layout="bmode", frames=1), outputs, targets)
    jobs = store.due_sends()
    assert sorted(j.destination for j in jobs) == ["ai", "pacs"]

    # A failed attempt is queued again later, not due now; then sent.
    pacs = next(j for j in jobs if j.destination == "pacs")
    store.mark_send_failed(pacs.id, "association failed", utcnow() + dt.timedelta(hours=1))
    assert [j.destination for j in store.due_sends()] == ["ai"]
    store.mark_sent(next(j for j in jobs if j.destination == "ai").id)
    assert store.due_sends() == []
    assert store.counts()["sends"] == {"queued": 1, "sent": 1, "failed": 0}

    listed = store.list_cases(status="done")
    assert listed[0]["outputs"] == 1
    assert listed[0]["sends"] == {"queued": 1, "sent": 1, "failed": 0}
    store.close()


def test_resend_requeues_without_duplicates(url: str) -> None:
    store = _store(url)
    case = store.record_received(_received("1.2.3.1"))
    store.claim(10)
    outputs = [OutputRecord("1.2.9.1", "1.2.840.10008.5.1.4.1.1.30", "/o1.dcm")]
    target = [Target("pacs", "PACS", "127.0.0.1", 4242)]
    store.finish(case, CaseOutcome("done"), outputs, target)
    store.mark_sent(store.due_sends()[0].id)

    again = store.record_received(_received("1.2.3.1"))
    assert again == case
    assert store.list_cases()[0]["times_received"] == 2
    store.claim(10)
    store.finish(case, CaseOutcome("done"), outputs, target)
    assert len(store.list_sends()) == 1
    assert store.list_sends()[0]["status"] == "queued"
    store.close()


def test_resend_while_processing_keeps_case_pending(url: str) -> None:
    store = _store(url)
    case = store.record_received(_received("1.2.3.1"))
    store.claim(10)
    store.record_received(_received("1.2.3.1"))  # arrives again mid-processing
    store.finish(case, CaseOutcome("failed", "corrupt", "corrupt: old copy"))
    assert store.list_cases()[0]["status"] == "received"
    store.close()


def test_resume_after_crash(url: str) -> None:
    store = _store(url)
    store.record_received(_received("1.2.3.1"))
    crashed = subprocess.Popen(["true"])  # a worker process of this host that has gone
    crashed.wait()
    store.claim(10, owner=f"{socket.gethostname()}:{crashed.pid}:0")
    store.close()
    reopened = _store(url)  # as after a restart
    assert reopened.resume() == 1
    assert [c.sop_instance_uid for c in reopened.claim(10)] == ["1.2.3.1"]
    reopened.close()


def test_filters(url: str) -> None:
    store = _store(url)
    for i in range(3):
        store.record_received(_received(f"1.2.3.{i}"))
    for case in store.claim(2):
        store.finish(case.id, CaseOutcome("skipped", "wrong-modality", "wrong-modality: CT"))
    assert len(store.list_cases(reason="wrong-modality")) == 2
    assert len(store.list_cases(status="received")) == 1
    assert store.list_cases(calling_ae="OTHER") == []
    assert len(store.list_cases(since=utcnow() - dt.timedelta(minutes=5))) == 3
    store.close()


def test_backoff_is_exponential_and_capped() -> None:
    settings = SendingSettings(
        initial_backoff_seconds=2.0, max_backoff_seconds=10.0, backoff_jitter=0.0
    )  # jitter: tests/test_hardening_sends.py
    assert [backoff_seconds(n, settings) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    path = incoming_path(tmp_path, "1.2.3.4")
    atomic_write(path, [b"a" * 10, b"b"])
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == ["1.2.3.4.dcm"]
    assert incoming_path(tmp_path, "../../etc/passwd").parent == path.parent


def test_concurrent_claims_never_share_a_case(url: str) -> None:
    # Two node processes (or workers) claiming from one store each get their own cases.
    stores = [_store(url), _store(url)]
    for i in range(40):
        stores[0].record_received(_received(f"1.2.3.{i}"))
    claimed: list[list[int]] = [[], []]

    def _claim(index: int) -> None:
        while batch := stores[index].claim(3):
            claimed[index] += [c.id for c in batch]

    threads = [threading.Thread(target=_claim, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    everything = claimed[0] + claimed[1]
    assert sorted(everything) == sorted(set(everything))
    assert len(everything) == 40
    for store in stores:
        store.close()


def test_postgresql_url_without_driver_uses_psycopg(postgres: Postgres) -> None:
    store = _store(postgres.create_database("plain_url"))
    assert store.engine.dialect.name == "postgresql"
    assert store.engine.dialect.driver == "psycopg"
    store.record_received(_received("1.2.3.1"))
    assert store.counts()["cases"]["received"] == 1
    store.close()


def test_overlong_identifiers_are_clipped(url: str) -> None:
    # PostgreSQL refuses values longer than a column; a non-conformant scanner must not make
    # every C-STORE fail (SQLite would keep them whole).
    store = _store(url)
    info = _received("1.2.3.1")
    info.patient_id, info.accession_number = "P" * 100, "A" * 80
    store.record_received(info)
    [case] = store.list_cases()
    assert (case["patient_id"], case["accession_number"]) == ("P" * 64, "A" * 64)
    store.close()


def test_finish_many_records_a_batch_at_once(url: str) -> None:
    store = _store(url)
    first = store.record_received(_received("1.2.3.1"))
    second = store.record_received(_received("1.2.3.2"))
    third = store.record_received(_received("1.2.3.3"))
    store.claim(10)
    store.record_received(_received("1.2.3.3"))  # arrives again mid-processing
    target = [Target("pacs", "PACS", "127.0.0.1", 4242), Target("b", "B", "127.0.0.1", 104)]
    pm, sc = "1.2.840.10008.5.1.4.1.1.30", "1.2.840.10008.5.1.4.1.1.7"
    queued = store.finish_many(
        [
            CaseFinish(first, CaseOutcome("done"), [OutputRecord("9.1", pm, "/a"),
                                                    OutputRecord("9.2", sc, "/b")], target),
            CaseFinish(second, CaseOutcome("failed", "corrupt", "corrupt: x")),
            CaseFinish(third, CaseOutcome("done"), [OutputRecord("9.3", pm, "/c")], target),
        ]
    )  # fmt: skip
    assert queued == 4  # the superseded third case queues nothing
    status = {c["sop_instance_uid"]: c["status"] for c in store.list_cases()}
    assert status == {"1.2.3.1": "done", "1.2.3.2": "failed", "1.2.3.3": "received"}
    assert len(store.due_sends(destination=("PACS", "127.0.0.1", 4242, False))) == 2
    assert store.work_in_progress() == 1
    # Processed again (a resend): the same outputs and sends are queued again, not duplicated.
    store.record_received(_received("1.2.3.1"))
    (again,) = [c for c in store.claim(10) if c.id == first]
    for send in store.due_sends():
        store.mark_sent(send.id)
    outputs = [OutputRecord("9.1", pm, "/a"), OutputRecord("9.2", sc, "/b")]
    assert store.finish_many([CaseFinish(again.id, CaseOutcome("done"), outputs, target)]) == 4
    assert len(store.list_sends()) == 4
    assert store.counts()["sends"] == {"queued": 4, "sent": 0, "failed": 0}
    store.close()
