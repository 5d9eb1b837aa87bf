"""SCP event handlers: persist each instance, record it, wake the workers, answer a status.

Handlers never do heavy work: inference runs in the workers, never in an association thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import dcmread
from pydicom.filereader import read_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pynetdicom.dsutils import decode, encode

from sswe_node.node.inflate import check_inflated_size, read_head
from sswe_node.node.records import ReceivedInstance
from sswe_node.node.status import REJECT_CALLING_AE, REJECT_NO_REASON, Status
from sswe_node.node.storage import (
    TooLargeError,
    commit_staged,
    file_sha256,
    free_space_mb,
    incoming_files,
    incoming_path,
    is_valid_uid,
    stage_incoming,
)
from sswe_node.node.store import CaseStore

if TYPE_CHECKING:
    from pynetdicom.events import Event

    from sswe_node.node.admission import Admission
    from sswe_node.node.metrics import Metrics

LOGGER = logging.getLogger(__name__)

NONSTANDARD_UID = "nonstandard-uid"
"""Case warning: the SOP Instance UID is not a valid UID (the file is named by its hash)."""

NO_UID = "2.25.0"
"""Placeholder for a C-STORE request's missing Affected SOP Instance UID (the nil UUID as a
UID): such a request is answered 0xC210, and its response carries this UID."""

_PLACE_LOCK = threading.Lock()

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


def handle_requested(
    event: Event,
    allowed_addresses: list[str],
    allowed_calling_aes: list[str],
    admission: Admission,
) -> None:
    """Check an association request: peer address, calling AE title, then the limit.

    Each rejection is one ``event=association-rejected`` line naming its reason; a request
    over the limit is rejected transiently (see :class:`~sswe_node.node.admission.Admission`).
    """
    assoc = event.assoc
    address = assoc.requestor.address
    primitive = assoc.requestor.primitive
    calling_ae = str(primitive.calling_ae_title).strip() if primitive is not None else ""
    rejection = None
    if allowed_addresses and address not in allowed_addresses:
        rejection = ("peer-address-not-allowed", REJECT_NO_REASON)
    elif allowed_calling_aes and calling_ae not in allowed_calling_aes:
        rejection = ("calling-ae-not-allowed", REJECT_CALLING_AE)
    if rejection is None:
        admission.admit(event)
        return
    reason, triple = rejection
    admission.forget(event)
    LOGGER.warning(
        "event=association-rejected reason=%s address=%s calling_ae=%s", reason, address, calling_ae
    )
    # As pynetdicom does for an unknown calling AE: A-ASSOCIATE-RJ, then end the association.
    assoc.acse.send_reject(*triple)
    assoc.kill()


def handle_rejected(event: Event) -> None:
    """Log an association rejected by pynetdicom itself (e.g. a called AE title check)."""
    LOGGER.warning(
        "event=association-rejected reason=pynetdicom calling_ae=%s address=%s",
        event.assoc.requestor.ae_title,
        event.assoc.requestor.address,
    )


def handle_pdu_received(event: Event, max_stream_bytes: int = 0) -> None:
    """Watch P-DATA as it arrives: cut oversized streams, fix C-STOREs without UIDs.

    - A dataset stream longer than ``max_stream_bytes`` (0: no limit) is cut while it arrives
      with an A-ABORT (``event=store-refused reason=too-large``), before pynetdicom's chunked
      receive has written it out whole; its partial file is removed.
    - pynetdicom cannot take a C-STORE request without an Affected SOP Instance/Class UID: its
      chunked receive fails writing the file meta and the sender would wait for its DIMSE
      timeout. The command is rewritten, before pynetdicom decodes it, with :data:`NO_UID`
      (and the context's SOP class when that is missing); :func:`keep_instance` answers it
      0xC210 (cannot understand) at once.
    """
    pdu = event.pdu
    items = getattr(pdu, "presentation_data_value_items", None)
    if not items:
        return
    if max_stream_bytes:
        _count_stream(event.assoc, items, max_stream_bytes)
    for item in items:
        value = item.presentation_data_value
        # Control header: bit 0 command, bit 1 last fragment (PS3.8 E.2); commands are small
        # and sent in one fragment by every sender we know of.
        if not value or value[0] & 0x03 != 0x03:
            continue
        try:
            command = decode(BytesIO(value[1:]), True, True)
            if int(command.get("CommandField", 0)) != 0x0001:  # C-STORE-RQ
                continue
            sop_uid = str(command.get("AffectedSOPInstanceUID", "") or "").strip("\0 ")
            sop_class = str(command.get("AffectedSOPClassUID", "") or "").strip("\0 ")
            if sop_uid and sop_class:
                continue
            if not sop_class:
                context = event.assoc._accepted_cx.get(item.presentation_context_id)  # noqa: SLF001
                command.AffectedSOPClassUID = str(context.abstract_syntax) if context else NO_UID
            command.AffectedSOPInstanceUID = NO_UID
            command.CommandGroupLength = 0
            encoded = encode(command, True, True)
            command.CommandGroupLength = len(encoded) - 12  # after the group length element
            item.presentation_data_value = value[:1] + encode(command, True, True)
        except Exception:  # noqa: BLE001 - not ours to judge: pynetdicom decides
            LOGGER.debug("event=command-unreadable")


def _count_stream(assoc: Any, items: list[Any], limit: int) -> None:
    """Add the dataset fragments of a P-DATA to the association's count; abort over ``limit``."""
    count = getattr(assoc, "_sswe_stream_bytes", 0)
    for item in items:
        value = item.presentation_data_value or b""
        if not value or value[0] & 0x01:  # a command fragment
            continue
        count += len(value) - 1
        if count > limit and not getattr(assoc, "_sswe_cut", False):
            assoc._sswe_cut = True
            LOGGER.error(
                "event=store-refused reason=too-large limit_bytes=%d calling_ae=%s action=abort",
                limit,
                assoc.requestor.ae_title,
            )
            assoc.acse.send_abort(0x02)  # queued: this runs in pynetdicom's reader thread
            _drop_partial(assoc)
        if value[0] & 0x02:  # the last fragment of this dataset
            count = 0
    assoc._sswe_stream_bytes = count


def _drop_partial(assoc: Any) -> None:
    """Remove the file pynetdicom's chunked receive had started for an aborted C-STORE."""
    handle = getattr(getattr(assoc.dimse, "message", None), "_data_set_file", None)
    if handle is None:
        return
    try:  # unlinked, not closed: pynetdicom may still write what is already on its way
        Path(handle.name).unlink(missing_ok=True)
    except OSError:
        pass


def handle_store(
    event: Event,
    storage_dir: Path,
    store: CaseStore,
    min_free_space_mb: float,
    wake: threading.Event,
    metrics: Metrics,
    max_instance_bytes: int = 0,
) -> int:
    """Persist a received instance, record it as a pending case and return the DIMSE status.

    The dataset arrives in pynetdicom's chunked receive file (never whole in memory) and is
    kept by :func:`keep_instance`.

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
    max_instance_bytes : int
        Larger encoded streams, or deflated datasets inflating to more, are refused with
        Out of Resources (0: no limit).

    Returns
    -------
    int
        ``0x0000`` on success, ``0xA700`` when it could not be kept, ``0xC210`` without UIDs.
    """
    start = time.perf_counter()
    if getattr(event.assoc, "_sswe_cut", False):  # cut while it arrived (too large): aborted
        metrics.inc("store_refused_total", reason="too-large")
        return int(Status.OUT_OF_RESOURCES)
    request = event.request
    info = ReceivedInstance(
        sop_instance_uid=str(request.AffectedSOPInstanceUID or "").strip("\0 "),
        sop_class_uid=str(request.AffectedSOPClassUID or "").strip("\0 "),
        path="",
        transfer_syntax=str(event.context.transfer_syntax),
        calling_ae=event.assoc.requestor.ae_title,
        peer_address=str(event.assoc.requestor.address),
        # The AE title the peer called (one port serves several, for model routing); the
        # acceptor's own title is the node's main one whatever was called.
        called_ae=str(
            getattr(event.assoc.requestor.primitive, "called_ae_title", "")
            or event.assoc.acceptor.ae_title
        ).strip(),
    )

    def source() -> Path | bytes:
        try:
            return Path(event.dataset_path)
        except AttributeError:  # chunked receive off (another SCP in this process)
            return event.encoded_dataset(include_meta=True)

    status, _case_id = keep_instance(
        source, info, storage_dir, store, min_free_space_mb, wake, metrics, start,
        max_instance_bytes=max_instance_bytes,
    )  # fmt: skip
    return status


def keep_instance(
    encode: Callable[[], bytes | Path],
    info: ReceivedInstance,
    storage_dir: Path,
    store: CaseStore,
    min_free_space_mb: float,
    wake: threading.Event,
    metrics: Metrics,
    start: float,
    *,
    max_instance_bytes: int = 0,
) -> tuple[int, int | None]:
    """Persist one received instance durably, record it as a pending case, wake the workers.

    The one receiving path of the node: the C-STORE handler and the STOW-RS route both call
    it, so both keep the persist-before-success rule, the free-space watermark, the size
    limit and the records. The content is copied in chunks into the incoming folder (hashed
    on the way), renamed into place and ``fsync``-ed, then recorded: identical content under
    a known UID keeps its file and case; other content is a new file and case, with the
    warning ``uid-conflict``. A UID that is not a valid UID gets a hashed file name and the
    warning ``nonstandard-uid``.

    Parameters
    ----------
    encode : callable
        Returns the instance in the DICOM file format (file meta + the sender's bytes), as
        bytes or as the path of a file holding them; called only once it is to be kept.
    info : ReceivedInstance
        UIDs, transfer syntax, caller and address; ``path``, identifiers, content hash,
        warnings and ``store_seconds`` are filled in here.
    storage_dir, store, min_free_space_mb, wake, metrics
        As for :func:`handle_store`.
    start : float
        ``time.perf_counter()`` when receiving began (for ``store_seconds``).
    max_instance_bytes : int
        As for :func:`handle_store`.

    Returns
    -------
    tuple of (int, int or None)
        The DIMSE status (``0x0000``, ``0xA700`` Out of Resources, ``0xC210`` without UIDs)
        and the case id when kept.
    """
    calling_ae = info.calling_ae
    sop_uid = info.sop_instance_uid
    if not sop_uid or not info.sop_class_uid or sop_uid == NO_UID:
        LOGGER.warning("event=store-refused reason=no-uid calling_ae=%s", calling_ae)
        metrics.inc("store_refused_total", reason="no-uid")
        return int(Status.CANNOT_UNDERSTAND_UIDS), None
    staged: Path | None = None
    conflict: list[int] = []
    try:
        if free_space_mb(storage_dir) < min_free_space_mb:
            LOGGER.error("event=store-refused reason=disk-full calling_ae=%s", calling_ae)
            metrics.inc("store_refused_total", reason="disk-full")
            return int(Status.OUT_OF_RESOURCES), None
        try:
            staged, sha256, size = stage_incoming(storage_dir, encode(), max_instance_bytes)
            if info.transfer_syntax == DeflatedExplicitVRLittleEndian:
                check_inflated_size(staged, max_instance_bytes)
        except TooLargeError as exc:
            LOGGER.error(
                "event=store-refused reason=too-large limit_bytes=%d calling_ae=%s detail=%s",
                max_instance_bytes,
                calling_ae,
                str(exc).replace(" ", "-"),
            )
            metrics.inc("store_refused_total", reason="too-large")
            return int(Status.OUT_OF_RESOURCES), None
        info.content_sha256 = sha256
        if not is_valid_uid(sop_uid):
            info.warnings = tuple(dict.fromkeys([*info.warnings, NONSTANDARD_UID]))
        _read_identifiers(staged, info)
        with _PLACE_LOCK:
            # Decide the file, rename into place and record: one at a time, so that two
            # contents under one UID arriving together both get a file of their own.
            path, conflict = _place(storage_dir, store, sop_uid, sha256)
            commit_staged(staged, path)
            staged = None
            info.path = str(path)
            info.store_seconds = time.perf_counter() - start
            case_id = store.record_received(info)
    except Exception as exc:  # noqa: BLE001 - any failure to persist must not acknowledge
        LOGGER.error("event=store-failed error=%s calling_ae=%s", type(exc).__name__, calling_ae)
        metrics.inc("store_refused_total", reason="error")
        return int(Status.OUT_OF_RESOURCES), None
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)
    if conflict:
        LOGGER.warning(
            "event=uid-conflict case=%d previous=%s calling_ae=%s",
            case_id,
            ",".join(str(c) for c in conflict),
            calling_ae,
        )
    if NONSTANDARD_UID in info.warnings:
        LOGGER.warning("event=nonstandard-uid case=%d calling_ae=%s", case_id, calling_ae)
    metrics.inc("received_total")
    metrics.observe("stage_seconds", time.perf_counter() - start, stage="store")
    LOGGER.info(
        "event=received case=%d sop_class=%s transfer_syntax=%s calling_ae=%s bytes=%d",
        case_id,
        info.sop_class_uid,
        info.transfer_syntax,
        calling_ae,
        size,
    )
    wake.set()
    return int(Status.SUCCESS), case_id


def _place(storage_dir: Path, store: CaseStore, sop_uid: str, sha256: str) -> tuple[Path, list]:
    """Return the file for received content and the cases holding other content under its UID.

    Identical content (or a case from before content hashes) keeps its file; the first
    content of a UID is ``<UID>.dcm``; other content is ``<UID>.<hash>.dcm`` beside it.
    """
    contents = store.contents_of(sop_uid)  # [(case id, sha256 or None, path)]
    for _, known, path in contents:
        if known in (sha256, None) and path:
            return Path(path), []
    if not contents:
        return incoming_path(storage_dir, sop_uid), []
    return incoming_path(storage_dir, sop_uid, sha256), [case_id for case_id, _, _ in contents]


def adopt_orphans(storage_dir: Path, store: CaseStore) -> int:
    """Record received files that have no case (lost by a power cut after the file was synced).

    The UID is read from each file's meta information (file names are not always UIDs).

    Returns
    -------
    int
        How many files were recorded as pending cases.
    """
    known = store.known_paths()
    adopted = 0
    for path in incoming_files(storage_dir):
        if str(path) in known:
            continue
        try:
            meta = read_file_meta_info(path)  # the file's head only, not its pixel data
            uid = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
            info = ReceivedInstance(
                sop_instance_uid=uid or path.stem,
                sop_class_uid=str(meta.get("MediaStorageSOPClassUID", "")),
                path=str(path),
                transfer_syntax=str(meta.get("TransferSyntaxUID", "")),
            )
        except Exception:  # noqa: BLE001 - still recorded, the worker says what is wrong
            info = ReceivedInstance(sop_instance_uid=path.stem, sop_class_uid="", path=str(path))
        info.content_sha256 = file_sha256(path)
        _read_identifiers(path, info)
        store.record_received(info)
        adopted += 1
    if adopted:
        LOGGER.warning("event=orphans-adopted count=%d", adopted)
    return adopted


def _read_identifiers(source: Path, info: ReceivedInstance) -> None:
    """Fill the study/series/patient identifiers from a received file.

    Only the file's head is read (a deflated dataset is inflated up to a few MiB, never
    whole). A broken dataset leaves them empty.
    """
    try:
        fp = read_head(source) if info.transfer_syntax == DeflatedExplicitVRLittleEndian else source
        ds = dcmread(fp, stop_before_pixels=True, specific_tags=_IDENTIFYING_TAGS, force=True)
        info.study_instance_uid = str(ds.get("StudyInstanceUID", "") or "")
        info.series_instance_uid = str(ds.get("SeriesInstanceUID", "") or "")
        info.patient_id = str(ds.get("PatientID", "") or "")
        info.accession_number = str(ds.get("AccessionNumber", "") or "")
    except Exception:  # noqa: BLE001 - the worker records why the instance is unusable
        LOGGER.debug("event=identifiers-unreadable")
