"""The case store on a real SQLite file: receive, claim, finish, resend, resume, send queue."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import text

from sswe_node.config import SendingSettings
from sswe_node.node.sender import backoff_seconds
from sswe_node.node.storage import atomic_write, incoming_path
from sswe_node.node.store import (
    CaseOutcome,
    CaseStore,
    OutputRecord,
    ReceivedInstance,
    Target,
    utcnow,
)


def _store(tmp_path: Path) -> CaseStore:
    return CaseStore(f"sqlite:///{tmp_path / 'db' / 'cases.db'}")


def _received(uid: str, path: str = "/x.dcm") -> ReceivedInstance:
    return ReceivedInstance(
        sop_instance_uid=uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.6.1", path=path,
        patient_id="P1", calling_ae="SCANNER",
    )  # fmt: skip


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    store.close()


def test_case_life_cycle_and_send_queue(tmp_path: Path) -> None:
    store = _store(tmp_path)
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


def test_resend_requeues_without_duplicates(tmp_path: Path) -> None:
    store = _store(tmp_path)
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


def test_resend_while_processing_keeps_case_pending(tmp_path: Path) -> None:
    store = _store(tmp_path)
    case = store.record_received(_received("1.2.3.1"))
    store.claim(10)
    store.record_received(_received("1.2.3.1"))  # arrives again mid-processing
    store.finish(case, CaseOutcome("failed", "corrupt", "corrupt: old copy"))
    assert store.list_cases()[0]["status"] == "received"
    store.close()


def test_resume_after_crash(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.record_received(_received("1.2.3.1"))
    store.claim(10)
    store.close()
    reopened = _store(tmp_path)  # as after a restart
    assert reopened.resume() == 1
    assert [c.sop_instance_uid for c in reopened.claim(10)] == ["1.2.3.1"]
    reopened.close()


def test_filters(tmp_path: Path) -> None:
    store = _store(tmp_path)
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
    settings = SendingSettings(initial_backoff_seconds=2.0, max_backoff_seconds=10.0)
    assert [backoff_seconds(n, settings) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    path = incoming_path(tmp_path, "1.2.3.4")
    atomic_write(path, [b"a" * 10, b"b"])
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == ["1.2.3.4.dcm"]
    assert incoming_path(tmp_path, "../../etc/passwd").parent == path.parent
