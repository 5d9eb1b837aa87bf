"""`sswe-node echo AE@HOST:PORT`: check that a DICOM peer answers C-ECHO."""

from __future__ import annotations

import argparse
import re
import sys

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from sswe_node.config import TlsSettings, load_settings
from sswe_node.errors import ConfigError
from sswe_node.node.sender import client_ssl_context

HELP = "C-ECHO a DICOM peer given as AE@HOST:PORT"

_PEER = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:]+|\[[^\]]+\]):(?P<port>\d{1,5})$")


def parse_peer(text: str) -> tuple[str, str, int]:
    """Parse ``AE@HOST:PORT`` into its parts.

    Raises
    ------
    ConfigError
        When the text does not have that form.
    """
    match = _PEER.match(text.strip())
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise ConfigError(f"peer {text!r} must be AE@HOST:PORT, e.g. PACS@127.0.0.1:4242")
    return match["ae"], match["host"].strip("[]"), int(match["port"])


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
    parser.add_argument("peer", help="the peer as AE@HOST:PORT")
    parser.add_argument("--config", default=None, help="node configuration file (TOML)")
    parser.add_argument("--calling-ae", default=None, help="our AE title (default node.ae_title)")
    parser.add_argument("--tls", action="store_true", help="use DICOM TLS (tls.* settings)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")


def run(args: argparse.Namespace) -> int:
    """C-ECHO the peer; exit 0 on success, 1 otherwise."""
    ae_title, host, port = parse_peer(args.peer)
    settings = load_settings(args.config)
    ok, text = echo(
        ae_title,
        host,
        port,
        calling_ae=args.calling_ae or settings.node.ae_title,
        tls=settings.tls if args.tls else None,
        timeout=args.timeout,
    )
    print(f"{ae_title}@{host}:{port}: {text}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1
