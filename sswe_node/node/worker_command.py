"""`sswe-node worker`: processing only, no DICOM port (e.g. a GPU machine of a larger node).

It runs ``processing.workers`` worker processes on the case store and storage folder that the
receiving replicas (``sswe-node serve``) share: PostgreSQL and a network file system. Cases are
claimed with leases (:mod:`sswe_node.node.leases`), so workers on several machines never process
one case twice and a machine that dies only delays its cases by a lease.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from sswe_node.config import load_settings
from sswe_node.errors import SsweError
from sswe_node.node.processes import ChildProcess, worker_main
from sswe_node.node.store import CaseStore

LOGGER = logging.getLogger(__name__)

HELP = "run processing workers only, on a shared case store (no DICOM port)"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add this sub-command's options."""
    parser.add_argument("--config", default=None, help="node configuration file (TOML)")
    parser.add_argument("--storage", default=None, help="storage folder (node.storage_dir)")
    parser.add_argument(
        "--database", default=None, help="case store SQLAlchemy URL (node.database_url)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (processing.workers)"
    )


def run(args: argparse.Namespace) -> int:
    """Process cases until SIGINT or SIGTERM."""
    settings = load_settings(
        args.config,
        overrides={
            "node.storage_dir": args.storage,
            "node.database_url": args.database,
            "processing.workers": args.workers,
        },
    )
    level = (getattr(args, "log_level", None) or settings.logging.level).upper()
    logging.getLogger().setLevel(level)
    if settings.processing.paused:
        raise SsweError("processing.paused is true: nothing to do", reason="paused")
    Path(settings.node.storage_dir).mkdir(parents=True, exist_ok=True)
    store = CaseStore(settings.node.database_url)  # migrates the schema once, before the workers
    resumed = store.resume()
    store.close()
    workers = [
        ChildProcess("worker", worker_main, (settings, index))
        for index in range(settings.processing.workers)
    ]
    done = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        LOGGER.info("event=signal name=%s", signal.Signals(signum).name)
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    LOGGER.info("event=worker-start workers=%d resumed=%d", len(workers), resumed)
    for worker in workers:
        worker.start()
    status = 0
    while not done.wait(1.0):
        if all(not w.is_alive() for w in workers):
            errors = [w.error for w in workers if w.error]
            LOGGER.error("event=workers-stopped errors=%s", "; ".join(errors) or "-")
            status = 1
            break
    for worker in workers:
        worker.stop()
    for worker in workers:
        worker.join(timeout=60)
    LOGGER.info("event=stopped")
    return status
