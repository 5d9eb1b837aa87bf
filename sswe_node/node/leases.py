"""Who holds a claimed case: the owner identity of a process and whether it is still alive.

A claimed case (and a claimed send) records its owner as ``host:pid:start`` and a lease that
its holder renews; only an expired lease is taken back, by anyone. A process on the same host
whose pid no longer runs (or, for our own pid, ran with another start time: pid 1 of a
restarted container) cannot renew, so its leases are taken back at start-up without waiting
for them to expire.
"""

from __future__ import annotations

import os
import socket
import time

_START = int(time.time())


def process_owner() -> str:
    """Return this process's owner identity, ``host:pid:start`` (start in Unix seconds)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_START}"


def parse_owner(owner: str) -> tuple[str, int, int] | None:
    """Return ``(host, pid, start)`` of an owner identity, or ``None`` when malformed."""
    host, _, rest = owner.rpartition(":")
    host, _, pid = host.rpartition(":")
    try:
        return host, int(pid), int(rest)
    except ValueError:
        return None


def owner_is_dead(owner: str) -> bool:
    """Return whether ``owner`` is a process of this host that is certainly gone.

    Only a local owner can be judged: its pid no longer exists. A pid that exists may be a
    reused one, but then it is left to its lease (never a false "dead").
    """
    parsed = parse_owner(owner)
    if parsed is None:
        return False
    host, pid, start = parsed
    if host != socket.gethostname():
        return False
    if pid == os.getpid():  # e.g. pid 1 of a restarted container: dead unless it is us
        return start != _START
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, another user's
        return False
    return False
