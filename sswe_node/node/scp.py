"""The storage SCP: an Application Entity with the node's contexts, access rules and TLS."""

from __future__ import annotations

import copy
import logging
import socket
import ssl
import threading
import time
from pathlib import Path
from tempfile import NamedTemporaryFile
from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, _config, dimse_messages, evt
from pynetdicom import association as association_module
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from sswe_node.config import Settings
from sswe_node.dicom_constants import (
    SECONDARY_CAPTURE_CLASSES,
    STORAGE_TRANSFER_SYNTAXES,
    ULTRASOUND_IMAGE_CLASSES,
)
from sswe_node.node import handlers
from sswe_node.node.admission import Admission, close_socket
from sswe_node.node.metrics import Metrics
from sswe_node.node.storage import INCOMING, private_folder
from sswe_node.node.store import CaseStore

LOGGER = logging.getLogger(__name__)

TRANSFER_SYNTAXES = list(STORAGE_TRANSFER_SYNTAXES)
"""Transfer syntaxes accepted for storage: what ultrasound scanners send."""

ULTRASOUND_CLASSES = [*ULTRASOUND_IMAGE_CLASSES, *SECONDARY_CAPTURE_CLASSES]
"""The classes the node is for. Other storage classes are accepted too, so that an instance
sent by mistake (a CT image) is kept and reported as skipped instead of refused unseen."""

PYNETDICOM_THREAD_LIMIT = 1024
"""What pynetdicom's own ``maximum_associations`` is set to. It counts every acceptor thread
(bare connections and just-rejected associations too), so the node's limit is applied by
:class:`~sswe_node.node.admission.Admission` to admitted associations instead."""


_CHUNKED: dict[str, Any] = {"servers": 0, "before": False, "folders": []}
_CHUNKED_LOCK = threading.Lock()


def _received_file(*args: Any, **kwargs: Any) -> Any:
    """Return pynetdicom's temporary file for a chunked receive, in a node's incoming folder.

    There it can be hard-linked into place (:func:`~sswe_node.node.storage.stage_incoming`)
    instead of copied: the received bytes are written once. Named ``.tmp-recv-*``, which
    start-up removes like any interrupted write. Falls back to the usual temporary folder.
    """
    folders = _CHUNKED["folders"]
    if folders:
        try:
            return NamedTemporaryFile(*args, dir=folders[-1], prefix=".tmp-recv-", **kwargs)
        except OSError:
            pass
    return NamedTemporaryFile(*args, **kwargs)


def _chunked_receive(*, on: bool, folder: Path | None = None) -> None:
    """Turn pynetdicom's process-wide chunked receive on while any node SCP runs.

    Other pynetdicom SCPs of the same process (e.g. a C-MOVE destination of ``dataset build``)
    get their usual in-memory datasets back once the last node SCP has stopped. ``folder``:
    the incoming folder of the SCP starting or stopping (where received files are written).
    """
    with _CHUNKED_LOCK:
        folders = _CHUNKED["folders"]
        if on:
            if _CHUNKED["servers"] == 0:
                _CHUNKED["before"] = _config.STORE_RECV_CHUNKED_DATASET
                dimse_messages.NamedTemporaryFile = _received_file
            _CHUNKED["servers"] += 1
            if folder is not None:
                folders.append(folder)
            _config.STORE_RECV_CHUNKED_DATASET = True
        elif _CHUNKED["servers"] > 0:
            _CHUNKED["servers"] -= 1
            if folder is not None and folder in folders:
                folders.remove(folder)
            if _CHUNKED["servers"] == 0:
                _config.STORE_RECV_CHUNKED_DATASET = _CHUNKED["before"]
                dimse_messages.NamedTemporaryFile = NamedTemporaryFile


QUIET_WAIT_SECONDS = 0.02
"""Longest wait of a node association's reactor between looks at its state (release, abort,
timeouts); a received DIMSE message ends the wait at once."""


class _ReactorClock:
    """Stands for the ``time`` module in :mod:`pynetdicom.association`.

    pynetdicom's acceptor reactor sleeps 1 ms between polls of its DIMSE queue, for the life of
    the association: a thousand wake-ups a second per association, each taking the GIL from
    the thread that receives or stores. A node association (marked by :func:`_quiet_reactor`)
    waits on its queue instead: woken by the next message, otherwise after
    :data:`QUIET_WAIT_SECONDS`. Every other use of ``time`` passes through.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        """``time.sleep``, except for the 1 ms poll of a node association's reactor."""
        me = threading.current_thread()
        if seconds == 0.001 and getattr(me, "_sswe_quiet", False):
            messages = me.dimse.msg_queue  # type: ignore[attr-defined]
            with messages.not_empty:
                if not messages._qsize():  # noqa: SLF001 - queue.Queue's own size under its lock
                    messages.not_empty.wait(QUIET_WAIT_SECONDS)
            return
        time.sleep(seconds)


def _quiet_reactor(event: Any) -> None:
    """``EVT_CONN_OPEN``: let the reactor of this association wait on its queue."""
    assoc = event.assoc
    if assoc.is_acceptor:
        association_module.time = _REACTOR_CLOCK  # type: ignore[assignment]
        assoc._sswe_quiet = True  # noqa: SLF001


_REACTOR_CLOCK = _ReactorClock()


class _Contexts(list):
    """The SCP's supported presentation contexts, copied fast for each new association.

    pynetdicom deep-copies the server's contexts for every association it accepts: with the
    node's 173 contexts (2,240 transfer syntaxes) that is about 13 ms of CPU per association.
    A context holds only strings, ``None`` and its list of transfer syntaxes, so a shallow
    copy of each with its own list of syntaxes is the same copy.
    """

    def __deepcopy__(self, memo: dict) -> list:
        copies = []
        for context in self:
            copied = copy.copy(context)
            copied._transfer_syntax = list(context._transfer_syntax)  # noqa: SLF001
            copies.append(copied)
        return copies


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with a request timeout and a bounded TLS handshake.

    ``admission`` is set by :func:`start_scp`; the serve loop calls its ``reap`` about twice a
    second. The TLS handshake (done by pynetdicom in the accepting thread) gets
    ``admission.request_timeout`` seconds, so a peer that connects and says nothing cannot
    stop the node from accepting others.
    """

    admission: Admission
    block_on_close = False
    daemon_threads = True

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection; wrap it in TLS within the request timeout when TLS is on."""
        client, address = self.socket.accept()
        if self.ssl_context:
            client.settimeout(self.admission.request_timeout)
            try:
                client = self.ssl_context.wrap_socket(client, server_side=True)
            except (OSError, ValueError):
                LOGGER.warning(
                    "event=connection-closed reason=tls-handshake-failed address=%s", address[0]
                )
                client.close()
                raise
            client.settimeout(None)
        return client, address

    def service_actions(self) -> None:
        """Close connections that have not completed their request in time."""
        super().service_actions()
        self.admission.reap()


def build_ae(settings: Settings) -> AE:
    """Create the Application Entity with its contexts, limits and timeouts.

    Parameters
    ----------
    settings : Settings
        The node settings (``node.*``).

    Returns
    -------
    AE
    """
    node = settings.node
    ae = AE(ae_title=node.ae_title)
    ae.add_supported_context(Verification)
    for uid in ULTRASOUND_CLASSES:
        ae.add_supported_context(uid, TRANSFER_SYNTAXES)
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax not in ULTRASOUND_CLASSES:
            ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
    # The node's own limit (node.max_associations) counts admitted associations only.
    ae.maximum_associations = PYNETDICOM_THREAD_LIMIT
    ae.maximum_pdu_size = node.max_pdu_size
    ae.acse_timeout = node.acse_timeout
    ae.dimse_timeout = node.dimse_timeout
    ae.network_timeout = node.network_timeout
    return ae


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """Return the TLS context for the SCP, or ``None`` when TLS is off."""
    tls = settings.tls
    if not tls.enabled:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=tls.certificate, keyfile=tls.private_key)
    if tls.ca_certificates:
        context.load_verify_locations(cafile=tls.ca_certificates)
    if tls.require_client_certificate:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def start_scp(
    settings: Settings,
    store: CaseStore,
    wake: threading.Event,
    metrics: Metrics,
) -> tuple[AE, ThreadedAssociationServer]:
    """Start the storage SCP in the background and return the AE and its server.

    Parameters
    ----------
    settings : Settings
        The node settings.
    store : CaseStore
        Where received instances are recorded.
    wake : threading.Event
        Set on each stored instance, to wake the workers.
    metrics : Metrics
        Counters for the store events.

    Returns
    -------
    (AE, ThreadedAssociationServer)
    """
    node = settings.node
    storage_dir = Path(node.storage_dir)
    private_folder(storage_dir)
    ae = build_ae(settings)
    admission = Admission(
        node.max_associations, node.association_request_timeout, node.acse_timeout
    )
    evt_handlers = [
        (evt.EVT_CONN_OPEN, admission.on_connection),
        (evt.EVT_CONN_OPEN, _quiet_reactor),
        (evt.EVT_C_ECHO, handlers.handle_echo),
        (
            evt.EVT_REQUESTED,
            handlers.handle_requested,
            [list(node.allowed_peer_addresses), list(node.allowed_calling_ae_titles), admission],
        ),
        (evt.EVT_REJECTED, handlers.handle_rejected),
        (
            evt.EVT_PDU_RECV,
            handlers.handle_pdu_received,
            [int(node.max_instance_mb * 1024 * 1024)],
        ),
        (
            evt.EVT_C_STORE,
            handlers.handle_store,
            [
                storage_dir,
                store,
                float(node.min_free_space_mb),
                wake,
                metrics,
                int(node.max_instance_mb * 1024 * 1024),
            ],
        ),
    ]
    server = ae.make_server(
        (node.host, node.port),
        evt_handlers=evt_handlers,
        ssl_context=server_ssl_context(settings),
        server_class=GuardedServer,
    )
    server.admission = admission
    server.contexts = _Contexts(server.contexts)
    # Received datasets go to a file of the incoming folder as they arrive (never whole in
    # memory); the handler links that file into place (or copies it, in chunks).
    incoming = storage_dir / INCOMING
    private_folder(incoming)
    server.incoming = incoming
    _chunked_receive(on=True, folder=incoming)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.25}, name="sswe-scp-accept"
    )
    thread.daemon = True
    thread.start()
    ae._servers.append(server)  # noqa: SLF001 - as AE.start_server does; shutdown() removes it
    LOGGER.info(
        "event=listening ae_title=%s host=%s port=%d tls=%s",
        node.ae_title,
        node.host,
        server.server_address[1],
        settings.tls.enabled,
    )
    return ae, server


def stop_scp(server: ThreadedAssociationServer, deadline: float) -> None:
    """Stop accepting, let admitted associations finish until ``deadline``, then cut them.

    Bounded whatever the peers do: connections that have not completed their request are
    shut down at once, and at ``deadline`` every remaining connection is shut down (its
    socket, not pynetdicom's blocking ``abort``, which waits for a peer that may never
    answer).

    Parameters
    ----------
    server : ThreadedAssociationServer
        The server from :func:`start_scp`.
    deadline : float
        A :func:`time.monotonic` time.
    """
    server.shutdown()
    _chunked_receive(on=False, folder=getattr(server, "incoming", None))
    admission: Admission | None = getattr(server, "admission", None)
    for assoc in server.active_associations:
        if not assoc.is_established:
            close_socket(assoc)
    while time.monotonic() < deadline and any(a.is_established for a in server.active_associations):
        time.sleep(0.05)
    left = [a for a in server.active_associations if a.is_alive()]
    if left:
        LOGGER.warning(
            "event=associations-cut count=%d established=%d",
            len(left),
            admission.established() if admission else sum(a.is_established for a in left),
        )
    for assoc in left:
        assoc.abort(block=False)  # queue an A-ABORT; the socket is closed next
    if left:
        time.sleep(0.1)
    for assoc in left:
        close_socket(assoc)
