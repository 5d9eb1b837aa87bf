"""The sender: C-STORE queued outputs to their destinations, retrying with exponential backoff."""

from __future__ import annotations

import datetime as dt
import logging
import random
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config

from sswe_node.config import Destination, NodeSettings, SendingSettings, TlsSettings
from sswe_node.node.background import QueueThread
from sswe_node.node.leases import process_owner
from sswe_node.node.metrics import Metrics
from sswe_node.node.records import SendJob
from sswe_node.node.schema import utcnow
from sswe_node.node.store import CaseStore
from sswe_node.node.stow_client import RETRY as STOW_RETRY
from sswe_node.node.stow_client import SENT as STOW_SENT
from sswe_node.node.stow_client import StowOutcome, StowSender, web_destinations

LOGGER = logging.getLogger(__name__)

_MAX_CONTEXTS = 120
_CHUNKED_LOCK = threading.Lock()
# Transfer syntaxes pynetdicom converts between when sending a file.
_CONVERTIBLE_ORDER = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_CONVERTIBLE = frozenset(str(s) for s in _CONVERTIBLE_ORDER)


def backoff_seconds(
    attempts: int, settings: SendingSettings, rng: random.Random | None = None
) -> float:
    """Return the wait before the next try after ``attempts`` failed tries (1, 2, ...).

    ``initial_backoff_seconds * 2**(attempts-1)``, at most ``max_backoff_seconds``, then
    shortened by a random fraction of up to ``backoff_jitter``, so that sends that failed
    together (a destination that was down) do not all come back at the same instant.
    """
    wait = min(
        settings.initial_backoff_seconds * (2 ** max(attempts - 1, 0)),
        settings.max_backoff_seconds,
    )
    jitter = settings.backoff_jitter * (rng or random).random()
    return float(wait * (1.0 - jitter))


def client_ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    """Return a TLS context for sending to a destination that asks for TLS."""
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=tls.ca_certificates or None
    )
    context.check_hostname = False
    if not tls.ca_certificates:
        context.verify_mode = ssl.CERT_NONE
    if tls.certificate and tls.private_key:
        context.load_cert_chain(tls.certificate, tls.private_key)
    return context


class Sender(QueueThread):
    """A background thread that drains the persistent send queue of the case store.

    Parameters
    ----------
    store : CaseStore
        The case store holding the queue.
    ae_title : str
        Our AE title (the calling AE of the associations).
    sending : SendingSettings
        Retry policy.
    tls : TlsSettings
        Used for destinations marked ``tls = true``.
    wake : threading.Event
        Set by the workers when they queue sends.
    stop : threading.Event
        Set to stop after the current destination.
    metrics : Metrics
        Counters to update.
    poll_seconds : float
        Longest sleep between looks at the queue.
    timeouts : NodeSettings, optional
        Its ``acse_timeout``, ``dimse_timeout`` and ``network_timeout`` are used for the
        associations to destinations (the ACSE timeout also bounds the TCP connection), so a
        destination that does not answer cannot hold the queue up (default: pynetdicom's).
    linger_seconds : float
        How long an association is kept open, while cases are in processing, for outputs
        that are not due yet (0: released as soon as the due outputs are sent).
    destinations : sequence of Destination
        The configured destinations; those with a ``url`` give the STOW-RS credentials and
        time-out (sends with a ``url`` go by STOW-RS, :mod:`sswe_node.node.stow_client`).
    """

    def __init__(
        self,
        store: CaseStore,
        ae_title: str,
        sending: SendingSettings,
        tls: TlsSettings,
        wake: threading.Event,
        stop: threading.Event,
        metrics: Metrics,
        poll_seconds: float = 1.0,
        timeouts: NodeSettings | None = None,
        linger_seconds: float = 0.0,
        destinations: Sequence[Destination] = (),
    ) -> None:
        super().__init__("sswe-sender", store, wake, stop, metrics)
        self.web = StowSender(web_destinations(destinations), sending.stow_batch_size)
        self.ae_title = ae_title
        self.sending = sending
        self.tls = tls
        self.poll_seconds = poll_seconds
        self.timeouts = timeouts
        self.linger_seconds = linger_seconds
        self.owner = process_owner()
        self._held: set[int] = set()  # sends claimed and not yet sent, failed or given back

    def run(self) -> None:
        """Send due outputs until stopped."""
        self.drain()

    def _release_dead_claims(self) -> None:
        """Take back the send claims of this host's senders that died (every few seconds)."""
        if not self.dead_work_check_due():
            return
        released = self.store.release_dead_claims()
        if released:
            LOGGER.info("event=send-claims-released count=%d", released)

    def step(self) -> int:
        """Send what is due (see :meth:`send_due`)."""
        return self.send_due()

    def idle_seconds(self) -> float:
        """Sleep until the earliest queued send is due, at most ``poll_seconds``."""
        due = self.store.next_send_due()
        if due is None:
            return self.poll_seconds
        return max(0.01, min(self.poll_seconds, (due - utcnow()).total_seconds()))

    def send_due(self) -> int:
        """Send every due output once (grouped by destination); return how many were tried.

        Each send is claimed first (:meth:`CaseStore.claim_sends`), so a send is never tried
        twice at once, by this sender on a kept association or by another; what was claimed
        and not tried is given back at the end.
        """
        self._release_dead_claims()
        try:
            return self._send_claimed(self._claim(limit=500))
        finally:
            if self._held:
                self.store.release_sends(sorted(self._held), self.owner)
                self._held.clear()

    def _claim(self, limit: int, destination: tuple[str, str, int, bool] | None = None) -> list:
        jobs = self.store.claim_sends(
            self.owner, limit, self.sending.lease_seconds, destination=destination
        )
        self._held.update(job.id for job in jobs)
        return jobs

    def _send_claimed(self, jobs: list[SendJob]) -> int:
        web = [job for job in jobs if job.url]
        if web:  # STOW-RS destinations
            self.web.send(web, self._web_outcome, self.stop_event.is_set)
        groups: dict[tuple[str, str, int, bool], list[SendJob]] = defaultdict(list)
        for job in jobs:
            if job.url:
                continue
            groups[(job.ae_title, job.host, job.port, job.tls)].append(job)
        for (ae_title, host, port, use_tls), group in groups.items():
            if self.stop_event.is_set():
                break
            for start in range(0, len(group), _MAX_CONTEXTS):
                chunk = group[start : start + _MAX_CONTEXTS]
                self._send_group(ae_title, host, port, use_tls, chunk)
        return len(jobs)

    def new_ae(self) -> AE:
        """Return the AE that calls destinations: our AE title, no PDU limit, the timeouts."""
        ae = AE(ae_title=self.ae_title)
        ae.maximum_pdu_size = 0
        if self.timeouts is not None:
            ae.connection_timeout = self.timeouts.acse_timeout
            ae.acse_timeout = self.timeouts.acse_timeout
            ae.dimse_timeout = self.timeouts.dimse_timeout
            ae.network_timeout = self.timeouts.network_timeout
        return ae

    def _send_group(
        self, ae_title: str, host: str, port: int, use_tls: bool, jobs: Sequence[SendJob]
    ) -> None:
        """Send ``jobs`` on one association, then keep it for what gets due while work is left.

        While cases wait for or are in processing, the association stays open up to
        ``linger_seconds`` for the outputs of the next batches, so a burst costs one
        association per destination rather than one per batch.
        """
        ae = self.new_ae()
        usable, contexts = self._usable(jobs)
        if not usable:
            return
        split = sum(len(syntaxes) + 1 for syntaxes in contexts.values()) <= _MAX_CONTEXTS
        for sop_class, syntaxes in contexts.items():
            fallbacks = [s for s in _CONVERTIBLE_ORDER if s not in syntaxes]
            if not split:  # too many classes for a context per syntax: one context each
                ae.add_requested_context(sop_class, sorted(syntaxes) + fallbacks)
                continue
            # One context per stored transfer syntax, so an acceptor that prefers another
            # syntax still accepts the stored one and the files go as they are; then one
            # with the uncompressed syntaxes pynetdicom can convert to.
            for syntax in sorted(syntaxes):
                ae.add_requested_context(sop_class, [syntax])
            if fallbacks:
                ae.add_requested_context(sop_class, fallbacks)
        tls_args = (client_ssl_context(self.tls), None) if use_tls else None
        started = time.perf_counter()
        assoc = ae.associate(host, port, ae_title=ae_title, tls_args=tls_args)
        if not assoc.is_established:
            reason = "association rejected" if assoc.is_rejected else "association failed"
            LOGGER.warning(
                "event=send-deferred destination=%s@%s:%d reason=%s count=%d",
                ae_title, host, port, reason.replace(" ", "-"), len(usable),
            )  # fmt: skip
            for job in usable:
                self._failed(job, reason)
            return
        try:
            self._send_on(assoc, usable)
            accepted = {
                (str(c.abstract_syntax), str(c.transfer_syntax[0])) for c in assoc.accepted_contexts
            }
            while assoc.is_established and not self.stop_event.is_set():
                more = self._next_due((ae_title, host, port, use_tls))
                fits, _ = self._usable(more, accepted) if more else ([], {})
                if not fits:
                    break  # nothing more, or outputs this association cannot carry
                self._send_on(assoc, fits)
        finally:
            if assoc.is_established:
                assoc.release()
        self.metrics.observe("stage_seconds", time.perf_counter() - started, stage="send")

    def _usable(
        self, jobs: Sequence[SendJob], accepted: set[tuple[str, str]] | None = None
    ) -> tuple[list[SendJob], dict[str, set[str]]]:
        """Return the jobs whose output file is readable (and fits ``accepted``), by context.

        A job whose file cannot be read fails for good; one that does not fit the accepted
        contexts is left queued for a new association.
        """
        contexts: dict[str, set[str]] = defaultdict(set)
        usable: list[SendJob] = []
        classes = {sop_class for sop_class, _ in accepted} if accepted is not None else set()
        for job in jobs:
            try:
                meta = read_file_meta_info(job.path)
            except Exception as exc:  # noqa: BLE001 - a lost output file fails for good
                self._failed(job, f"cannot read output: {type(exc).__name__}", final=True)
                continue
            sop_class = str(meta.MediaStorageSOPClassUID)
            syntax = str(meta.TransferSyntaxUID)
            if accepted is not None and not (
                (sop_class, syntax) in accepted or (sop_class in classes and syntax in _CONVERTIBLE)
            ):
                break  # keep the queue's order: the rest goes on the next association
            contexts[sop_class].add(syntax)
            usable.append(job)
        return usable, contexts

    def _next_due(self, destination: tuple[str, str, int, bool]) -> list[SendJob]:
        """Return the sends due to ``destination``, waiting for them while work is in progress.

        Returns nothing at once when another destination has sends due (it is not held up)
        or when no case waits for or is in processing.
        """
        deadline = time.monotonic() + self.linger_seconds
        while not self.stop_event.is_set():
            jobs = self._claim(limit=_MAX_CONTEXTS, destination=destination)
            if jobs:
                return jobs
            left = deadline - time.monotonic()
            if left <= 0 or self.store.due_sends(limit=1) or not self.store.work_in_progress():
                return []
            self.wake.wait(min(left, self.poll_seconds))
            self.wake.clear()
        return []

    def _send_on(self, assoc: Any, jobs: Sequence[SendJob]) -> None:
        for job in jobs:
            if not assoc.is_established:  # aborted by the peer or a timeout: retry later
                self._failed(job, "association lost")
                continue
            try:
                status = self._send_file(assoc, job.path)
            except Exception as exc:  # noqa: BLE001 - a send error is retried
                self._failed(job, f"{type(exc).__name__}: {exc}")
                continue
            code = int(getattr(status, "Status", -1)) if status else -1
            if code in (0x0000, 0xB000, 0xB007, 0xB006):
                self._held.discard(job.id)
                if not self.store.mark_sent(job.id, self.owner):
                    LOGGER.warning("event=send-already-recorded output=%d", job.id)
                    continue
                self.metrics.inc("sent_total", destination=job.destination)
                LOGGER.info(
                    "event=sent output=%d destination=%s status=0x%04X", job.id,
                    job.destination, code,
                )  # fmt: skip
            elif code == -1:
                self._failed(job, "no response (connection lost or timed out)")
            else:
                self._failed(job, f"C-STORE status 0x{code:04X}")

    def _send_file(self, assoc: Any, path: str) -> Any:
        """C-STORE the file at ``path``; its encoded bytes are sent as they are when possible.

        When the peer accepted the file's own SOP class and transfer syntax, pynetdicom's
        chunked send streams the stored bytes (no decoding and re-encoding, which would cost
        more CPU, under the GIL, than the rest of sending); otherwise the dataset is read and
        converted to an accepted transfer syntax.
        """
        meta = read_file_meta_info(path)
        key = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
        exact = any(
            (str(c.abstract_syntax), str(c.transfer_syntax[0])) == key
            for c in assoc.accepted_contexts
        )
        if not exact:
            return assoc.send_c_store(path)
        with _CHUNKED_LOCK:
            # pynetdicom reads this process-wide switch during the call only; the lock keeps
            # two senders from interleaving their set and restore.
            previous = _config.STORE_SEND_CHUNKED_DATASET
            _config.STORE_SEND_CHUNKED_DATASET = True
            try:
                return assoc.send_c_store(path)
            finally:
                _config.STORE_SEND_CHUNKED_DATASET = previous

    def _web_outcome(self, outcome: StowOutcome) -> None:
        """Record a STOW-RS outcome: sent, retried with back-off, or failed for good."""
        job = outcome.job
        if outcome.outcome == STOW_SENT:
            self._held.discard(job.id)
            if not self.store.mark_sent(job.id, self.owner):
                return
            self.metrics.inc("sent_total", destination=job.destination)
            LOGGER.info(
                "event=sent output=%d destination=%s stow=%s", job.id, job.destination,
                outcome.reason.replace(" ", "-"),
            )  # fmt: skip
            return
        if outcome.outcome == STOW_RETRY:
            LOGGER.warning(
                "event=send-deferred output=%d destination=%s reason=%s", job.id,
                job.destination, outcome.reason.replace(" ", "-"),
            )  # fmt: skip
        self._failed(job, outcome.reason, final=outcome.outcome != STOW_RETRY)

    def _failed(self, job: SendJob, error: str, final: bool = False) -> None:
        self._held.discard(job.id)
        attempts = job.attempts + 1
        if final or attempts >= self.sending.max_attempts:
            self.store.mark_send_failed(job.id, error, None)
            self.metrics.inc("send_failed_total", destination=job.destination)
            LOGGER.error(
                "event=send-failed output=%d destination=%s attempts=%d error=%s",
                job.id, job.destination, attempts, error,
            )  # fmt: skip
            return
        retry_at = utcnow() + dt.timedelta(seconds=backoff_seconds(attempts, self.sending))
        self.store.mark_send_failed(job.id, error, retry_at)
        self.metrics.inc("send_retries_total", destination=job.destination)
