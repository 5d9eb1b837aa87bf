"""The loop shared by the workers and the sender: drain a case-store queue, sleep when idle."""

from __future__ import annotations

import logging
import threading
import time

from sswe_node.node.metrics import Metrics
from sswe_node.node.store import CaseStore

LOGGER = logging.getLogger(__name__)


class QueueThread(threading.Thread):
    """A daemon thread that works through a queue kept in the case store until stopped.

    Subclasses implement :meth:`step` (one unit of work, returning how much was done) and may
    override :meth:`idle_seconds`; when a step does nothing the thread sleeps until ``wake`` is
    set or that many seconds pass.

    Parameters
    ----------
    name : str
        The thread name (shown in logs and stack dumps).
    store : CaseStore
        The case store holding the queue.
    wake : threading.Event
        Set by whoever adds work to the queue.
    stop : threading.Event
        Set to stop after the current step.
    metrics : Metrics
        Counters and latencies.
    """

    def __init__(
        self,
        name: str,
        store: CaseStore,
        wake: threading.Event,
        stop: threading.Event,
        metrics: Metrics,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.store = store
        self.wake = wake
        self.stop_event = stop
        self.metrics = metrics
        self._next_dead_check = 0.0  # monotonic time of the next look for dead peers' work

    def dead_work_check_due(self, every_seconds: float = 5.0) -> bool:
        """Return True at most once every ``every_seconds`` (a throttle for periodic checks).

        The worker and the sender use it to take back, now and then, what processes of this
        host that died still hold: at start-up a crashed predecessor's children may still be
        exiting, and without the check their claims would wait for their leases to expire.
        """
        now = time.monotonic()
        if now < self._next_dead_check:
            return False
        self._next_dead_check = now + every_seconds
        return True

    def step(self) -> int:
        """Do one unit of work; return how many items it handled (0: nothing to do)."""
        raise NotImplementedError

    def idle_seconds(self) -> float:
        """Return the longest sleep before looking at the queue again."""
        return 1.0

    def drain(self) -> None:
        """Run :meth:`step` until stopped, sleeping on ``wake`` whenever it finds nothing."""
        while not self.stop_event.is_set():
            try:
                done = self.step()
            except Exception:  # noqa: BLE001 - never stop the loop; the queue is persistent
                LOGGER.exception("event=queue-error thread=%s", self.name)
                done = 0
            if not done:
                self.wake.wait(self.idle_seconds())
                self.wake.clear()
