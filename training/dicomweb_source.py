"""Search a DICOMweb archive (QIDO-RS) and retrieve series into the resumable cache (WADO-RS).

The same filters, cache layout, completion markers and report as the PACS source
(:mod:`training.pacs`), so a dataset built over DICOMweb is built from the same cache folders
as one built over C-MOVE or C-GET.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests
from dicomweb_client import DICOMwebClient
from pydicom import Dataset, dcmwrite

from sswe_node.errors import SsweError
from sswe_node.node.storage import atomic_write
from sswe_node.node.web_session import WebAuth, apply_auth, describe_request_error
from training.pacs import (
    QueryFilters,
    RetrieveReport,
    SeriesRef,
    absent,
    cached_path,
    mark_complete,
    matching_series,
    retrieve_each,
    series_folder,
    split_cached,
)

logger = logging.getLogger(__name__)

#: WADO-RS media type: DICOM instances in the transfer syntax the archive stores.
AS_STORED = (("application/dicom", "*"),)
_LEVEL_KEY = {"studies": "StudyInstanceUID", "series": "SeriesInstanceUID",
              "instances": "SOPInstanceUID"}  # fmt: skip
_SERIES_FIELDS = ("Modality", "StationName", "Manufacturer", "NumberOfSeriesRelatedInstances")


class DicomwebError(SsweError):
    """A QIDO-RS search or a WADO-RS retrieval failed."""

    reason = "dicomweb"


class DicomwebSource:
    """QIDO-RS and WADO-RS client for one DICOMweb archive.

    Parameters
    ----------
    url : str
        The DICOMweb base URL (``https://host/dicom-web``).
    auth : WebAuth
        Credentials (bearer token, HTTP basic, client certificate, CA bundle).
    timeout : float
        Seconds per HTTP request.
    page_size : int
        QIDO-RS ``limit`` per request (the next page is asked with ``offset``).
    attempts : int
        Tries per request: a refused connection, a time-out or a 408, 429, 503, 504 answer is
        tried again after 2, 4, 8, 16 s (dicomweb-client's retry), so 5 ride out a 30 s outage.
    """

    def __init__(
        self,
        url: str,
        auth: WebAuth | None = None,
        timeout: float = 60.0,
        page_size: int = 1000,
        attempts: int = 5,
    ) -> None:
        self.url = url.rstrip("/")
        self.auth = auth or WebAuth()
        self.timeout = timeout
        self.page_size = page_size
        self.attempts = max(1, attempts)
        self._local = threading.local()

    def __str__(self) -> str:
        return self.url

    def client(self) -> DICOMwebClient:
        """Return this thread's client (a requests session is not shared across threads)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = DICOMwebClient(self.url, timeout=self.timeout)
            client.set_http_retry_params(retry=self.attempts > 1, max_attempts=self.attempts)
            apply_auth(client._session, self.auth)
            self._local.client = client
        return client

    # -- QIDO-RS -----------------------------------------------------------------------------

    def find_series(self, filters: QueryFilters) -> list[SeriesRef]:
        """Search studies, then their series, keeping those that match the filters.

        Studies are searched by ``PatientID`` (one search per listed patient), ``StudyDate``
        range and ``ModalitiesInStudy``; series by ``Modality``. StationName and Manufacturer
        are matched here (``*``/``?`` wildcards), like every other key again, so an archive
        that ignores a key still gives the right series.

        Returns
        -------
        list of SeriesRef
            Sorted by study then series UID.
        """
        studies: set[str] = set()
        for patient in filters.patients or ("",):
            search: dict[str, Any] = {}
            if patient:
                search["PatientID"] = patient
            if filters.date_range():
                search["StudyDate"] = filters.date_range()
            if filters.modality:
                search["ModalitiesInStudy"] = filters.modality
            for found in self._search("studies", search_filters=search, fields=["PatientID"]):
                if patient and str(found.get("PatientID", patient)) != patient:
                    continue
                uid = str(found.get("StudyInstanceUID", ""))
                if uid:
                    studies.add(uid)
        series: dict[str, SeriesRef] = {}
        for study_uid in sorted(studies):
            search = {"Modality": filters.modality} if filters.modality else {}
            found_series = self._search(
                "series", study_uid, search_filters=search, fields=list(_SERIES_FIELDS)
            )
            for found in found_series:
                ref = matching_series(study_uid, found, filters)
                if ref is not None:
                    series[ref.series_uid] = ref
        logger.info("QIDO-RS on %s: %d studies, %d series", self, len(studies), len(series))
        return sorted(series.values(), key=lambda s: (s.study_uid, s.series_uid))

    def find_instances(self, ref: SeriesRef) -> list[str]:
        """Return the SOP Instance UIDs of one series (QIDO-RS), sorted."""
        found = self._search("instances", ref.study_uid, ref.series_uid)
        return sorted({str(f.get("SOPInstanceUID", "")) for f in found} - {""})

    def _search(self, level: str, *uids: str, **kwargs: Any) -> list[Dataset]:
        """Run one QIDO-RS search, following ``limit``/``offset`` pages to the end.

        Paging stops at a short or empty page, or at a page with nothing new (a server that
        ignores ``offset``, as Orthanc's plugin 1.7 does: dicomweb-client's own paging then
        never ends).
        """
        method = getattr(self.client(), f"search_for_{level}")
        key = _LEVEL_KEY[level]
        found: dict[str, Dataset] = {}
        offset = 0
        while True:
            try:
                page = method(*uids, limit=self.page_size, offset=offset or None, **kwargs)
            except requests.RequestException as exc:
                why = describe_request_error(exc)
                raise DicomwebError(f"QIDO-RS search for {level} at {self} failed: {why}") from None
            answers = [Dataset.from_json(answer) for answer in page]
            new = {str(a.get(key, "")): a for a in answers if str(a.get(key, "")) not in found}
            found.update(new)
            if len(answers) < self.page_size or not new:
                if answers and not new:
                    logger.warning(
                        "QIDO-RS at %s repeats a page at offset %d: results may be incomplete "
                        "(the server does not page by offset)", self, offset,
                    )  # fmt: skip
                return list(found.values())
            offset += len(answers)

    # -- WADO-RS -----------------------------------------------------------------------------

    def retrieve(
        self,
        series: Sequence[SeriesRef],
        cache_dir: str | Path,
        *,
        parallel: int = 4,
        progress: bool = False,
    ) -> RetrieveReport:
        """Retrieve series into ``cache_dir``, fetching only what is not there yet.

        A series whose completion marker matches its instance count is skipped without a
        request; otherwise its instances are listed (QIDO-RS) and only the missing ones are
        fetched (WADO-RS: the whole series in one request when none is cached, else instance
        by instance), as stored (``transfer-syntax=*``).

        Parameters
        ----------
        series : sequence of SeriesRef
            From :meth:`find_series`.
        cache_dir : path-like
            The cache folder (created if absent); one file per instance, written durably.
        parallel : int
            Series retrieved at once (simultaneous HTTP requests).
        progress : bool
            Show a progress bar (instances) on standard error.

        Raises
        ------
        DicomwebError
            When some series could not be retrieved completely (after trying them all).
        """
        cache = Path(cache_dir)
        report, todo = split_cached(series, cache, "WADO-RS")
        retrieve_each(
            todo,
            lambda ref: self._retrieve_series(ref, cache),
            report,
            parallel=parallel,
            progress=progress,
        )
        if report.failed_series:
            raise DicomwebError(
                f"{len(report.failed_series)} of {len(series)} series could not be retrieved "
                f"completely from {self}; rerun to resume"
            )
        return report

    def _retrieve_series(self, ref: SeriesRef, cache: Path) -> tuple[int, int]:
        uids = self.find_instances(ref)
        folder = series_folder(cache, ref.study_uid, ref.series_uid)
        missing = absent(folder, uids)
        client = self.client()
        try:
            if missing and len(missing) == len(uids):
                for ds in client.iter_series(ref.study_uid, ref.series_uid, media_types=AS_STORED):
                    _keep(cache, ref, ds)
            else:
                for sop_uid in missing:
                    ds = client.retrieve_instance(
                        ref.study_uid, ref.series_uid, sop_uid, media_types=AS_STORED
                    )
                    _keep(cache, ref, ds)
        except requests.RequestException as exc:
            why = describe_request_error(exc)
            raise DicomwebError(f"WADO-RS retrieval from {self} failed: {why}") from None
        still = absent(folder, missing)
        if still:
            raise DicomwebError(f"{len(still)} of {len(uids)} instances did not arrive")
        return mark_complete(cache, ref, uids, missing)


def _keep(cache: Path, ref: SeriesRef, ds: Dataset) -> None:
    """Write one retrieved instance to its cache file, durably (file meta as received)."""
    path = cached_path(cache, ref.study_uid, ref.series_uid, str(ds.SOPInstanceUID))
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    atomic_write(path, buffer.getvalue())
