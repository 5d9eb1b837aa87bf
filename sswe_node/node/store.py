"""The case store: the repository of cases, outputs and sends over SQLAlchemy.

The tables are in :mod:`sswe_node.node.schema` (under Alembic migrations,
:mod:`sswe_node.node.migrate`); the records passed in and out in :mod:`sswe_node.node.records`.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import and_, create_engine, event, func, or_, select, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from sswe_node.node.leases import owner_is_dead, process_owner
from sswe_node.node.migrate import upgrade
from sswe_node.node.records import (
    CaseFinish,
    CaseOutcome,
    ClaimedCase,
    OutputRecord,
    ReceivedInstance,
    SendJob,
    Target,
)
from sswe_node.node.schema import (
    CASE_STATUSES,
    FAILED,
    PROCESSING,
    QUEUED,
    RECEIVED,
    SEND_STATUSES,
    SENT,
    Case,
    Output,
    Send,
    utcnow,
)
from sswe_node.node.storage import FILE_MODE, private_files, private_folder

LOGGER = logging.getLogger(__name__)

_RECEIVED_COLUMNS = (
    "sop_class_uid",
    "path",
    "transfer_syntax",
    "study_instance_uid",
    "series_instance_uid",
    "patient_id",
    "accession_number",
    "calling_ae",
    "peer_address",
    "store_seconds",
    "called_ae",
    "content_sha256",
)
"""The columns of a case that :meth:`CaseStore.record_received` sets from the instance."""

UID_CONFLICT = "uid-conflict"
"""Case warning: other content was received before under the same SOP Instance UID."""
RECEIVE_WARNINGS = (UID_CONFLICT, "nonstandard-uid")
"""Warnings set when an instance is received (kept when its processing ends)."""


def _apply_outcome(case: Case, outcome: CaseOutcome, now: dt.datetime) -> None:
    case.status = outcome.status
    case.reason = outcome.reason
    case.message = outcome.message
    case.layout = outcome.layout
    case.frames = outcome.frames
    case.model_name = outcome.model_name
    case.model_version = outcome.model_version
    case.read_seconds = outcome.timings.get("read")
    case.predict_seconds = outcome.timings.get("predict")
    case.build_seconds = outcome.timings.get("build")
    case.finished_at = now
    # Warnings found on receipt (uid-conflict, nonstandard-uid) stay with the processing's.
    received = [w for w in (case.warnings or "").split(",") if w in RECEIVE_WARNINGS]
    case.warnings = ",".join(dict.fromkeys([*received, *outcome.warnings]))
    case.scale_min = outcome.scale_min
    case.scale_max = outcome.scale_max
    case.scale_unit = outcome.scale_unit
    case.scale_source = outcome.scale_source
    case.ood_score = outcome.ood_score


def _fit_column(name: str, value: Any) -> Any:
    """Clip a text value to its ``cases`` column length.

    SQLite ignores lengths but PostgreSQL refuses longer values: a Patient ID or Accession
    Number longer than the standard allows must not turn a C-STORE into Out of Resources.
    """
    length = getattr(Case.__table__.c[name].type, "length", None)
    if isinstance(value, str) and length and len(value) > length:
        return value[:length]
    return value


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL (WAL): a commit survives a crash of the process; after a power loss the last
    # commits may be rolled back, but each acknowledged file was fsync-ed first and the node
    # records such files again at start (see sswe_node.node.app.Node.start).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_store_engine(url: str) -> Engine:
    """Create the engine for a case store URL: the SQLite folder, the tables, their migrations.

    Parameters
    ----------
    url : str
        An SQLAlchemy URL: ``sqlite:///path.db`` (WAL mode) or e.g.
        ``postgresql://user@host:5432/db`` (psycopg 3 unless a driver is named).

    Returns
    -------
    Engine
    """
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_sqlite(Path(parsed.database))
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    elif parsed.drivername == "postgresql" and importlib.util.find_spec("psycopg2") is None:
        # A plain postgresql:// URL means psycopg2 to SQLAlchemy; we ship psycopg (3).
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    upgrade(engine)
    return engine


def _private_sqlite(database: Path) -> None:
    """Create the SQLite file (and a missing folder) for the owner only, whatever the umask.

    SQLite gives its ``-wal`` and ``-shm`` files the database file's permissions; those left
    by an older version are made private too.
    """
    if not database.parent.exists():
        private_folder(database.parent)
    if not database.exists():
        os.close(os.open(database, os.O_CREAT | os.O_WRONLY, FILE_MODE))
    private_files(Path(f"{database}{suffix}") for suffix in ("", "-wal", "-shm", "-journal"))


class CaseStore:
    """The case store used by the SCP handlers, the workers, the sender and ``sswe-node cases``.

    Parameters
    ----------
    url : str
        The SQLAlchemy database URL.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_store_engine(url)
        self._claim_lock = threading.Lock()

    def session(self) -> Session:
        """Return a new session (use as a context manager)."""
        return Session(self.engine, expire_on_commit=False)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    # -- receiving -----------------------------------------------------------------------------

    def record_received(self, info: ReceivedInstance) -> int:
        """Record a received instance as a pending case and return the case id.

        A resend of identical content (same SOP Instance UID and content hash, or a case
        recorded before content hashes) makes its case pending again, so it is processed and
        sent again (outputs keep their UIDs). Other content under a UID already known is a
        case of its own, with the warning ``uid-conflict`` (both files are kept).

        One short transaction of plain SQL statements (no ORM objects): it runs for every
        received instance, before the C-STORE is answered.
        """
        cases = Case.__table__
        with self.engine.begin() as connection:
            known = connection.execute(
                select(cases.c.id, cases.c.content_sha256, cases.c.warnings)
                .where(cases.c.sop_instance_uid == info.sop_instance_uid)
                .order_by(cases.c.id)
            ).all()
            same = [row for row in known if row.content_sha256 in (info.content_sha256, None)]
            case = next(
                (row for row in same if row.content_sha256 == info.content_sha256),
                same[0] if same else None,
            )
            warnings = list(info.warnings)
            if case is None and known:
                warnings.insert(0, UID_CONFLICT)
            elif case is not None and UID_CONFLICT in (case.warnings or "").split(","):
                warnings.insert(0, UID_CONFLICT)
            values: dict[str, Any] = {
                name: _fit_column(name, getattr(info, name)) for name in _RECEIVED_COLUMNS
            }
            values.update(
                warnings=",".join(dict.fromkeys(warnings)),
                status=RECEIVED,
                reason="",
                message="",
                layout=None,  # decided again by the new processing
                received_at=utcnow(),
                started_at=None,
                finished_at=None,
                owner=None,  # a worker holding the old copy must not record its outcome
                lease_expires_at=None,
            )
            if case is None:
                inserted = connection.execute(
                    cases.insert().values(
                        sop_instance_uid=info.sop_instance_uid, times_received=1, **values
                    )
                )
                return int(inserted.inserted_primary_key[0])
            connection.execute(
                update(cases)
                .where(cases.c.id == case.id)
                .values(times_received=func.coalesce(cases.c.times_received, 0) + 1, **values)
            )
            return int(case.id)

    # -- processing ----------------------------------------------------------------------------

    def resume(self, owner: str | None = None) -> int:
        """Take back cases whose worker is gone: make them pending again; return how many.

        Only a ``processing`` case whose lease has expired, that has no lease (left by a
        version without leases), or whose owner is a process of this host that no longer runs
        (:func:`sswe_node.node.leases.owner_is_dead`) is taken back: a live lease of another
        replica or worker process is never touched.

        Parameters
        ----------
        owner : str, optional
            This process's owner identity (default :func:`process_owner`); its own cases are
            left alone.
        """
        owner = owner or process_owner()
        now = utcnow()
        with self.session() as session, session.begin():
            rows = session.execute(
                select(Case.id, Case.owner, Case.lease_expires_at).where(Case.status == PROCESSING)
            ).all()
            stale = [
                row.id
                for row in rows
                if row.owner != owner
                and (
                    row.lease_expires_at is None
                    or row.lease_expires_at <= now
                    or (row.owner is not None and owner_is_dead(row.owner))
                )
            ]
            if not stale:
                return 0
            result = session.execute(
                update(Case)
                .where(Case.id.in_(stale), Case.status == PROCESSING)
                .values(status=RECEIVED, owner=None, lease_expires_at=None)
            )
            return int(result.rowcount or 0)

    def claim(
        self, limit: int, owner: str | None = None, lease_seconds: float = 30.0
    ) -> list[ClaimedCase]:
        """Claim up to ``limit`` cases (oldest first) for ``owner`` and return them.

        Pending cases are taken, and ``processing`` cases whose lease has expired (their worker
        stopped renewing: it crashed, or its machine did). Each claimed case records ``owner``
        and a lease of ``lease_seconds``, to be renewed with :meth:`renew`.

        Safe between processes sharing the store: each row is taken with a conditional update,
        so a case another claimer took in the meantime is left out (SQLite has no row locks;
        PostgreSQL also skips rows locked by a concurrent claim).
        """
        owner = owner or process_owner()
        with self._claim_lock, self.session() as session, session.begin():
            now = utcnow()
            claimable = or_(
                Case.status == RECEIVED,
                and_(Case.status == PROCESSING, Case.lease_expires_at < now),
            )
            rows = session.execute(
                select(
                    Case.id,
                    Case.sop_instance_uid,
                    Case.path,
                    Case.calling_ae,
                    Case.peer_address,
                    Case.called_ae,
                    Case.status,
                    Case.owner,
                )
                .where(claimable)
                .order_by(Case.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            expires = now + dt.timedelta(seconds=lease_seconds)
            claimed = []
            for row in rows:
                if row.status == RECEIVED:
                    still = Case.status == RECEIVED
                else:  # an expired lease: only if nobody renewed or took it meanwhile
                    still = and_(
                        Case.status == PROCESSING,
                        Case.owner == row.owner,
                        Case.lease_expires_at < now,
                    )
                taken = session.execute(
                    update(Case)
                    .where(Case.id == row.id, still)
                    .values(
                        status=PROCESSING, started_at=now, owner=owner, lease_expires_at=expires
                    )
                )
                if taken.rowcount == 1:
                    if row.status != RECEIVED:
                        LOGGER.warning("event=lease-taken-back case=%d from=%s", row.id, row.owner)
                    claimed.append(ClaimedCase(*row[:6]))
            return claimed

    def renew(
        self, case_ids: Sequence[int], owner: str | None = None, lease_seconds: float = 30.0
    ) -> set[int]:
        """Extend ``owner``'s leases on ``case_ids``; return the ids it still holds.

        A case missing from the result was taken back (its lease had expired) or received
        again: its holder must not record an outcome for it.
        """
        if not case_ids:
            return set()
        owner = owner or process_owner()
        expires = utcnow() + dt.timedelta(seconds=lease_seconds)
        with self.session() as session, session.begin():
            session.execute(
                update(Case)
                .where(
                    Case.id.in_(list(case_ids)),
                    Case.status == PROCESSING,
                    Case.owner == owner,
                )
                .values(lease_expires_at=expires)
            )
            held = session.scalars(
                select(Case.id).where(
                    Case.id.in_(list(case_ids)),
                    Case.status == PROCESSING,
                    Case.owner == owner,
                )
            ).all()
            return set(held)

    def contents_of(self, sop_instance_uid: str) -> list[tuple[int, str | None, str]]:
        """Return ``(case id, content SHA-256, path)`` of each case of a SOP Instance UID."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(Case.id, Case.content_sha256, Case.path)
                .where(Case.sop_instance_uid == sop_instance_uid)
                .order_by(Case.id)
            ).all()
            return [(int(i), sha, str(path or "")) for i, sha, path in rows]

    def known_paths(self) -> set[str]:
        """Return the received file of every case."""
        with self.session() as session:
            return {str(p) for p in session.scalars(select(Case.path)).all() if p}

    def uid_salts(self, case_ids: Sequence[int]) -> dict[int, str]:
        """Return ``{case id: content SHA-256}`` of the ``uid-conflict`` cases among ``case_ids``.

        Their outputs' UIDs are derived with the content hash too, so that different content
        under one SOP Instance UID never reuses an output UID
        (:data:`sswe_node.outputs.uids.UID_SALT_ATTRIBUTE`).
        """
        if not case_ids:
            return {}
        with self.session() as session:
            rows = session.execute(
                select(Case.id, Case.content_sha256, Case.warnings).where(
                    Case.id.in_(list(case_ids))
                )
            ).all()
        return {
            int(i): str(sha)
            for i, sha, warnings in rows
            if sha and UID_CONFLICT in (warnings or "").split(",")
        }

    def known_uids(self) -> set[str]:
        """Return the SOP Instance UIDs of every case."""
        with self.session() as session:
            return set(session.scalars(select(Case.sop_instance_uid)).all())

    def pending_count(self) -> int:
        """Return how many cases wait for a worker."""
        with self.session() as session:
            query = select(func.count()).select_from(Case).where(Case.status == RECEIVED)
            return int(session.scalar(query) or 0)

    def work_in_progress(self) -> int:
        """Return how many cases wait for or are in processing (outputs may still come)."""
        with self.session() as session:
            query = (
                select(func.count())
                .select_from(Case)
                .where(Case.status.in_((RECEIVED, PROCESSING)))
            )
            return int(session.scalar(query) or 0)

    def finish(
        self,
        case_id: int,
        outcome: CaseOutcome,
        outputs: Sequence[OutputRecord] = (),
        targets: Sequence[Target] = (),
    ) -> None:
        """Record how a case ended, its outputs, and queue each output to each target, at once.

        An output or send that already exists (a re-processed resend) is updated and queued
        again rather than duplicated.
        """
        self.finish_many([CaseFinish(case_id, outcome, outputs, targets)])

    def finish_many(self, finished: Sequence[CaseFinish], owner: str | None = None) -> int:
        """Record several finished cases (a worker's batch) in one transaction.

        Each case is recorded as :meth:`finish` does; a case received again while it was
        processed is left pending. One commit for the batch instead of one per case.
        With ``owner``, a case whose lease that owner no longer holds (taken back after it
        expired, by another worker) is left to its new holder.

        Returns
        -------
        int
            How many sends were queued.
        """
        if not finished:
            return 0
        with self.session() as session, session.begin():
            ids = [item.case_id for item in finished]
            cases = {c.id: c for c in session.scalars(select(Case).where(Case.id.in_(ids)))}
            missing = [i for i in ids if i not in cases]
            if missing:
                raise KeyError(f"no case {missing[0]}")
            current = [
                item
                for item in finished
                if cases[item.case_id].status == PROCESSING
                and (owner is None or cases[item.case_id].owner == owner)
            ]
            kept = {item.case_id for item in current}
            for item in finished:
                if item.case_id not in kept:
                    # Received again while we worked on it (left pending for the new copy),
                    # or our lease expired and another worker holds the case now.
                    LOGGER.info("event=case-superseded case=%d", item.case_id)
            now = utcnow()
            for item in current:
                _apply_outcome(cases[item.case_id], item.outcome, now)
                cases[item.case_id].lease_expires_at = None
            records = [(item, r) for item in current for r in item.outputs]
            if not records:
                return 0
            uids = [r.sop_instance_uid for _, r in records]
            known = {
                o.sop_instance_uid: o
                for o in session.scalars(select(Output).where(Output.sop_instance_uid.in_(uids)))
            }
            rows: list[tuple[CaseFinish, Output]] = []
            for item, record in records:
                out = known.get(record.sop_instance_uid)
                if out is None:
                    out = Output(sop_instance_uid=record.sop_instance_uid)
                    session.add(out)
                    known[record.sop_instance_uid] = out
                out.case_id = item.case_id
                out.sop_class_uid = record.sop_class_uid
                out.path = record.path
                out.created_at = now
                rows.append((item, out))
            session.flush()
            out_ids = [out.id for _, out in rows]
            sends = {
                (s.output_id, s.destination): s
                for s in session.scalars(select(Send).where(Send.output_id.in_(out_ids)))
            }
            queued = 0
            for item, out in rows:
                for target in item.targets:
                    send = sends.get((out.id, target.name))
                    if send is None:
                        send = Send(output_id=out.id, destination=target.name)
                        session.add(send)
                        sends[(out.id, target.name)] = send
                    send.ae_title = target.ae_title
                    send.host = target.host
                    send.port = target.port
                    send.tls = int(target.tls)
                    send.url = target.url
                    send.status = QUEUED
                    send.attempts = 0
                    send.next_attempt_at = now
                    send.last_error = ""
                    send.queued_at = now
                    send.sent_at = None
                    queued += 1
            return queued

    # -- sending -------------------------------------------------------------------------------

    def due_sends(
        self,
        limit: int = 100,
        now: dt.datetime | None = None,
        destination: tuple[str, str, int, bool] | None = None,
    ) -> list[SendJob]:
        """Return queued sends whose next attempt is due and that nobody holds, oldest first.

        ``destination``: only those to this ``(ae_title, host, port, tls)``. A read only: a
        sender takes sends with :meth:`claim_sends`.
        """
        now = now or utcnow()
        with self.session() as session:
            rows = session.execute(self._due_query(now, destination).limit(limit)).all()
            return [_send_job(s, path, uid) for s, path, uid in rows]

    @staticmethod
    def _due_query(now: dt.datetime, destination: tuple[str, str, int, bool] | None) -> Any:
        query = (
            select(Send, Output.path, Output.sop_instance_uid)
            .join(Output, Send.output_id == Output.id)
            .where(
                Send.status == QUEUED,
                Send.next_attempt_at <= now,
                or_(Send.claimed_by.is_(None), Send.lease_expires_at < now),
            )
        )
        if destination is not None:
            ae_title, host, port, tls = destination
            query = query.where(
                Send.ae_title == ae_title,
                Send.host == host,
                Send.port == port,
                Send.tls == int(tls),
            )
        return query.order_by(Send.next_attempt_at, Send.id)

    def claim_sends(
        self,
        owner: str,
        limit: int = 100,
        lease_seconds: float = 300.0,
        destination: tuple[str, str, int, bool] | None = None,
    ) -> list[SendJob]:
        """Take up to ``limit`` due sends for ``owner`` and return them, oldest first.

        Each send is taken with a conditional update (still queued, and unclaimed or its
        lease expired), so two senders, or two passes of one sender, never both get it. A
        claim lasts ``lease_seconds``; :meth:`mark_sent`, :meth:`mark_send_failed` and
        :meth:`release_sends` end it, and a sender that died loses it when it expires.
        """
        with self.session() as session, session.begin():
            now = utcnow()
            rows = session.execute(
                self._due_query(now, destination).limit(limit).with_for_update(skip_locked=True)
            ).all()
            expires = now + dt.timedelta(seconds=lease_seconds)
            claimed = []
            for send, path, uid in rows:
                taken = session.execute(
                    update(Send)
                    .where(
                        Send.id == send.id,
                        Send.status == QUEUED,
                        or_(Send.claimed_by.is_(None), Send.lease_expires_at < now),
                    )
                    .values(claimed_by=owner, lease_expires_at=expires)
                    .execution_options(synchronize_session=False)
                )
                if taken.rowcount == 1:
                    claimed.append(_send_job(send, path, uid))
            return claimed

    def release_sends(self, send_ids: Sequence[int], owner: str) -> int:
        """Give back ``owner``'s claims on sends it will not try now; return how many."""
        if not send_ids:
            return 0
        with self.engine.begin() as connection:
            result = connection.execute(
                update(Send)
                .where(Send.id.in_(list(send_ids)), Send.claimed_by == owner)
                .values(claimed_by=None, lease_expires_at=None)
            )
            return int(result.rowcount or 0)

    def release_dead_claims(self) -> int:
        """Give back send claims of processes of this host that are gone (at start-up)."""
        with self.session() as session, session.begin():
            owners = session.scalars(
                select(Send.claimed_by).where(Send.claimed_by.is_not(None)).distinct()
            ).all()
            dead = [o for o in owners if owner_is_dead(o)]
            if not dead:
                return 0
            result = session.execute(
                update(Send)
                .where(Send.claimed_by.in_(dead))
                .values(claimed_by=None, lease_expires_at=None)
            )
            return int(result.rowcount or 0)

    def next_send_due(self) -> dt.datetime | None:
        """Return when the earliest queued send is due, or ``None`` when none is queued."""
        with self.session() as session:
            query = select(func.min(Send.next_attempt_at)).where(Send.status == QUEUED)
            return session.scalar(query)

    def mark_sent(self, send_id: int, owner: str | None = None) -> bool:
        """Record a successful C-STORE of a queued output; return whether it was recorded.

        ``False`` when the send was no longer queued (or, with ``owner``, no longer that
        owner's): it was counted by whoever recorded it, and must not be counted again.
        """
        # One UPDATE, no ORM load: called once per C-STORE, on the sender's critical path.
        condition = [Send.id == send_id, Send.status == QUEUED]
        if owner is not None:
            condition.append(or_(Send.claimed_by == owner, Send.claimed_by.is_(None)))
        with self.engine.begin() as connection:
            result = connection.execute(
                update(Send)
                .where(*condition)
                .values(
                    status=SENT,
                    attempts=Send.attempts + 1,
                    sent_at=utcnow(),
                    last_error="",
                    claimed_by=None,
                    lease_expires_at=None,
                )
            )
            return result.rowcount == 1

    def mark_send_failed(self, send_id: int, error: str, retry_at: dt.datetime | None) -> None:
        """Record a failed attempt: queued again at ``retry_at``, or failed for good if ``None``.

        The sender's claim ends either way.
        """
        with self.session() as session, session.begin():
            send = session.get(Send, send_id)
            if send is not None and send.status == QUEUED:
                send.attempts += 1
                send.last_error = error[:500]
                send.claimed_by = None
                send.lease_expires_at = None
                if retry_at is None:
                    send.status = FAILED
                else:
                    send.next_attempt_at = retry_at

    # -- reporting -----------------------------------------------------------------------------

    def counts(self) -> dict[str, dict[str, int]]:
        """Return ``{"cases": {status: n}, "sends": {status: n}}``."""
        with self.session() as session:
            case_query = select(Case.status, func.count()).group_by(Case.status)
            send_query = select(Send.status, func.count()).group_by(Send.status)
            cases = {k: v for k, v in session.execute(case_query).all()}
            sends = {k: v for k, v in session.execute(send_query).all()}
        return {
            "cases": {s: int(cases.get(s, 0)) for s in CASE_STATUSES},
            "sends": {s: int(sends.get(s, 0)) for s in SEND_STATUSES},
        }

    def list_cases(
        self,
        *,
        status: str | None = None,
        reason: str | None = None,
        calling_ae: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = 100,
    ) -> list[dict[str, Any]]:
        """Return cases (newest first) with their send summary, as plain dictionaries."""
        with self.session() as session:
            query = select(Case).order_by(Case.id.desc())
            if status:
                query = query.where(Case.status == status)
            if reason:
                query = query.where(Case.reason == reason)
            if calling_ae:
                query = query.where(Case.calling_ae == calling_ae)
            if since:
                query = query.where(Case.received_at >= since)
            if limit:
                query = query.limit(limit)
            cases = session.scalars(query).all()
            ids = [c.id for c in cases]
            outputs: dict[int, int] = {}
            sends: dict[int, dict[str, int]] = {}
            if ids:
                for case_id, n in session.execute(
                    select(Output.case_id, func.count())
                    .where(Output.case_id.in_(ids))
                    .group_by(Output.case_id)
                ):
                    outputs[case_id] = int(n)
                for case_id, send_status, n in session.execute(
                    select(Output.case_id, Send.status, func.count())
                    .join(Send, Send.output_id == Output.id)
                    .where(Output.case_id.in_(ids))
                    .group_by(Output.case_id, Send.status)
                ):
                    sends.setdefault(case_id, {})[send_status] = int(n)
            return [_case_dict(c, outputs.get(c.id, 0), sends.get(c.id, {})) for c in cases]

    def list_sends(self) -> list[dict[str, Any]]:
        """Return every send row with its output UID (for checks and reports)."""
        with self.session() as session:
            rows = session.execute(
                select(Send, Output.sop_instance_uid, Output.case_id)
                .join(Output, Send.output_id == Output.id)
                .order_by(Send.id)
            ).all()
            return [
                {
                    "id": s.id,
                    "case_id": case_id,
                    "output_sop_instance_uid": uid,
                    "destination": s.destination,
                    "url": s.url,
                    "status": s.status,
                    "attempts": s.attempts,
                    "last_error": s.last_error,
                }
                for s, uid, case_id in rows
            ]


def _send_job(s: Send, path: str, uid: str) -> SendJob:
    return SendJob(
        s.id, path, uid, s.destination, s.ae_title, s.host, s.port, bool(s.tls), s.attempts, s.url
    )


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="milliseconds") + "Z"


def _case_dict(case: Case, outputs: int, sends: dict[str, int]) -> dict[str, Any]:
    return {
        "id": case.id,
        "sop_instance_uid": case.sop_instance_uid,
        "sop_class_uid": case.sop_class_uid,
        "study_instance_uid": case.study_instance_uid,
        "series_instance_uid": case.series_instance_uid,
        "patient_id": case.patient_id,
        "accession_number": case.accession_number,
        "calling_ae": case.calling_ae,
        "called_ae": case.called_ae,
        "transfer_syntax": case.transfer_syntax,
        "layout": case.layout,
        "frames": case.frames,
        "model_name": case.model_name,
        "model_version": case.model_version,
        "status": case.status,
        "reason": case.reason,
        "message": case.message,
        "warnings": [w for w in case.warnings.split(",") if w],
        "scale": {
            "min": case.scale_min,
            "max": case.scale_max,
            "unit": case.scale_unit,
            "source": case.scale_source,
        },
        "ood_score": case.ood_score,
        "content_sha256": case.content_sha256,
        "times_received": case.times_received,
        "received_at": _iso(case.received_at),
        "started_at": _iso(case.started_at),
        "finished_at": _iso(case.finished_at),
        "timings": {
            "store": case.store_seconds,
            "read": case.read_seconds,
            "predict": case.predict_seconds,
            "build": case.build_seconds,
        },
        "outputs": outputs,
        "sends": {s: sends.get(s, 0) for s in SEND_STATUSES},
    }
