"""`sswe-node echo AE@HOST:PORT`: check that a DICOM peer answers C-ECHO."""

from __future__ import annotations

import argparse
import sys

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from sswe_node.aetitle import Peer, add_calling_aet, parse_peer, peer_argument
from sswe_node.config import TlsSettings, load_settings
from sswe_node.node.sender import client_ssl_context

HELP = "C-ECHO a DICOM peer given as AE@HOST:PORT"

__all__ = ["HELP", "configure_parser", "echo", "parse_peer", "run"]


def echo(
    ae_title: str,
    host: str,
    port: int,
    *,
    calling_ae: str = "SSWE_NODE",
    tls: TlsSettings | None = None,
    timeout: float = 10.0,
) -> tuple[bool, str]:
    """C-ECHO a peer; return whether it answered Success and a one-line description.

    Parameters
    ----------
    ae_title, host, port : str, str, int
        The peer.
    calling_ae : str
        Our AE title.
    tls : TlsSettings, optional
        Use TLS with these settings.
    timeout : float
        Network and ACSE timeout in seconds.

    Returns
    -------
    (bool, str)
    """
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = timeout
    ae.network_timeout = timeout
    ae.dimse_timeout = timeout
    ae.add_requested_context(Verification)
    tls_args = (client_ssl_context(tls), None) if tls is not None else None
    assoc = ae.associate(host, port, ae_title=ae_title, tls_args=tls_args)
    if not assoc.is_established:
        if assoc.is_rejected:
            return False, "association rejected"
        return False, "association failed (no answer, or aborted)"
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if status and "Status" in status and int(status.Status) == 0:
        return True, "C-ECHO success"
    if status and "Status" in status:
        return False, f"C-ECHO status 0x{int(status.Status):04X}"
    return False, "C-ECHO: no response"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add this sub-command's options."""
    parser.add_argument(
        "peer", type=peer_argument, metavar="AE@HOST:PORT", help="the peer (IPv6: AE@[::1]:104)"
    )
    parser.add_argument("--config", default=None, help="node configuration file (TOML)")
    add_calling_aet(parser, help="our AE title (default node.ae_title)", aliases=("--calling-ae",))
    parser.add_argument("--tls", action="store_true", help="use DICOM TLS (tls.* settings)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")


def run(args: argparse.Namespace) -> int:
    """C-ECHO the peer; exit 0 on success, 1 otherwise."""
    peer = args.peer if isinstance(args.peer, Peer) else parse_peer(args.peer)
    ae_title, host, port = peer
    settings = load_settings(args.config)
    ok, text = echo(
        ae_title,
        host,
        port,
        calling_ae=args.calling_aet or settings.node.ae_title,
        tls=settings.tls if args.tls else None,
        timeout=args.timeout,
    )
    print(f"{peer}: {text}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1
