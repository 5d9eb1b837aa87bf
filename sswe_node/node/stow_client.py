"""STOW-RS to DICOMweb destinations: one request per batch, an outcome per instance.

The sender hands the due sends of a destination with a ``url`` here; each comes back as
``sent``, ``retry`` or ``failed`` (for good) with a reason, decided by the HTTP status and the
STOW-RS response's ReferencedSOPSequence / FailedSOPSequence (PS3.18 10.5.3):

- 200/202: an instance in ReferencedSOPSequence is sent; one in FailedSOPSequence is retried
  when its FailureReason is transient (``0xA7xx`` out of resources, ``0x0110`` processing
  failure, any code not listed next) and failed for good when permanent (``0xA9xx`` data set
  does not match the SOP class, ``0xCxxx`` cannot understand, ``0x0122`` SOP class not
  supported, ``0x0124`` not authorised); one in neither list is retried.
- 409: as above, and an instance not listed has failed for good (the server stored nothing).
- 408, 425, 429, 5xx, 401, 403, a refused connection or a time-out: every instance retried
  (credentials can be fixed; busy servers recover). Other 4xx: failed for good.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import fromstring

import requests
from dicomweb_client import DICOMwebClient
from pydicom import Dataset, dcmread

from sswe_node.errors import ConfigError
from sswe_node.node.records import SendJob
from sswe_node.node.web_session import WebAuth, apply_auth, describe_request_error

LOGGER = logging.getLogger(__name__)

SENT, RETRY, FAILED = "sent", "retry", "failed"

#: HTTP statuses after which the same request is tried again later.
RETRY_HTTP = frozenset({401, 403, 408, 425, 429})
#: PS3.18 Table 10.5.3-3 failure reasons that a resend cannot fix.
_PERMANENT_REASONS = frozenset({0x0122, 0x0124, 0xC122})


@dataclass(frozen=True)
class StowOutcome:
    """What became of one send."""

    job: SendJob
    outcome: str
    reason: str = ""


@dataclass(frozen=True)
class WebDestination:
    """Where and how to STOW: the DICOMweb base URL, credentials and the request time-out."""

    url: str
    auth: WebAuth = WebAuth()
    timeout: float = 30.0


def failure_is_permanent(reason: int) -> bool:
    """Return whether a STOW-RS FailureReason means a resend cannot succeed."""
    return reason in _PERMANENT_REASONS or 0xA900 <= reason <= 0xA9FF or 0xC000 <= reason <= 0xCFFF


class StowClient:
    """Send files to one DICOMweb server by STOW-RS (``POST {url}/studies``).

    Parameters
    ----------
    destination : WebDestination
        The server, its credentials and the time-out of each request.
    """

    def __init__(self, destination: WebDestination) -> None:
        self.destination = destination
        self._response: requests.Response | None = None
        self._client = DICOMwebClient(
            destination.url,
            timeout=destination.timeout,
            callback=self._keep_response,
            headers={"Accept": "application/dicom+json, application/dicom+xml;q=0.5"},
        )
        # One try per request here: the persistent queue retries with its own back-off.
        self._client.set_http_retry_params(retry=False)
        # dicomweb-client's retry wrapper logs every failed try with a traceback; the sender
        # logs each failure once itself.
        logging.getLogger("retrying").setLevel(logging.ERROR)

    def _keep_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> Any:
        self._response = response
        return response

    def store(self, jobs: Sequence[SendJob]) -> list[StowOutcome]:
        """STOW the output files of ``jobs`` in one request; return one outcome per job."""
        datasets: list[Dataset] = []
        outcomes: list[StowOutcome] = []
        sendable: list[SendJob] = []
        for job in jobs:
            try:
                datasets.append(dcmread(job.path))
                sendable.append(job)
            except Exception as exc:  # noqa: BLE001 - a lost output file fails for good
                outcomes.append(StowOutcome(job, FAILED, f"cannot read output: {exc}"))
        if not sendable:
            return outcomes
        self._response = None
        try:
            apply_auth(self._client._session, self.destination.auth)  # secrets re-read
            self._client.store_instances(datasets)
        except ConfigError as exc:
            return outcomes + [StowOutcome(j, RETRY, str(exc)) for j in sendable]
        except requests.Timeout:
            reason = f"no answer within {self.destination.timeout:g} s (timed out)"
            return outcomes + [StowOutcome(j, RETRY, reason) for j in sendable]
        except requests.ConnectionError as exc:
            reason = f"connection failed: {describe_request_error(exc)}"
            return outcomes + [StowOutcome(j, RETRY, reason) for j in sendable]
        except requests.HTTPError:
            pass  # the status and body decide, below
        except Exception as exc:  # noqa: BLE001 - an unreadable answer is retried
            if self._response is None:
                reason = f"STOW-RS request failed: {type(exc).__name__}: {_short(exc)}"
                return outcomes + [StowOutcome(j, RETRY, reason) for j in sendable]
        if self._response is None:
            reason = "STOW-RS request got no response"
            return outcomes + [StowOutcome(j, RETRY, reason) for j in sendable]
        return outcomes + judge_response(
            self._response.status_code,
            self._response.reason or "",
            self._response.headers.get("Content-Type", ""),
            self._response.content,
            sendable,
            [str(ds.SOPInstanceUID) for ds in datasets],
        )


def judge_response(
    status: int,
    phrase: str,
    content_type: str,
    body: bytes,
    jobs: Sequence[SendJob],
    uids: Sequence[str],
) -> list[StowOutcome]:
    """Decide each job's outcome from a STOW-RS response.

    Parameters
    ----------
    status, phrase : int, str
        The HTTP status code and reason phrase.
    content_type : str
        The response's media type.
    body : bytes
        The response body (a DICOM JSON object or a PS3.19 XML ``NativeDicomModel``).
    jobs : sequence of SendJob
        The sends of the request, in order.
    uids : sequence of str
        The SOP Instance UIDs sent, one per job.
    """
    http = f"HTTP {status} {phrase}".strip()
    if not (200 <= status < 300 or status == 409):
        final = 400 <= status < 500 and status not in RETRY_HTTP
        detail = _body_hint(body)
        reason = f"{http}{': ' + detail if detail else ''}"
        return [StowOutcome(j, FAILED if final else RETRY, reason) for j in jobs]
    referenced, failed = _parse_lists(content_type, body)
    if status == 200 and not referenced and not failed:
        # A server that says "all stored" without a body (not PS3.18, but seen).
        return [StowOutcome(j, SENT, http) for j in jobs]
    outcomes = []
    for job, uid in zip(jobs, uids, strict=True):
        if uid in failed:
            code = failed[uid]
            permanent = failure_is_permanent(code)
            reason = f"{http}, FailureReason 0x{code:04X}" if code >= 0 else f"{http}, failed"
            outcomes.append(StowOutcome(job, FAILED if permanent else RETRY, reason))
        elif uid in referenced:
            outcomes.append(StowOutcome(job, SENT, http))
        elif status == 409:
            outcomes.append(StowOutcome(job, FAILED, f"{http}: nothing stored"))
        else:
            outcomes.append(StowOutcome(job, RETRY, f"{http}: not in the STOW-RS response"))
    return outcomes


def _parse_lists(content_type: str, body: bytes) -> tuple[set[str], dict[str, int]]:
    """Return the referenced UIDs and ``{failed UID: FailureReason}`` of a STOW-RS response."""
    if not body.strip():
        return set(), {}
    try:
        if "xml" in content_type.lower():
            # dicomweb-client's own PS3.19 reader (not public API; the same it uses itself).
            from dicomweb_client.web import _load_xml_dataset

            ds = _load_xml_dataset(fromstring(body))
        else:
            ds = Dataset.from_json(body.decode("utf-8"))
    except Exception:  # noqa: BLE001 - unreadable: nobody is listed
        LOGGER.warning("event=stow-response-unreadable content_type=%s", content_type)
        return set(), {}
    referenced = {
        str(item.get("ReferencedSOPInstanceUID", ""))
        for item in ds.get("ReferencedSOPSequence", None) or []
    }
    failed = {}
    for item in ds.get("FailedSOPSequence", None) or []:
        reason = item.get("FailureReason", None)
        failed[str(item.get("ReferencedSOPInstanceUID", ""))] = (
            int(reason) if reason is not None else -1
        )
    return referenced - {""}, failed


def _body_hint(body: bytes, limit: int = 120) -> str:
    text = body[:limit].decode("utf-8", "replace").strip()
    if not text or text.startswith("{") or text.startswith("<?xml"):
        return ""
    return " ".join(text.split())


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return text[:limit]


class StowSender:
    """The sender's STOW-RS side: batches per destination, outcomes applied by callbacks.

    Parameters
    ----------
    destinations : mapping
        ``{destination name: WebDestination}`` from the configuration; a queued send whose
        destination is no longer configured goes to its recorded URL without credentials.
    batch_size : int
        Instances per STOW-RS request.
    """

    def __init__(self, destinations: Mapping[str, WebDestination], batch_size: int = 20) -> None:
        self.destinations = dict(destinations)
        self.batch_size = max(1, batch_size)
        self._clients: dict[tuple[str, str], StowClient] = {}

    def client(self, job: SendJob) -> StowClient:
        """Return the (cached) client for a job's destination and URL."""
        key = (job.destination, job.url)
        if key not in self._clients:
            known = self.destinations.get(job.destination)
            if known is None or known.url.rstrip("/") != job.url.rstrip("/"):
                known = WebDestination(job.url)
            self._clients[key] = StowClient(known)
        return self._clients[key]

    def send(
        self,
        jobs: Sequence[SendJob],
        on_outcome: Callable[[StowOutcome], None],
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        """STOW ``jobs`` (grouped by destination, ``batch_size`` a request), report each."""
        groups: dict[tuple[str, str], list[SendJob]] = {}
        for job in jobs:
            groups.setdefault((job.destination, job.url), []).append(job)
        for group in groups.values():
            for start in range(0, len(group), self.batch_size):
                if stop():
                    return
                chunk = group[start : start + self.batch_size]
                began = time.perf_counter()
                outcomes = self.client(chunk[0]).store(chunk)
                LOGGER.debug(
                    "event=stow destination=%s count=%d seconds=%.3f",
                    chunk[0].destination, len(chunk), time.perf_counter() - began,
                )  # fmt: skip
                for outcome in outcomes:
                    on_outcome(outcome)


def web_destinations(destinations: Sequence[Any]) -> dict[str, WebDestination]:
    """Return ``{name: WebDestination}`` of the configured destinations that have a ``url``."""
    return {
        d.name: WebDestination(d.url.rstrip("/"), WebAuth.of(d), d.timeout)
        for d in destinations
        if getattr(d, "url", "")
    }
