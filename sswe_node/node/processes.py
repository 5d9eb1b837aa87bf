"""The node's OS processes: worker processes and the sender process, and their supervision.

``sswe-node serve`` runs the receiver (SCP and HTTP) in its main process and starts
``processing.workers`` worker processes and one sender process (``spawn``: nothing is shared
but the settings they start with). They coordinate only through the case store and the storage
folder; :mod:`sswe_node.node.wakeup` saves them a poll interval. Each child dies with its
parent (``PR_SET_PDEATHSIG`` on Linux, and a watch on the parent's pid), so a crashed replica
leaves leases that expire rather than workers that go on unseen.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any

from sswe_node.config import Settings
from sswe_node.tf_chatter import silence as silence_tensorflow

LOGGER = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"
_START_LOCK = threading.Lock()
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _child_setup(level: str, parent: int) -> threading.Event:
    """Log like the parent, ignore Ctrl-C, stop on SIGTERM, die with the parent.

    Returns the event SIGTERM sets (the parent's way of stopping us). A multiprocessing
    ``Event`` is not used for it: setting one blocks forever once a process that was waiting
    on it has died.
    """
    logging.basicConfig(level=level, format=_LOG_FORMAT, stream=sys.stderr, force=True)
    silence_tensorflow(level)  # before the worker imports TensorFlow
    if level != "DEBUG":
        for name in ("pynetdicom", "highdicom", "dicomweb_client"):
            logging.getLogger(name).setLevel(logging.WARNING)
    stop = threading.Event()
    wakes: list[threading.Event] = []

    def _on_term(_signum: int, _frame: object) -> None:
        stop.set()
        for event in wakes:
            event.set()

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the parent decides
    signal.signal(signal.SIGTERM, _on_term)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the prctl
        os._exit(1)

    def _watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=_watch, name="parent-watch", daemon=True).start()
    stop.wakes = wakes  # type: ignore[attr-defined]
    return stop


def worker_main(settings: Settings, index: int, level: str, parent: int, ready: Any,
                errors: Any) -> None:  # fmt: skip
    """Run one worker process: load the model once, then process batches until stopped."""
    stop = _child_setup(level, parent)
    from sswe_node.node.metrics import Metrics
    from sswe_node.node.store import CaseStore
    from sswe_node.node.wakeup import CASES, SENDS, Wakeup
    from sswe_node.node.worker import Worker

    node = settings.node
    store = CaseStore(node.database_url)
    cases = Wakeup(CASES, node.database_url, node.storage_dir, listen=True)
    sends = Wakeup(SENDS, node.database_url, node.storage_dir, listen=False)
    stop.wakes.append(cases.event)  # type: ignore[attr-defined]
    worker = Worker(store, settings, cases, stop, sends, Metrics(), name=f"sswe-worker-{index}")
    worker.ready = ready  # type: ignore[assignment]
    worker.run()
    if worker.error:
        errors.put(worker.error)
    cases.close()
    sends.close()
    store.close()


def sender_main(settings: Settings, level: str, parent: int, ready: Any) -> None:
    """Run the sender process: drain the send queue until stopped."""
    stop = _child_setup(level, parent)
    from sswe_node.node.metrics import Metrics
    from sswe_node.node.store import CaseStore
    from sswe_node.node.wakeup import SENDS, Wakeup

    node = settings.node
    store = CaseStore(node.database_url)
    sends = Wakeup(SENDS, node.database_url, node.storage_dir, listen=True)
    stop.wakes.append(sends.event)  # type: ignore[attr-defined]
    sender = new_sender(settings, store, sends, stop, Metrics())
    ready.set()
    sender.run()
    sends.close()
    store.close()


def new_sender(settings: Settings, store: Any, wake: Any, stop: Any, metrics: Any) -> Any:
    """Return the node's sender (a thread, not started) for the sender process or thread mode."""
    from sswe_node.node.sender import Sender

    return Sender(
        store,
        settings.node.ae_title,
        settings.sending,
        settings.tls,
        wake,
        stop,
        metrics,
        poll_seconds=settings.processing.poll_seconds,
        timeouts=settings.node,
        destinations=settings.destinations,
    )


class ChildProcess:
    """A worker or sender process of this node, as the parent sees it.

    Parameters
    ----------
    kind : str
        ``"worker"`` or ``"sender"`` (names the process in logs).
    target : callable
        :func:`worker_main` or :func:`sender_main`.
    args : tuple
        Its arguments before ``level, parent, ready`` (and ``errors`` for a worker).
    metrics_dir : str, optional
        Where the child writes its Prometheus metrics (multi-process mode), for the parent's
        ``/metrics`` (:meth:`sswe_node.node.metrics.Metrics.add_children`).
    """

    def __init__(self, kind: str, target: Any, args: tuple, metrics_dir: str | None = None) -> None:
        self.metrics_dir = metrics_dir
        self._spec = (kind, target, args, metrics_dir)
        context = multiprocessing.get_context("spawn")
        self.kind = kind
        self.ready = context.Event()  # set by the child, only ever polled here
        self._errors = context.SimpleQueue()
        self._error: str | None = None
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        extra = (self._errors,) if kind == "worker" else ()
        self.process = context.Process(
            target=target,
            args=(*args, level, os.getpid(), self.ready, *extra),
            name=f"sswe-{kind}",
            daemon=False,
        )

    def respawn(self) -> ChildProcess:
        """Return a new, not started, handle running the same process (after a crash)."""
        return ChildProcess(*self._spec)

    def crashed(self) -> bool:
        """Return whether the process ended on its own with a failure (a signal, an error).

        A worker whose model does not load ends with status 0 and reports why (:attr:`error`):
        starting it again would not help.
        """
        return self.process.exitcode not in (None, 0)

    def start(self) -> None:
        """Start the process."""
        with _START_LOCK:
            # The child inherits the environment at start: prometheus_client reads this
            # variable when it is imported there (never in this process, which keeps its own).
            previous = os.environ.get(_MULTIPROC)
            if self.metrics_dir:
                os.environ[_MULTIPROC] = self.metrics_dir
            try:
                self.process.start()
            finally:
                if previous is None:
                    os.environ.pop(_MULTIPROC, None)
                else:
                    os.environ[_MULTIPROC] = previous
        LOGGER.info("event=process-started kind=%s pid=%d", self.kind, self.process.pid)

    @property
    def error(self) -> str | None:
        """Why the process stopped working (a model that does not load, a crash), or ``None``."""
        if self._error is None and not self._errors.empty():
            self._error = str(self._errors.get())
        if self._error is None and self.process.exitcode not in (None, 0):
            self._error = f"{self.kind} process exited with status {self.process.exitcode}"
        return self._error

    def is_alive(self) -> bool:
        """Return whether the process still runs."""
        return self.process.is_alive()

    def stop(self) -> None:
        """Ask the process to stop after its current batch or send (SIGTERM)."""
        if self.process.is_alive():
            self.process.terminate()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the process to end; SIGKILL it when it does not within ``timeout``."""
        self.process.join(timeout)
        if self.process.is_alive():
            LOGGER.warning("event=process-killed kind=%s pid=%d", self.kind, self.process.pid)
            self.process.kill()
            self.process.join(5)


def supervise(
    children: list[ChildProcess],
    stop: threading.Event,
    on_respawn: Any = None,
    interval: float = 2.0,
) -> None:
    """Start a thread that starts again any child that crashed (replaced in ``children``).

    A child killed by the kernel (out of memory) or by an error would otherwise leave the node
    receiving without processing or sending. One restart per child every ``interval`` seconds
    at most (a child that crashes at once does not spin). ``on_respawn(old, new)`` is called
    before the new handle starts.
    """

    def _run() -> None:
        while not stop.wait(interval):
            for index, child in enumerate(list(children)):
                if stop.is_set() or not child.crashed():
                    continue
                LOGGER.error(
                    "event=process-died kind=%s pid=%s status=%s",
                    child.kind,
                    child.process.pid,
                    child.process.exitcode,
                )
                again = child.respawn()
                children[index] = again
                if on_respawn is not None:
                    on_respawn(child, again)
                again.start()

    threading.Thread(target=_run, name="sswe-supervisor", daemon=True).start()


def wait_ready(children: list[ChildProcess], timeout: float) -> bool:
    """Wait until every child is ready (model loaded, or sender started) or one has failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(c.ready.is_set() for c in children):
            return True
        if any(not c.is_alive() and not c.ready.is_set() for c in children):
            return False
        time.sleep(0.05)
    return False
