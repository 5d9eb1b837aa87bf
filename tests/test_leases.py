"""Case leases on a real SQLite file and a real PostgreSQL server: claims record their owner,
renewals keep them, only expired (or dead local) leases are taken back."""

from __future__ import annotations

import datetime as dt
import itertools
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from sswe_node.node.leases import owner_is_dead, parse_owner, process_owner
from sswe_node.node.records import CaseFinish, CaseOutcome, ReceivedInstance
from sswe_node.node.schema import Case, utcnow
from sswe_node.node.store import CaseStore

_NUMBERS = itertools.count()
OTHER = "other-machine:4242:1700000000"  # a replica elsewhere: never judged dead from here


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CaseStore]:
    """A fresh case store: an SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cases.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database(f"leases_{next(_NUMBERS)}")
    opened = CaseStore(url)
    yield opened
    opened.close()


def _receive(store: CaseStore, uid: str) -> int:
    return store.record_received(
        ReceivedInstance(sop_instance_uid=uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.6.1",
                         path=f"/{uid}.dcm")
    )  # fmt: skip


def _row(store: CaseStore, case_id: int) -> Case:
    with store.session() as session:
        case = session.get(Case, case_id)
        assert case is not None
        return case


def _expire(store: CaseStore, case_id: int) -> None:
    with store.session() as session, session.begin():
        past = utcnow() - dt.timedelta(seconds=1)
        session.execute(update(Case).where(Case.id == case_id).values(lease_expires_at=past))


def _dead_local_owner() -> str:
    child = subprocess.Popen(["true"])
    child.wait()
    return f"{socket.gethostname()}:{child.pid}:{int(time.time())}"


def test_owner_identity() -> None:
    owner = process_owner()
    host, pid, start = parse_owner(owner) or ("", 0, 0)
    assert (host, pid) == (socket.gethostname(), __import__("os").getpid())
    assert abs(start - time.time()) < 24 * 3600
    assert not owner_is_dead(owner)
    assert not owner_is_dead(OTHER)
    assert owner_is_dead(_dead_local_owner())
    assert parse_owner("nonsense") is None


def test_claim_records_owner_and_lease(store: CaseStore) -> None:
    case_id = _receive(store, "1.2.3.1")
    before = utcnow()
    [claimed] = store.claim(10, OTHER, lease_seconds=30)
    assert claimed.id == case_id
    row = _row(store, case_id)
    assert row.status == "processing" and row.owner == OTHER
    assert row.lease_expires_at is not None
    assert 25 < (row.lease_expires_at - before).total_seconds() < 35


def test_live_lease_is_neither_resumed_nor_claimed(store: CaseStore) -> None:
    case_id = _receive(store, "1.2.3.1")
    store.claim(10, OTHER, lease_seconds=30)
    assert store.resume() == 0  # another replica starting up leaves it alone
    assert store.claim(10, "me:1:1") == []
    assert _row(store, case_id).owner == OTHER


def test_expired_lease_is_taken_back_by_anyone(store: CaseStore) -> None:
    case_id = _receive(store, "1.2.3.1")
    store.claim(10, OTHER, lease_seconds=30)
    _expire(store, case_id)
    [claimed] = store.claim(10, "me:1:1", lease_seconds=30)
    assert claimed.id == case_id and _row(store, case_id).owner == "me:1:1"
    # The old holder comes back: it no longer holds the case, and its outcome is not recorded.
    assert store.renew([case_id], OTHER) == set()
    store.finish_many([CaseFinish(case_id, CaseOutcome("failed", "internal", "late"))], OTHER)
    assert _row(store, case_id).status == "processing"
    store.finish_many([CaseFinish(case_id, CaseOutcome("done"))], "me:1:1")
    row = _row(store, case_id)
    assert row.status == "done" and row.lease_expires_at is None


def test_renewal_keeps_the_lease(store: CaseStore) -> None:
    case_id = _receive(store, "1.2.3.1")
    store.claim(10, OTHER, lease_seconds=1)
    first = _row(store, case_id).lease_expires_at
    assert store.renew([case_id], OTHER, lease_seconds=60) == {case_id}
    renewed = _row(store, case_id).lease_expires_at
    assert first is not None and renewed is not None and renewed > first
    assert store.renew([case_id], "me:1:1", lease_seconds=60) == set()  # not its lease
    time.sleep(1.1)  # the first lease would have run out by now
    assert store.claim(10, "me:1:1") == []


def test_resume_takes_back_expired_dead_and_unleased_only(store: CaseStore) -> None:
    live, expired, dead, legacy = (_receive(store, f"1.2.3.{i}") for i in range(4))
    store.claim(1, OTHER, lease_seconds=30)
    store.claim(1, "far-away:7:1", lease_seconds=30)
    store.claim(1, _dead_local_owner(), lease_seconds=30)
    store.claim(1, OTHER, lease_seconds=30)
    _expire(store, expired)
    with store.session() as session, session.begin():  # as left by 0.1.0: no lease at all
        session.execute(
            update(Case).where(Case.id == legacy).values(owner=None, lease_expires_at=None)
        )
    assert store.resume() == 3
    statuses = {c["id"]: c["status"] for c in store.list_cases()}
    assert statuses == {live: "processing", expired: "received", dead: "received",
                        legacy: "received"}  # fmt: skip


def test_resend_drops_the_old_holder(store: CaseStore) -> None:
    case_id = _receive(store, "1.2.3.1")
    store.claim(10, OTHER)
    assert _receive(store, "1.2.3.1") == case_id  # received again mid-processing
    assert store.renew([case_id], OTHER) == set()
    [claimed] = store.claim(10, "me:1:1")
    store.finish_many([CaseFinish(case_id, CaseOutcome("done"))], OTHER)  # the old copy
    assert _row(store, case_id).status == "processing"
    assert claimed.id == case_id
