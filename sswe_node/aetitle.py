"""AE titles and ``AE@HOST:PORT`` peers: the one parser, and the AE options every command shares.

Every sub-command that talks DICOM spells its AE options the same way, as dcmtk and the
pynetdicom apps do: ``-aet``/``--aet``/``--calling-aet`` is our AE title, ``-aec``/``--aec``/
``--called-aet`` the peer's, ``-aem``/``--aem``/``--move-aet`` the C-MOVE destination. A peer is
written ``AE@HOST:PORT``; an IPv6 address goes in brackets: ``PACS@[::1]:104``.
"""

from __future__ import annotations

import argparse
import re
from typing import NamedTuple

from sswe_node.errors import ConfigError

#: The longest AE title (PS3.5 Table 6.2-1, VR AE).
AE_TITLE_MAX = 16

_PEER = re.compile(
    r"^(?P<ae>[^@]+)@(?:\[(?P<ipv6>[0-9A-Fa-f:.]+(?:%[^\]]+)?)\]|(?P<host>[^:@\[\]\s]+))"
    r":(?P<port>[0-9]{1,5})$"
)


def check_ae_title(text: str) -> str:
    """Return ``text`` as an AE title, or raise when it is not one.

    Parameters
    ----------
    text : str
        1-16 characters of the default repertoire, without backslash or control characters;
        leading and trailing spaces are not significant (and are removed).

    Returns
    -------
    str
        The AE title without leading or trailing spaces.

    Raises
    ------
    ConfigError
        When ``text`` is empty, too long or holds a forbidden character.
    """
    title = str(text).strip(" ")
    if not title:
        raise ConfigError("an AE title must not be empty")
    if len(title) > AE_TITLE_MAX:
        raise ConfigError(f"AE title {title!r} is longer than {AE_TITLE_MAX} characters")
    if any(c == "\\" or not (" " <= c <= "~") for c in title):
        raise ConfigError(f"AE title {title!r} holds a backslash, control or non-ASCII character")
    return title


class Peer(NamedTuple):
    """A DICOM peer: AE title, host and port (unpacks as ``ae_title, host, port``)."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Peer:
        """Parse ``AE@HOST:PORT`` (``ORTHANC@pacs.local:4242``, ``PACS@[::1]:104``).

        Raises
        ------
        ConfigError
            When the text does not have that shape, the AE title is not one or the port is
            not 1-65535.
        """
        match = _PEER.match(str(text).strip())
        if not match or not 0 < int(match["port"]) < 65536:
            raise ConfigError(
                f"peer {text!r} must be AE@HOST:PORT, e.g. PACS@127.0.0.1:4242 or PACS@[::1]:104"
            )
        host = match["ipv6"] or match["host"]
        return cls(check_ae_title(match["ae"]), host, int(match["port"]))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


def parse_peer(text: str) -> Peer:
    """Parse ``AE@HOST:PORT``; see :meth:`Peer.parse`."""
    return Peer.parse(text)


def peer_argument(text: str) -> Peer:
    """``argparse`` type for ``AE@HOST:PORT``: a malformed peer is a usage error (exit 2)."""
    try:
        return Peer.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def peer_text_argument(text: str) -> str:
    """``argparse`` type checking ``AE@HOST:PORT`` and keeping it as (normalised) text."""
    return str(peer_argument(text))


def ae_title_argument(text: str) -> str:
    """``argparse`` type for an AE title: a malformed one is a usage error (exit 2)."""
    try:
        return check_ae_title(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    flags: tuple[str, ...],
    dest: str,
    default: str | None,
    help: str,
    aliases: tuple[str, ...],
) -> None:
    parser.add_argument(
        *flags, dest=dest, type=ae_title_argument, default=default, metavar="AET", help=help
    )
    if aliases:  # earlier spellings, still accepted but not shown
        parser.add_argument(
            *aliases,
            dest=dest,
            type=ae_title_argument,
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )


def add_calling_aet(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    default: str | None = None,
    help: str = "our AE title",
    aliases: tuple[str, ...] = (),
) -> None:
    """Add ``-aet``/``--aet``/``--calling-aet`` (our AE title) as ``args.calling_aet``."""
    _add(parser, ("-aet", "--aet", "--calling-aet"), "calling_aet", default, help, aliases)


def add_called_aet(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    default: str | None = None,
    help: str = "the peer's AE title",
    aliases: tuple[str, ...] = (),
) -> None:
    """Add ``-aec``/``--aec``/``--called-aet`` (the peer's AE title) as ``args.called_aet``."""
    _add(parser, ("-aec", "--aec", "--called-aet"), "called_aet", default, help, aliases)


def add_move_aet(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    default: str | None = None,
    help: str = "the C-MOVE destination's AE title",
    aliases: tuple[str, ...] = (),
) -> None:
    """Add ``-aem``/``--aem``/``--move-aet`` (the C-MOVE destination) as ``args.move_aet``."""
    _add(parser, ("-aem", "--aem", "--move-aet"), "move_aet", default, help, aliases)
