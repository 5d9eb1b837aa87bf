"""Small records passed between the SCP, the workers, the sender and the case store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class ReceivedInstance:
    """What the SCP knows about an instance it has just written to disk."""

    sop_instance_uid: str
    sop_class_uid: str
    path: str
    transfer_syntax: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    patient_id: str = ""
    accession_number: str = ""
    calling_ae: str = ""
    peer_address: str = ""
    store_seconds: float | None = None
    called_ae: str = ""
    content_sha256: str | None = None
    warnings: tuple[str, ...] = ()


@dataclass
class ClaimedCase:
    """A case handed to a worker (a detached snapshot of the row)."""

    id: int
    sop_instance_uid: str
    path: str
    calling_ae: str
    peer_address: str
    called_ae: str = ""


@dataclass
class OutputRecord:
    """A derived instance already written to disk, to record and queue."""

    sop_instance_uid: str
    sop_class_uid: str
    path: str


@dataclass
class Target:
    """A destination for outputs (configured, or the calling AE)."""

    name: str
    ae_title: str
    host: str
    port: int
    tls: bool = False
    url: str = ""


@dataclass
class SendJob:
    """A send that is due now (a detached snapshot)."""

    id: int
    path: str
    sop_instance_uid: str
    destination: str
    ae_title: str
    host: str
    port: int
    tls: bool
    attempts: int
    url: str = ""


@dataclass
class CaseOutcome:
    """How processing one case ended."""

    status: str
    reason: str = ""
    message: str = ""
    layout: str | None = None
    frames: int = 0
    model_name: str | None = None
    model_version: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    scale_min: float | None = None
    scale_max: float | None = None
    scale_unit: str | None = None
    scale_source: str | None = None
    ood_score: float | None = None


@dataclass
class CaseFinish:
    """One case's end, for :meth:`sswe_node.node.store.CaseStore.finish_many`."""

    case_id: int
    outcome: CaseOutcome
    outputs: Sequence[OutputRecord] = ()
    targets: Sequence[Target] = ()
