"""SCP event handlers: persist each instance, record it, wake the workers, answer a status.

Handlers never do heavy work: inference runs in the workers, never in an association thread.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import dcmread
from pydicom.filereader import read_file_meta_info

from sswe_node.node.records import ReceivedInstance
from sswe_node.node.status import REJECT_NO_REASON, Status
from sswe_node.node.storage import atomic_write, free_space_mb, incoming_files, incoming_path
from sswe_node.node.store import CaseStore

if TYPE_CHECKING:
    from pynetdicom.events import Event

    from sswe_node.node.metrics import Metrics

LOGGER = logging.getLogger(__name__)

_IDENTIFYING_TAGS = [
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "AccessionNumber",
    "SpecificCharacterSet",
]


def handle_echo(event: Event) -> int:
    """Answer a C-ECHO with Success."""
    LOGGER.debug("event=echo calling_ae=%s", event.assoc.requestor.ae_title)
    return int(Status.SUCCESS)


def handle_requested(event: Event, allowed_addresses: list[str]) -> None:
    """Reject an association request from a peer address that is not allowed.

    Calling AE titles are checked by pynetdicom itself (``AE.require_calling_aet``).
    """
    address = event.assoc.requestor.address
    if allowed_addresses and address not in allowed_addresses:
        primitive = event.assoc.requestor.primitive
        LOGGER.warning(
            "event=association-rejected reason=peer-address address=%s calling_ae=%s",
            address,
            primitive.calling_ae_title if primitive is not None else "",
        )
        # As pynetdicom does for an unknown calling AE: A-ASSOCIATE-RJ, then end the association.
        event.assoc.acse.send_reject(*REJECT_NO_REASON)
        event.assoc.kill()


def handle_rejected(event: Event) -> None:
    """Log an association rejected by pynetdicom (unknown calling AE, too many associations)."""
    LOGGER.warning(
        "event=association-rejected calling_ae=%s address=%s",
        event.assoc.requestor.ae_title,
        event.assoc.requestor.address,
    )


def handle_store(
    event: Event,
    storage_dir: Path,
    store: CaseStore,
    min_free_space_mb: float,
    wake: threading.Event,
    metrics: Metrics,
) -> int:
    """Persist a received instance, record it as a pending case and return the DIMSE status.

    The encoded dataset is written as sent (transfer syntax and character set unchanged),
    atomically and durably, and recorded in the case store before Success is returned.
    Any failure to do so returns Out of Resources (0xA700), never Success.

    Parameters
    ----------
    event : pynetdicom.events.Event
        The ``EVT_C_STORE`` event.
    storage_dir : Path
        The storage folder.
    store : CaseStore
        The case store.
    min_free_space_mb : float
        Free-space watermark: below it the instance is refused with Out of Resources.
    wake : threading.Event
        Set to wake the workers.
    metrics : Metrics
        Counters to update.

    Returns
    -------
    int
        ``0x0000`` on success, ``0xA700`` when it could not be kept, ``0xC210`` without UIDs.
    """
    start = time.perf_counter()
    request = event.request
    info = ReceivedInstance(
        sop_instance_uid=str(request.AffectedSOPInstanceUID or "").strip("\0 "),
        sop_class_uid=str(request.AffectedSOPClassUID or "").strip("\0 "),
        path="",
        transfer_syntax=str(event.context.transfer_syntax),
        calling_ae=event.assoc.requestor.ae_title,
        peer_address=str(event.assoc.requestor.address),
    )
    status, _case_id = keep_instance(
        lambda: event.encoded_dataset(include_meta=True),
        info, storage_dir, store, min_free_space_mb, wake, metrics, start,
    )  # fmt: skip
    return status


def keep_instance(
    encode: Callable[[], bytes],
    info: ReceivedInstance,
    storage_dir: Path,
    store: CaseStore,
    min_free_space_mb: float,
    wake: threading.Event,
    metrics: Metrics,
    start: float,
) -> tuple[int, int | None]:
    """Persist one received instance durably, record it as a pending case, wake the workers.

    The one receiving path of the node: the C-STORE handler and the STOW-RS route both call
    it, so both keep the persist-before-success rule, the free-space watermark and the records.

    Parameters
    ----------
    encode : callable
        Returns the instance in the DICOM file format (file meta + the sender's bytes); called
        only once the instance is to be kept.
    info : ReceivedInstance
        UIDs, transfer syntax, caller and address; ``path``, identifiers and ``store_seconds``
        are filled in here.
    storage_dir, store, min_free_space_mb, wake, metrics
        As for :func:`handle_store`.
    start : float
        ``time.perf_counter()`` when receiving began (for ``store_seconds``).

    Returns
    -------
    tuple of (int, int or None)
        The DIMSE status (``0x0000``, ``0xA700`` Out of Resources, ``0xC210`` without UIDs)
        and the case id when kept.
    """
    calling_ae = info.calling_ae
    if not info.sop_instance_uid or not info.sop_class_uid:
        metrics.inc("store_refused_total", reason="no-uid")
        return int(Status.CANNOT_UNDERSTAND_UIDS), None
    try:
        if free_space_mb(storage_dir) < min_free_space_mb:
            LOGGER.error("event=store-refused reason=disk-full calling_ae=%s", calling_ae)
            metrics.inc("store_refused_total", reason="disk-full")
            return int(Status.OUT_OF_RESOURCES), None
        encoded = encode()
        path = incoming_path(storage_dir, info.sop_instance_uid)
        atomic_write(path, encoded)
        info.path = str(path)
        _read_identifiers(encoded, info)
        info.store_seconds = time.perf_counter() - start
        case_id = store.record_received(info)
    except Exception as exc:  # noqa: BLE001 - any failure to persist must not acknowledge
        LOGGER.error("event=store-failed error=%s calling_ae=%s", type(exc).__name__, calling_ae)
        metrics.inc("store_refused_total", reason="error")
        return int(Status.OUT_OF_RESOURCES), None
    metrics.inc("received_total")
    metrics.observe("stage_seconds", time.perf_counter() - start, stage="store")
    LOGGER.info(
        "event=received case=%d sop_class=%s transfer_syntax=%s calling_ae=%s bytes=%d",
        case_id,
        info.sop_class_uid,
        info.transfer_syntax,
        calling_ae,
        len(encoded),
    )
    wake.set()
    return int(Status.SUCCESS), case_id


def adopt_orphans(storage_dir: Path, store: CaseStore) -> int:
    """Record received files that have no case (lost by a power cut after the file was synced).

    Returns
    -------
    int
        How many files were recorded as pending cases.
    """
    files = incoming_files(storage_dir)
    known = store.known_uids()
    adopted = 0
    for uid, path in sorted(files.items()):
        if uid in known:
            continue
        try:
            meta = read_file_meta_info(path)  # the file's head only, not its pixel data
            info = ReceivedInstance(
                sop_instance_uid=uid,
                sop_class_uid=str(meta.get("MediaStorageSOPClassUID", "")),
                path=str(path),
                transfer_syntax=str(meta.get("TransferSyntaxUID", "")),
            )
        except Exception:  # noqa: BLE001 - still recorded, the worker says what is wrong
            info = ReceivedInstance(sop_instance_uid=uid, sop_class_uid="", path=str(path))
        _read_identifiers(path, info)
        store.record_received(info)
        adopted += 1
    if adopted:
        LOGGER.warning("event=orphans-adopted count=%d", adopted)
    return adopted


def _read_identifiers(source: bytes | Path, info: ReceivedInstance) -> None:
    """Fill the study/series/patient identifiers from encoded bytes or a file.

    A broken dataset leaves them empty.
    """
    try:
        fp = source if isinstance(source, Path) else io.BytesIO(source)
        ds = dcmread(fp, stop_before_pixels=True, specific_tags=_IDENTIFYING_TAGS)
        info.study_instance_uid = str(ds.get("StudyInstanceUID", "") or "")
        info.series_instance_uid = str(ds.get("SeriesInstanceUID", "") or "")
        info.patient_id = str(ds.get("PatientID", "") or "")
        info.accession_number = str(ds.get("AccessionNumber", "") or "")
    except Exception:  # noqa: BLE001 - the worker records why the instance is unusable
        LOGGER.debug("event=identifiers-unreadable")
