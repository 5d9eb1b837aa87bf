"""The node's Prometheus metrics: counters, latency summaries and scrape-time gauges."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Summary, generate_latest

_PREFIX = "sswe_"


class Metrics:
    """Counters and latency summaries of one running node, in their own Prometheus registry.

    Metrics are created on first use; a metric's label names are those of its first use.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._counters: dict[str, Counter] = {}
        self._summaries: dict[str, Summary] = {}
        self._gauges: dict[str, Gauge] = {}

    def _counter(self, name: str, labels: tuple[str, ...]) -> Counter:
        with self._lock:
            if name not in self._counters:
                self._counters[name] = Counter(
                    _PREFIX + name, name.replace("_", " "), labels, registry=self.registry
                )
            return self._counters[name]

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` to the counter ``name`` (ending in ``_total``) with ``labels``."""
        counter = self._counter(name, tuple(sorted(labels)))
        (counter.labels(**labels) if labels else counter).inc(amount)

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        """Record one latency observation of ``name`` (a summary: count and sum)."""
        with self._lock:
            if name not in self._summaries:
                self._summaries[name] = Summary(
                    _PREFIX + name, name.replace("_", " "), tuple(sorted(labels)),
                    registry=self.registry,
                )  # fmt: skip
            summary = self._summaries[name]
        (summary.labels(**labels) if labels else summary).observe(seconds)

    def value(self, name: str, **labels: str) -> float:
        """Return the current value of a counter (0 when never incremented)."""
        sample = self.registry.get_sample_value(_PREFIX + name, labels or None)
        return float(sample or 0.0)

    def render(self, gauges: dict[str, dict[str, float]] | None = None) -> str:
        """Return everything in the Prometheus text exposition format.

        Parameters
        ----------
        gauges : dict, optional
            ``{name: {status: value}}`` gauges computed at scrape time (queue depths), with
            the label named ``status``.
        """
        for name, values in (gauges or {}).items():
            with self._lock:
                if name not in self._gauges:
                    self._gauges[name] = Gauge(
                        _PREFIX + name, f"{name} by status", ("status",), registry=self.registry
                    )
                gauge = self._gauges[name]
            for status, value in values.items():
                gauge.labels(status=status).set(value)
        return generate_latest(self.registry).decode()
