"""Wake-ups between the node's processes: "a case arrived", "a send is queued".

The receiver, the workers and the sender share nothing but the case store and the storage
folder; a wake-up only saves waiting for the next look at the queue (``processing.poll_seconds``),
so a lost one costs a poll interval, never a case. A :class:`Wakeup` can stand where a
``threading.Event`` was used: the side that adds work calls :meth:`Wakeup.set`, the side that
waits calls :meth:`Wakeup.wait` and :meth:`Wakeup.clear`.

- PostgreSQL: ``NOTIFY sswe_<topic>`` / ``LISTEN sswe_<topic>`` (across machines).
- SQLite (one machine): datagrams on Linux abstract Unix sockets. Each listening process binds
  an abstract address named after the topic, its pid and a number, and registers it as an
  empty file in ``storage_dir/.wakeup/``; a notifier sends one byte to each registered socket
  and forgets those that refuse (their process has gone). Elsewhere: polling only.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import sys
import threading
from pathlib import Path

from sqlalchemy.engine import make_url

LOGGER = logging.getLogger(__name__)

CASES = "cases"
SENDS = "sends"
_SEQUENCE = itertools.count()


class Wakeup:
    """A wake-up on one topic, seen by every process of the node.

    Parameters
    ----------
    topic : str
        ``"cases"`` or ``"sends"``.
    database_url : str
        The case store URL: PostgreSQL uses ``LISTEN``/``NOTIFY``, anything else local sockets.
    storage_dir : str or Path
        The storage folder (holds the socket registry, for SQLite).
    listen : bool
        Whether this process waits on the topic (``False``: it only notifies).
    """

    def __init__(
        self, topic: str, database_url: str, storage_dir: str | Path, listen: bool = True
    ) -> None:
        self.topic = topic
        self.event = threading.Event()
        self._closed = threading.Event()
        url = make_url(database_url)
        if url.get_backend_name() == "postgresql":
            self._channel: _Channel = _PostgresChannel(
                url.set(drivername="postgresql").render_as_string(hide_password=False),
                f"sswe_{topic}",
            )
        elif sys.platform.startswith("linux"):
            self._channel = _SocketChannel(Path(storage_dir) / ".wakeup", topic)
        else:  # pragma: no cover - polling only
            self._channel = _Channel()
        if listen:
            self._channel.listen(self.event, self._closed)

    def set(self) -> None:
        """Wake every process waiting on this topic (and this one)."""
        self.event.set()
        try:
            self._channel.notify()
        except Exception as exc:  # noqa: BLE001 - a lost wake-up costs a poll interval only
            LOGGER.debug("event=wakeup-failed topic=%s error=%s", self.topic, exc)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until woken or ``timeout`` seconds pass; return whether woken."""
        return self.event.wait(timeout)

    def clear(self) -> None:
        """Forget past wake-ups."""
        self.event.clear()

    def is_set(self) -> bool:
        """Return whether a wake-up is pending."""
        return self.event.is_set()

    def close(self) -> None:
        """Stop listening and release the connection or socket."""
        self._closed.set()
        self.event.set()
        self._channel.close()


class _Channel:
    """No cross-process channel: waiters poll."""

    def listen(self, event: threading.Event, closed: threading.Event) -> None:
        return None

    def notify(self) -> None:
        return None

    def close(self) -> None:
        return None


class _PostgresChannel(_Channel):
    """``LISTEN``/``NOTIFY`` on one channel, on connections of their own (psycopg 3)."""

    def __init__(self, conninfo: str, channel: str) -> None:
        self.conninfo = conninfo
        self.channel = channel
        self._lock = threading.Lock()
        self._notifier = None

    def notify(self) -> None:
        import psycopg

        with self._lock:
            for attempt in (0, 1):
                try:
                    if self._notifier is None or self._notifier.closed:
                        self._notifier = psycopg.connect(self.conninfo, autocommit=True)
                    self._notifier.execute("SELECT pg_notify(%s, '')", (self.channel,))
                    return
                except psycopg.OperationalError:
                    self._notifier = None  # the server restarted: one new connection
                    if attempt:
                        raise

    def listen(self, event: threading.Event, closed: threading.Event) -> None:
        thread = threading.Thread(
            target=self._listen, args=(event, closed), name=f"{self.channel}-listen", daemon=True
        )
        thread.start()

    def _listen(self, event: threading.Event, closed: threading.Event) -> None:
        import psycopg

        while not closed.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    event.set()  # whatever came while not listening
                    while not closed.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            event.set()
            except Exception as exc:  # noqa: BLE001 - retry; meanwhile waiters poll
                LOGGER.debug("event=listen-failed channel=%s error=%s", self.channel, exc)
                closed.wait(1.0)

    def close(self) -> None:
        with self._lock:
            if self._notifier is not None:
                self._notifier.close()
                self._notifier = None


class _SocketChannel(_Channel):
    """One-byte datagrams to every registered listener of a topic on this machine."""

    def __init__(self, folder: Path, topic: str) -> None:
        self.folder = folder
        self.topic = topic
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)
        self._own: set[str] = set()
        self._receiver: socket.socket | None = None

    def listen(self, event: threading.Event, closed: threading.Event) -> None:
        name = f"{self.topic}.{os.getpid()}.{next(_SEQUENCE)}"
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(_address(name, self.folder))
        receiver.settimeout(1.0)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / name).touch()
        self._own.add(name)
        self._receiver = receiver

        def _receive() -> None:
            while not closed.is_set():
                try:
                    receiver.recv(16)
                except TimeoutError:
                    continue
                except OSError:
                    return
                event.set()

        threading.Thread(target=_receive, name=f"wakeup-{self.topic}", daemon=True).start()

    def notify(self) -> None:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return
        prefix = self.topic + "."
        for name in names:
            if not name.startswith(prefix) or name in self._own:
                continue
            try:
                self._sender.sendto(b"!", _address(name, self.folder))
            except (ConnectionRefusedError, FileNotFoundError):
                (self.folder / name).unlink(missing_ok=True)  # its process has gone
            except (BlockingIOError, OSError):
                pass  # its queue is full: it has been woken already

    def close(self) -> None:
        for name in self._own:
            (self.folder / name).unlink(missing_ok=True)
        if self._receiver is not None:
            self._receiver.close()
        self._sender.close()


def _address(name: str, folder: Path) -> str:
    """Return the abstract socket address of a registered listener (unique per folder)."""
    import hashlib

    tag = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]
    return f"\0sswe-{tag}-{name}"
