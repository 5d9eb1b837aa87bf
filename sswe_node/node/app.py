"""`sswe-node serve`: the node's life cycle (start, resume, serve, stop cleanly on a signal)."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sswe_node.aetitle import add_calling_aet
from sswe_node.config import Settings, load_settings
from sswe_node.errors import SsweError
from sswe_node.node.handlers import adopt_orphans
from sswe_node.node.health import HealthServer
from sswe_node.node.metrics import Metrics
from sswe_node.node.processes import (
    ChildProcess,
    new_sender,
    sender_main,
    supervise,
    worker_main,
)
from sswe_node.node.scp import start_scp, stop_scp
from sswe_node.node.store import CaseStore
from sswe_node.node.stow_server import stow_route
from sswe_node.node.wakeup import CASES, SENDS, Wakeup
from sswe_node.node.web_session import server_ssl_context
from sswe_node.node.worker import Worker, load_node_model
from sswe_node.quiet import quiet_libraries

LOGGER = logging.getLogger(__name__)

HELP = "run the DICOM storage SCP that turns B-mode into synthetic SWE (research use only)"


class Node:
    """The running node: SCP, workers, sender and the optional HTTP endpoint.

    Parameters
    ----------
    settings : Settings
        The node settings.
    model_loader : callable, optional
        Loads the model once, in the first worker thread (default: the configured model,
        loaded by each worker process). A loader of its own makes the workers threads.
    """

    def __init__(
        self,
        settings: Settings,
        model_loader: Callable[[Settings], Any] = load_node_model,
    ) -> None:
        self.settings = settings
        self.model_loader = model_loader
        self.metrics = Metrics()
        self.stop_event = threading.Event()
        self._metrics_dir: str | None = None
        # Wake-ups across the node's processes (threading.Event until start()).
        self.cases_waiting: Any = threading.Event()
        self.sends_queued: Any = threading.Event()
        self.store: CaseStore | None = None
        self.workers: list[Any] = []  # Worker threads, or ChildProcess handles
        self.sender: Any = None
        self.http: HealthServer | None = None
        self.ae: Any = None
        self.server: Any = None
        self.started_at = time.time()
        self._stopped = False

    @property
    def port(self) -> int:
        """The DICOM port actually listened on."""
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Open the case store, resume interrupted cases, start workers, sender and the SCP.

        With ``processing.processes`` (the default), the workers and the sender run in OS
        processes of their own (:mod:`sswe_node.node.processes`); this process only receives,
        persists and records. Otherwise (or with a ``model_loader`` of its own) they are
        threads of this process.
        """
        settings = self.settings
        node = settings.node
        Path(node.storage_dir).mkdir(parents=True, exist_ok=True)
        self.store = CaseStore(node.database_url)
        resumed = self.store.resume()
        adopted = adopt_orphans(Path(node.storage_dir), self.store)
        pending = self.store.pending_count()
        LOGGER.info("event=start resumed=%d adopted=%d pending=%d", resumed, adopted, pending)
        in_processes = settings.processing.processes and self.model_loader is load_node_model
        self.cases_waiting = Wakeup(
            CASES, node.database_url, node.storage_dir, listen=not in_processes
        )
        self.sends_queued = Wakeup(
            SENDS, node.database_url, node.storage_dir, listen=not in_processes
        )
        if in_processes:
            self._start_processes()
        else:
            self._start_threads()
        if settings.http.enabled:
            self.http = HealthServer(
                settings.http.host, settings.http.port, self.health, self.render_metrics,
                post=stow_route(settings, self.store, self.cases_waiting, self.metrics),
                ssl_context=server_ssl_context(settings.http),
            )  # fmt: skip
            self.http.start()
        self.ae, self.server = start_scp(settings, self.store, self.cases_waiting, self.metrics)
        if pending:
            self.cases_waiting.set()

    def _start_processes(self) -> None:
        settings = self.settings
        self._metrics_dir = tempfile.mkdtemp(prefix="sswe-metrics-")
        self.metrics.add_children(self._metrics_dir)
        folder = self._metrics_dir
        if not settings.processing.paused:
            for index in range(settings.processing.workers):
                child = ChildProcess("worker", worker_main, (settings, index), folder)
                self.workers.append(child)
        else:
            LOGGER.info("event=processing-paused")
        self.sender = ChildProcess("sender", sender_main, (settings,), folder)
        children = [*self.workers, self.sender]
        for child in children:
            child.start()
        supervise(children, self.stop_event, self._respawned)

    def _respawned(self, old: ChildProcess, new: ChildProcess) -> None:
        if old is self.sender:
            self.sender = new
        else:
            self.workers[self.workers.index(old)] = new

    def _start_threads(self) -> None:
        settings = self.settings
        if not settings.processing.paused:
            self.workers = [self._worker(0)]
            self.workers[0].start()
        else:
            LOGGER.info("event=processing-paused")
        self.sender = new_sender(
            settings, self.store, self.sends_queued, self.stop_event, self.metrics
        )
        self.sender.start()

    def _worker(self, index: int, model: Any = None) -> Worker:
        return Worker(
            self.store,  # type: ignore[arg-type]
            self.settings,
            self.cases_waiting,
            self.stop_event,
            self.sends_queued,
            self.metrics,
            model_loader=self._load_then_start_others,
            model=model,
            name=f"sswe-worker-{index}",
        )

    def _load_then_start_others(self, settings: Settings) -> Any:
        model = self.model_loader(settings)
        # Further worker threads share the model loaded once by the first one.
        for index in range(1, settings.processing.workers):
            worker = self._worker(index, model)
            self.workers.append(worker)
            worker.start()
        return model

    def health(self) -> dict[str, Any]:
        """Return the ``/health`` body."""
        counts = self.store.counts() if self.store else {}
        worker_errors = [w.error for w in self.workers if w.error]
        if isinstance(self.sender, ChildProcess) and self.sender.error:
            worker_errors.append(self.sender.error)
        status = "ok" if not worker_errors and not self.stop_event.is_set() else "degraded"
        return {
            "status": status,
            "ae_title": self.settings.node.ae_title,
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "processing": "paused" if self.settings.processing.paused else "running",
            "model_loaded": any(w.ready.is_set() for w in self.workers),
            "errors": worker_errors,
            **counts,
        }

    def render_metrics(self) -> str:
        """Return the Prometheus ``/metrics`` text (counters, latencies and queue depths)."""
        counts = self.store.counts() if self.store else {"cases": {}, "sends": {}}
        gauges = {
            "cases": {k: float(v) for k, v in counts["cases"].items()},
            "sends": {k: float(v) for k, v in counts["sends"].items()},
        }
        if self.store:  # cases by warning code (label "status", as the queue gauges)
            from sswe_node.node.case_warnings import warning_counts

            gauges["case_warnings"] = warning_counts(self.store)
        return self.metrics.render(gauges)

    def stop(self, grace_seconds: float | None = None) -> None:
        """Stop accepting associations, let in-flight ones and the current batch finish, exit.

        Bounded: established associations get half of ``grace_seconds`` (default
        ``node.shutdown_timeout``), then are cut; connections still sending their request are
        closed at once; the workers and the sender get what is left.
        """
        if self._stopped:
            return
        self._stopped = True
        LOGGER.info("event=stopping")
        if grace_seconds is None:
            grace_seconds = self.settings.node.shutdown_timeout
        end = time.monotonic() + grace_seconds
        if self.server is not None:
            stop_scp(self.server, time.monotonic() + grace_seconds / 2)
        grace_seconds = max(0.5, end - time.monotonic())
        self.stop_event.set()
        for child in [*self.workers, self.sender]:
            if isinstance(child, ChildProcess):
                child.stop()  # all at once; then each is waited for
        self.cases_waiting.set()
        self.sends_queued.set()
        for worker in list(self.workers):
            worker.join(timeout=grace_seconds)
        if self.sender is not None:
            self.sender.join(timeout=grace_seconds)
        for wakeup in (self.cases_waiting, self.sends_queued):
            if isinstance(wakeup, Wakeup):
                wakeup.close()
        if self.http is not None:
            self.http.stop()
        if self.store is not None:
            self.store.close()
        if self._metrics_dir is not None:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
        LOGGER.info("event=stopped")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add this sub-command's options."""
    parser.add_argument("--config", default=None, help="node configuration file (TOML)")
    parser.add_argument("--port", type=int, default=None, help="DICOM port (node.port)")
    add_calling_aet(parser, help="our AE title (node.ae_title)", aliases=("--ae-title",))
    parser.add_argument("--storage", default=None, help="storage folder (node.storage_dir)")
    parser.add_argument(
        "--database", default=None, help="case store SQLAlchemy URL (node.database_url)"
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM."""
    settings = load_settings(
        args.config,
        overrides={
            "node.port": args.port,
            "node.ae_title": args.calling_aet,
            "node.storage_dir": args.storage,
            "node.database_url": args.database,
        },
    )
    level = (getattr(args, "log_level", None) or settings.logging.level).upper()
    logging.getLogger().setLevel(level)
    quiet_libraries(level)  # one line per node event: the libraries' chatter is debug
    os.umask(0o077)  # every file and folder the node makes is the owner's only
    node = Node(settings)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        LOGGER.info("event=signal name=%s", signal.Signals(signum).name)
        stop.set()

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # thread dump for operators
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        node.start()
    except OSError as exc:  # e.g. the port is taken: one clear line, not a traceback
        node.stop()
        raise SsweError(
            f"cannot listen on {settings.node.host}:{settings.node.port}: {exc.strerror or exc}",
            reason="listen",
        ) from None
    try:
        while not stop.wait(0.5):
            pass
    finally:
        _stop_within(node, settings.node.shutdown_timeout)
    return 0


def _stop_within(node: Node, seconds: float) -> None:
    """Stop ``node``; exit the process anyway once ``seconds`` (plus one) have passed.

    Whatever a peer or a stuck library call does, SIGTERM ends the node in bounded time.
    Everything acknowledged is durable already, so a forced exit loses nothing: interrupted
    cases and sends are resumed at the next start.
    """
    stopper = threading.Thread(target=node.stop, name="sswe-stop", daemon=True)
    stopper.start()
    stopper.join(seconds + 1.0)
    if stopper.is_alive():
        LOGGER.warning("event=stopped forced=true seconds=%.0f", seconds)
        logging.shutdown()
        os._exit(0)
