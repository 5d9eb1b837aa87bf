"""The storage SCP: an Application Entity with the node's contexts, access rules and TLS."""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from sswe_node.config import Settings
from sswe_node.dicom_constants import (
    SECONDARY_CAPTURE_CLASSES,
    STORAGE_TRANSFER_SYNTAXES,
    ULTRASOUND_IMAGE_CLASSES,
)
from sswe_node.node import handlers
from sswe_node.node.metrics import Metrics
from sswe_node.node.store import CaseStore

LOGGER = logging.getLogger(__name__)

TRANSFER_SYNTAXES = list(STORAGE_TRANSFER_SYNTAXES)
"""Transfer syntaxes accepted for storage: what ultrasound scanners send."""

ULTRASOUND_CLASSES = [*ULTRASOUND_IMAGE_CLASSES, *SECONDARY_CAPTURE_CLASSES]
"""The classes the node is for. Other storage classes are accepted too, so that an instance
sent by mistake (a CT image) is kept and reported as skipped instead of refused unseen."""


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
    ae.maximum_associations = node.max_associations
    ae.maximum_pdu_size = node.max_pdu_size
    ae.acse_timeout = node.acse_timeout
    ae.dimse_timeout = node.dimse_timeout
    ae.network_timeout = node.network_timeout
    if node.allowed_calling_ae_titles:
        ae.require_calling_aet = list(node.allowed_calling_ae_titles)
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
    storage_dir.mkdir(parents=True, exist_ok=True)
    ae = build_ae(settings)
    evt_handlers = [
        (evt.EVT_C_ECHO, handlers.handle_echo),
        (evt.EVT_REQUESTED, handlers.handle_requested, [list(node.allowed_peer_addresses)]),
        (evt.EVT_REJECTED, handlers.handle_rejected),
        (
            evt.EVT_C_STORE,
            handlers.handle_store,
            [storage_dir, store, float(node.min_free_space_mb), wake, metrics],
        ),
    ]
    server = ae.start_server(
        (node.host, node.port),
        block=False,
        evt_handlers=evt_handlers,
        ssl_context=server_ssl_context(settings),
    )
    LOGGER.info(
        "event=listening ae_title=%s host=%s port=%d tls=%s",
        node.ae_title,
        node.host,
        server.server_address[1],
        settings.tls.enabled,
    )
    return ae, server
