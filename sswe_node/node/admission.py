"""Admission of associations: request timeout, limit on established associations, bounded stop.

pynetdicom counts every acceptor thread against ``maximum_associations``, including TCP
connections that never completed an A-ASSOCIATE-RQ and associations it has just rejected, and
a connection that sends half a request blocks its reader forever. This module keeps its own
account instead: a connection gets ``association_request_timeout`` seconds to complete its
request (then its socket is shut down), and only admitted associations count against the
limit.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from sswe_node.node.status import REJECT_LOCAL_LIMIT

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.events import Event

LOGGER = logging.getLogger(__name__)

PENDING_PER_SLOT = 8
"""Connections still sending their request that are kept per association slot (more are closed
at once), so that a flood of bare connections cannot grow the thread count without bound."""


class Admission:
    """Tracks connections and admitted associations of one SCP.

    Parameters
    ----------
    max_associations : int
        The most associations admitted at the same time.
    request_timeout : float
        Seconds a connection has to complete its A-ASSOCIATE-RQ.
    acse_timeout : float
        The ACSE timeout of admitted associations (release negotiation).
    """

    def __init__(self, max_associations: int, request_timeout: float, acse_timeout: float) -> None:
        self.max_associations = max_associations
        self.request_timeout = request_timeout
        self.acse_timeout = acse_timeout
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[Association, float]] = {}
        self._admitted: dict[int, Association] = {}

    # -- pynetdicom events ---------------------------------------------------------------------

    def on_connection(self, event: Event) -> None:
        """``EVT_CONN_OPEN``: start the request clock (and shorten pynetdicom's own timers)."""
        assoc = event.assoc
        if not assoc.is_acceptor:
            return
        # Idle connections: pynetdicom's ARTIM timer and its wait for the request use this.
        assoc.acse_timeout = self.request_timeout
        with self._lock:
            self._prune_pending()
            crowded = len(self._pending) >= PENDING_PER_SLOT * self.max_associations
            if not crowded:
                self._pending[id(assoc)] = (assoc, time.monotonic())
        if crowded:
            LOGGER.warning(
                "event=connection-closed reason=too-many-pending-connections address=%s",
                _address(assoc),
            )
            close_socket(assoc)

    def admit(self, event: Event) -> bool:
        """``EVT_REQUESTED``: return whether the association fits under the limit.

        A request over the limit is rejected with A-ASSOCIATE-RJ (transient, service
        provider presentation, local limit exceeded): the sender may retry later.
        """
        assoc = event.assoc
        assoc.acse_timeout = self.acse_timeout
        with self._lock:
            self._pending.pop(id(assoc), None)
            self._prune_admitted()
            busy = len(self._admitted)
            if busy < self.max_associations:
                self._admitted[id(assoc)] = assoc
                return True
        LOGGER.warning(
            "event=association-rejected reason=local-limit-exceeded established=%d limit=%d "
            "calling_ae=%s address=%s",
            busy,
            self.max_associations,
            _calling_ae(assoc),
            _address(assoc),
        )
        assoc.acse.send_reject(*REJECT_LOCAL_LIMIT)
        assoc.kill()
        return False

    def forget(self, event: Event) -> None:
        """``EVT_REQUESTED`` of a request rejected for another reason: stop its clock."""
        event.assoc.acse_timeout = self.acse_timeout
        with self._lock:
            self._pending.pop(id(event.assoc), None)

    # -- housekeeping --------------------------------------------------------------------------

    def reap(self, now: float | None = None) -> int:
        """Shut down connections that have not completed their request in time; return how many.

        Called by the server loop (about twice a second).
        """
        now = time.monotonic() if now is None else now
        late: list[tuple[Association, float]] = []
        with self._lock:
            self._prune_pending()
            for key, (assoc, opened) in list(self._pending.items()):
                if now - opened >= self.request_timeout:
                    late.append((assoc, opened))
                    del self._pending[key]
        for assoc, opened in late:
            LOGGER.warning(
                "event=connection-closed reason=association-request-timeout address=%s "
                "seconds=%.1f",
                _address(assoc),
                now - opened,
            )
            close_socket(assoc)
        return len(late)

    def established(self) -> int:
        """Return how many admitted associations are still running."""
        with self._lock:
            self._prune_admitted()
            return len(self._admitted)

    def pending(self) -> int:
        """Return how many connections are still sending their request."""
        with self._lock:
            self._prune_pending()
            return len(self._pending)

    def _prune_pending(self) -> None:
        for key, (assoc, _) in list(self._pending.items()):
            if _ended(assoc) or assoc.requestor.primitive is not None:
                del self._pending[key]

    def _prune_admitted(self) -> None:
        for key, assoc in list(self._admitted.items()):
            if (
                _ended(assoc)
                or assoc.is_released
                or assoc.is_aborted
                or assoc.is_rejected
                or assoc._kill  # noqa: SLF001 - ending: its slot is free
            ):
                del self._admitted[key]


def _ended(assoc: Association) -> bool:
    # Not started yet (EVT_CONN_OPEN comes just before the thread starts) is not ended.
    return assoc.ident is not None and not assoc.is_alive()


def close_socket(assoc: Association) -> None:
    """Shut down an association's TCP connection without waiting for anything.

    A reader blocked in ``recv`` (a peer that sent half a PDU) returns at once; pynetdicom's
    own threads then see the closed connection and end.
    """
    sock: Any = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _address(assoc: Association) -> str:
    try:
        return str(assoc.requestor.address)
    except Exception:  # noqa: BLE001 - only for the log line
        return ""


def _calling_ae(assoc: Association) -> str:
    primitive = assoc.requestor.primitive
    return str(primitive.calling_ae_title) if primitive is not None else ""
