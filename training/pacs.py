"""Query a PACS (C-FIND) and retrieve series into a resumable cache (C-MOVE or C-GET)."""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    EnhancedUSVolumeStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from sswe_node.aetitle import Peer
from sswe_node.dicom_constants import STORAGE_TRANSFER_SYNTAXES
from sswe_node.errors import ConfigError, SsweError
from sswe_node.node.status import Status
from sswe_node.node.storage import atomic_write

logger = logging.getLogger(__name__)

#: Storage classes proposed (SCP role) for C-GET: ultrasound and its secondary captures.
GET_STORAGE_CLASSES = (
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    SecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    EnhancedUSVolumeStorage,
)
#: Transfer syntaxes accepted for C-GET sub-operations (compressed kept as stored).
GET_TRANSFER_SYNTAXES = STORAGE_TRANSFER_SYNTAXES

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_SERIES_DONE = ".series"


class PacsError(SsweError):
    """The PACS refused an association or a query/retrieve failed."""

    reason = "pacs"


#: A remote Query/Retrieve SCP (``AE@HOST:PORT``): the node's one peer type and parser.
PacsPeer = Peer


@dataclass(frozen=True)
class QueryFilters:
    """What to look for. ``None`` or empty means no restriction.

    Attributes
    ----------
    modality : str, optional
        Series Modality, e.g. ``"US"`` (also sent as ModalitiesInStudy at study level).
    date_from, date_to : str, optional
        StudyDate range bounds ``YYYYMMDD`` (inclusive).
    station, manufacturer : str, optional
        Series-level StationName / Manufacturer; ``*`` and ``?`` wildcards allowed.
    patients : tuple of str
        Patient IDs to restrict to (one study query each).
    """

    modality: str | None = "US"
    date_from: str | None = None
    date_to: str | None = None
    station: str | None = None
    manufacturer: str | None = None
    patients: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("date_from", "date_to"):
            value = getattr(self, name)
            if value and not re.fullmatch(r"[0-9]{8}", value):
                raise ConfigError(f"{name.replace('_', '-')} must be YYYYMMDD, got {value!r}")

    def date_range(self) -> str:
        """Return the DICOM range matching value for StudyDate ("" when unrestricted)."""
        if not (self.date_from or self.date_to):
            return ""
        return f"{self.date_from or ''}-{self.date_to or ''}"


@dataclass(frozen=True)
class SeriesRef:
    """A series found by C-FIND (no patient identifiers kept)."""

    study_uid: str
    series_uid: str
    modality: str = ""
    instances: int | None = None


@dataclass
class RetrieveReport:
    """What a retrieval did."""

    series: int = 0
    series_skipped: int = 0
    instances_fetched: int = 0
    instances_cached: int = 0
    failed_series: list[str] = field(default_factory=list)


def read_patient_list(path: str | Path) -> tuple[str, ...]:
    """Read Patient IDs, one per line (blank lines and ``#`` comments ignored)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return tuple(s.strip() for s in lines if s.strip() and not s.strip().startswith("#"))


def series_folder(cache_dir: str | Path, study_uid: str, series_uid: str) -> Path:
    """Return the cache folder of one series: ``CACHE/<study UID>/<series UID>``."""
    for uid in (study_uid, series_uid):
        if not _UID.match(uid) or len(uid) > 64:
            raise PacsError(f"invalid UID {uid!r}")
    return Path(cache_dir) / study_uid / series_uid


def cached_path(cache_dir: str | Path, study_uid: str, series_uid: str, sop_uid: str) -> Path:
    """Return where an instance lives in the cache: its series folder, ``<SOP UID>.dcm``."""
    if not _UID.match(sop_uid) or len(sop_uid) > 64:
        raise PacsError(f"invalid SOP Instance UID {sop_uid!r}")
    return series_folder(cache_dir, study_uid, series_uid) / f"{sop_uid}.dcm"


def series_marker(cache_dir: Path, series_uid: str) -> Path:
    """Return the completion marker of one series (its text: the instance count)."""
    return cache_dir / _SERIES_DONE / series_uid


def _matches(value: Any, pattern: str | None) -> bool:
    if not pattern or value in (None, ""):
        return True  # the PACS did not return it: trust its own matching
    return fnmatch.fnmatch(str(value).upper(), pattern.upper())


def matching_series(study_uid: str, found: Dataset, filters: QueryFilters) -> SeriesRef | None:
    """Return the series a search answer describes, or ``None`` when it misses the filters.

    Every key is matched here again (StationName and Manufacturer with ``*``/``?``
    wildcards), so a source that ignores a key still gives the right series; a key the
    source did not return is trusted to its own matching.
    """
    uid = str(found.get("SeriesInstanceUID", ""))
    modality = str(found.get("Modality", ""))
    if not uid or (filters.modality and modality and modality != filters.modality):
        return None
    if not _matches(found.get("StationName"), filters.station):
        return None
    if not _matches(found.get("Manufacturer"), filters.manufacturer):
        return None
    count = found.get("NumberOfSeriesRelatedInstances")
    return SeriesRef(
        study_uid=study_uid,
        series_uid=uid,
        modality=modality,
        instances=int(count) if count not in (None, "") else None,
    )


def split_cached(
    series: Sequence[SeriesRef], cache: Path, via: str
) -> tuple[RetrieveReport, list[SeriesRef]]:
    """Count the series already complete in ``cache``; return the report and the rest.

    A series is complete when its marker holds its instance count. Creates the marker
    folder; ``via`` names the retrieval in the log line (``"C-MOVE"``, ``"WADO-RS"``).
    """
    (cache / _SERIES_DONE).mkdir(parents=True, exist_ok=True)
    report = RetrieveReport(series=len(series))
    todo = []
    for ref in series:
        marker = series_marker(cache, ref.series_uid)
        if marker.exists() and marker.read_text().strip() == str(ref.instances):
            report.series_skipped += 1
            report.instances_cached += ref.instances or 0
        else:
            todo.append(ref)
    logger.info("retrieve by %s: %d series, %d already cached",
                via, len(series), report.series_skipped)  # fmt: skip
    return report, todo


def retrieve_each(
    todo: Sequence[SeriesRef],
    fetch: Callable[[SeriesRef], tuple[int, int]],
    report: RetrieveReport,
    *,
    parallel: int,
    progress: bool,
) -> RetrieveReport:
    """Run ``fetch`` on every series, ``parallel`` at once, adding its counts to ``report``.

    ``fetch`` returns (instances fetched, instances already cached); a series whose
    ``fetch`` raises is logged and listed in ``report.failed_series``, and the others still
    run. A progress bar (instances) is shown on standard error when ``progress``.
    """
    bar = _progress_bar(sum(r.instances or 0 for r in todo), progress)
    try:
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            futures = {pool.submit(fetch, ref): ref for ref in todo}
            for future in as_completed(futures):
                ref = futures[future]
                try:
                    fetched, cached = future.result()
                except Exception as exc:  # noqa: BLE001 - try every series, then fail
                    logger.error("series %s: %s", ref.series_uid, exc)
                    report.failed_series.append(ref.series_uid)
                    continue
                report.instances_fetched += fetched
                report.instances_cached += cached
                if bar is not None:
                    bar.update(fetched + cached)
    finally:
        if bar is not None:
            bar.close()
    return report


def absent(folder: Path, uids: Sequence[str]) -> list[str]:
    """Return the SOP Instance UIDs that have no file in a series folder yet."""
    return [u for u in uids if not (folder / f"{u}.dcm").exists()]


def mark_complete(
    cache: Path, ref: SeriesRef, uids: Sequence[str], missing: Sequence[str]
) -> tuple[int, int]:
    """Write a series' completion marker; return (instances fetched, instances cached)."""
    marker = series_marker(cache, ref.series_uid)
    marker.write_text(str(ref.instances if ref.instances is not None else len(uids)))
    return len(missing), len(uids) - len(missing)


class PacsClient:
    """A Study Root Query/Retrieve SCU for one PACS.

    Parameters
    ----------
    peer : PacsPeer
        The PACS.
    calling_aet : str
        Our AE title (the PACS must know it for C-GET and as a C-MOVE requester).
    timeout : float
        ACSE, DIMSE and network timeouts in seconds.
    """

    def __init__(self, peer: PacsPeer, calling_aet: str = "SSWE_DATASET", timeout: float = 60.0):
        self.peer = peer
        self.calling_aet = calling_aet
        self.timeout = timeout

    def _ae(self) -> AE:
        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        return ae

    @contextmanager
    def _association(self, ae: AE, **kwargs: Any) -> Iterator[Association]:
        assoc = ae.associate(self.peer.host, self.peer.port, ae_title=self.peer.ae_title, **kwargs)
        if not assoc.is_established:
            raise PacsError(f"association with {self.peer} was rejected or failed")
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    # -- C-FIND ------------------------------------------------------------------------------

    def _find(self, assoc: Association, query: Dataset) -> list[Dataset]:
        found = []
        for status, identifier in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind
        ):
            if not status:
                raise PacsError(f"C-FIND to {self.peer} timed out or was aborted")
            code = int(status.Status)
            if code in (0xFF00, 0xFF01) and identifier is not None:
                found.append(identifier)
            elif code != 0x0000:
                raise PacsError(f"C-FIND to {self.peer} failed with status 0x{code:04X}")
        return found

    def find_series(self, filters: QueryFilters) -> list[SeriesRef]:
        """C-FIND studies, then their series, keeping those that match the filters.

        Parameters
        ----------
        filters : QueryFilters
            What to look for.

        Returns
        -------
        list of SeriesRef
            Sorted by study then series UID.
        """
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        series: dict[str, SeriesRef] = {}
        with self._association(ae) as assoc:
            studies: set[str] = set()
            for patient in filters.patients or ("",):
                query = Dataset()
                query.QueryRetrieveLevel = "STUDY"
                query.StudyInstanceUID = ""
                query.PatientID = patient
                query.StudyDate = filters.date_range()
                query.ModalitiesInStudy = filters.modality or ""
                for ident in self._find(assoc, query):
                    uid = str(ident.get("StudyInstanceUID", ""))
                    if patient and str(ident.get("PatientID", patient)) != patient:
                        continue
                    if uid:
                        studies.add(uid)
            for study_uid in sorted(studies):
                query = Dataset()
                query.QueryRetrieveLevel = "SERIES"
                query.StudyInstanceUID = study_uid
                query.SeriesInstanceUID = ""
                query.Modality = filters.modality or ""
                query.StationName = filters.station or ""
                query.Manufacturer = filters.manufacturer or ""
                query.NumberOfSeriesRelatedInstances = ""
                for ident in self._find(assoc, query):
                    ref = matching_series(study_uid, ident, filters)
                    if ref is not None:
                        series[ref.series_uid] = ref
        logger.info("C-FIND on %s: %d studies, %d series", self.peer, len(studies), len(series))
        return sorted(series.values(), key=lambda s: (s.study_uid, s.series_uid))

    def find_instances(self, assoc: Association, series: SeriesRef) -> list[str]:
        """C-FIND the SOP Instance UIDs of one series (on an association with the Find model)."""
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = series.study_uid
        query.SeriesInstanceUID = series.series_uid
        query.SOPInstanceUID = ""
        uids = {str(i.get("SOPInstanceUID", "")) for i in self._find(assoc, query)}
        return sorted(u for u in uids if u)

    # -- retrieval ---------------------------------------------------------------------------

    def retrieve(
        self,
        series: Sequence[SeriesRef],
        cache_dir: str | Path,
        *,
        method: str = "move",
        move_aet: str | None = None,
        move_port: int | None = None,
        move_bind: str = "0.0.0.0",
        parallel: int = 2,
        progress: bool = False,
    ) -> RetrieveReport:
        """Retrieve series into ``cache_dir``, fetching only what is not there yet.

        A series whose completion marker matches its instance count is skipped without
        contacting the PACS again; otherwise its instances are listed (C-FIND IMAGE) and only
        the missing ones are fetched (the whole series at once when none is cached).

        Parameters
        ----------
        series : sequence of SeriesRef
            From :meth:`find_series`.
        cache_dir : path-like
            The cache folder (created if absent); one file per instance.
        method : {"move", "get"}
            C-MOVE to a temporary storage SCP of ours, or C-GET on the same association.
        move_aet, move_port : optional
            For C-MOVE: the AE title the PACS knows our storage SCP by, and its port.
        move_bind : str
            Address the temporary storage SCP listens on.
        parallel : int
            Number of simultaneous associations (one series each).
        progress : bool
            Show a progress bar (instances) on standard error.

        Returns
        -------
        RetrieveReport

        Raises
        ------
        PacsError
            When some series could not be retrieved completely (after trying them all).
        """
        if method not in ("move", "get"):
            raise ConfigError(f"retrieval method must be 'move' or 'get', got {method!r}")
        if method == "move" and not (move_aet and move_port):
            raise ConfigError("C-MOVE needs --move-aet and --move-port (a port the PACS reaches)")
        cache = Path(cache_dir)
        report, todo = split_cached(series, cache, f"C-{method.upper()}")
        server = None
        if method == "move" and todo:
            server = _start_store_scp(cache, move_aet or "", move_bind, int(move_port or 0))
        try:
            retrieve_each(
                todo,
                lambda ref: self._retrieve_series(ref, cache, method, move_aet),
                report,
                parallel=parallel,
                progress=progress,
            )
        finally:
            if server is not None:
                server.shutdown()
        if report.failed_series:
            raise PacsError(
                f"{len(report.failed_series)} of {len(series)} series could not be retrieved "
                f"completely from {self.peer}; rerun to resume"
            )
        return report

    def _retrieve_series(
        self, ref: SeriesRef, cache: Path, method: str, move_aet: str | None
    ) -> tuple[int, int]:
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        kwargs: dict[str, Any] = {}
        if method == "move":
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        else:
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
            # One context per syntax: the PACS accepts one syntax per context, and can then
            # send each instance as stored instead of transcoding (or failing to).
            for sop_class in GET_STORAGE_CLASSES:
                for syntax in GET_TRANSFER_SYNTAXES:
                    ae.add_requested_context(sop_class, syntax)
            kwargs["ext_neg"] = [build_role(c, scp_role=True) for c in GET_STORAGE_CLASSES]
            kwargs["evt_handlers"] = [(evt.EVT_C_STORE, _handle_store, [cache])]
        with self._association(ae, **kwargs) as assoc:
            uids = self.find_instances(assoc, ref)
            folder = series_folder(cache, ref.study_uid, ref.series_uid)
            missing = absent(folder, uids)
            if missing:
                keys = [None] if len(missing) == len(uids) else missing
                for sop_uid in keys:
                    self._send_retrieve(assoc, ref, sop_uid, method, move_aet)
            still = absent(folder, missing)
        if still:
            raise PacsError(f"{len(still)} of {len(uids)} instances did not arrive")
        return mark_complete(cache, ref, uids, missing)

    def _send_retrieve(
        self,
        assoc: Association,
        ref: SeriesRef,
        sop_uid: str | None,
        method: str,
        move_aet: str | None,
    ) -> None:
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES" if sop_uid is None else "IMAGE"
        query.StudyInstanceUID = ref.study_uid
        query.SeriesInstanceUID = ref.series_uid
        if sop_uid is not None:
            query.SOPInstanceUID = sop_uid
        if method == "move":
            responses = assoc.send_c_move(
                query, move_aet or "", StudyRootQueryRetrieveInformationModelMove
            )
        else:
            responses = assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
        final = None
        for status, _identifier in responses:
            if not status:
                raise PacsError(f"C-{method.upper()} timed out or was aborted")
            final = int(status.Status)
        if final is None:
            raise PacsError(f"C-{method.upper()} ended without a final status")
        if final not in (0x0000, 0xB000):
            raise PacsError(f"C-{method.upper()} ended with status 0x{final:04X}")


def _received_bytes(event: evt.Event) -> bytes:
    """Return the received instance in the DICOM File Format, however pynetdicom kept it.

    pynetdicom's chunked receive (switched on process-wide while a node SCP runs in the same
    process) leaves the instance in a file and no bytes in the request.
    """
    try:
        kept = event.dataset_path
    except AttributeError:
        kept = None
    if kept is None:  # chunked receive off: the bytes are in the request
        return event.encoded_dataset(include_meta=True)
    return Path(kept).read_bytes()


def _handle_store(event: evt.Event, cache: Path) -> int:
    """Keep one received instance in the cache, durably; return a DIMSE status.

    The same durable write as the node's own SCP (:func:`sswe_node.node.storage.atomic_write`:
    temporary file, ``fsync``, rename, folder ``fsync``), so a crash never leaves a half-written
    file that looks cached, and Success is only answered once the instance is on disk.
    """
    try:
        ds = event.dataset
        path = cached_path(
            cache,
            str(ds.get("StudyInstanceUID", "")),
            str(ds.get("SeriesInstanceUID", "")),
            str(event.request.AffectedSOPInstanceUID),
        )
        atomic_write(path, _received_bytes(event))
    except PacsError:
        return int(Status.CANNOT_UNDERSTAND_UIDS)
    except OSError as exc:
        logger.error("cannot write to the retrieval cache: %s", exc)
        return int(Status.OUT_OF_RESOURCES)
    return int(Status.SUCCESS)


def _start_store_scp(cache: Path, ae_title: str, bind: str, port: int) -> Any:
    ae = AE(ae_title=ae_title)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.maximum_associations = 16
    try:
        server = ae.start_server(
            (bind, port), block=False, evt_handlers=[(evt.EVT_C_STORE, _handle_store, [cache])]
        )
    except OSError as exc:
        raise PacsError(f"cannot listen on {bind}:{port} for C-MOVE: {exc}") from None
    logger.info("C-MOVE destination %s listening on %s:%d", ae_title, bind, port)
    return server


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total or None, unit="inst", desc="retrieve", leave=False)
