"""The case-store schema: SQLAlchemy tables of cases, outputs, sends and scanner statistics."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Case status values (a case is one received instance).
RECEIVED = "received"
PROCESSING = "processing"
DONE = "done"
FAILED = "failed"
SKIPPED = "skipped"
CASE_STATUSES = (RECEIVED, PROCESSING, DONE, FAILED, SKIPPED)

# Send status values.
QUEUED = "queued"
SENT = "sent"
SEND_STATUSES = (QUEUED, SENT, FAILED)


def utcnow() -> dt.datetime:
    """Return the current UTC time as a naive datetime (the form stored in the database)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    """Declarative base of the case store tables."""


class Case(Base):
    """One received instance and what became of it."""

    __tablename__ = "cases"
    __table_args__ = (
        # One row per received content: a resend of identical content updates its row, other
        # content under the same UID is a second row (a ``uid-conflict``).
        Index("uq_cases_uid_content", "sop_instance_uid", "content_sha256", unique=True),
        Index("ix_cases_sop_instance_uid", "sop_instance_uid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64), default="")
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    series_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    called_ae: Mapped[str] = mapped_column(String(16), default="", server_default="")
    peer_address: Mapped[str] = mapped_column(String(64), default="")
    transfer_syntax: Mapped[str] = mapped_column(String(64), default="")
    path: Mapped[str] = mapped_column(Text, default="")
    content_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    layout: Mapped[str | None] = mapped_column(String(32), nullable=True)
    frames: Mapped[int] = mapped_column(Integer, default=0)
    model_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=RECEIVED, index=True)
    reason: Mapped[str] = mapped_column(String(64), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    warnings: Mapped[str] = mapped_column(Text, default="", server_default="")
    scale_min: Mapped[float | None] = mapped_column(Float, nullable=True)
    scale_max: Mapped[float | None] = mapped_column(Float, nullable=True)
    scale_unit: Mapped[str | None] = mapped_column(String(16), nullable=True)
    scale_source: Mapped[str | None] = mapped_column(String(32), nullable=True)
    ood_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    times_received: Mapped[int] = mapped_column(Integer, default=1)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    store_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    read_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    predict_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    build_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)

    outputs: Mapped[list[Output]] = relationship(back_populates="case")


class Output(Base):
    """One derived instance (Parametric Map or Secondary Capture) written for a case."""

    __tablename__ = "outputs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64), default="")
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    case: Mapped[Case] = relationship(back_populates="outputs")
    sends: Mapped[list[Send]] = relationship(back_populates="output")


class Send(Base):
    """The queued or finished sending of one output to one destination."""

    __tablename__ = "sends"
    __table_args__ = (UniqueConstraint("output_id", "destination"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    output_id: Mapped[int] = mapped_column(ForeignKey("outputs.id"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    ae_title: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    tls: Mapped[int] = mapped_column(Integer, default=0)
    url: Mapped[str] = mapped_column(Text, default="", server_default="")
    status: Mapped[str] = mapped_column(String(16), default=QUEUED, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    claimed_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    queued_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)

    output: Mapped[Output] = relationship(back_populates="sends")


class ScannerStats(Base):
    """Running statistics of a model's latent features on one scanner (for alignment)."""

    __tablename__ = "scanner_stats"
    __table_args__ = (UniqueConstraint("model_name", "scanner"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(64))
    scanner: Mapped[str] = mapped_column(String(130))
    count: Mapped[int] = mapped_column(Integer, default=0)
    mean: Mapped[str] = mapped_column(Text, default="[]")
    m2: Mapped[str] = mapped_column(Text, default="[]")
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
