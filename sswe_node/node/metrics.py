"""The node's Prometheus metrics: counters, latency summaries and scrape-time gauges."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Summary, generate_latest
from prometheus_client.registry import Collector

_PREFIX = "sswe_"


class Metrics:
    """Counters and latency summaries of one running node, in their own Prometheus registry.

    Metrics are created on first use; a metric's label names are those of its first use.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.children_dir: str | None = None
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
        sample = self._exposed().get_sample_value(_PREFIX + name, labels or None)
        return float(sample or 0.0)

    def add_children(self, path: str) -> None:
        """Also expose the metrics that this node's worker and sender processes write.

        The children run prometheus_client in multi-process mode (``PROMETHEUS_MULTIPROC_DIR``
        = ``path``, set for them by :class:`sswe_node.node.processes.ChildProcess`); their
        counters and summaries are summed over processes and merged with this process's own
        (same metric names, e.g. ``sswe_stage_seconds`` of ``store`` here and ``predict`` there).
        """
        self.children_dir = path

    def _exposed(self) -> CollectorRegistry:
        if self.children_dir is None:
            return self.registry
        exposed = CollectorRegistry(auto_describe=False)
        exposed.register(_Merged(self.registry, self.children_dir))
        return exposed

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
        return generate_latest(self._exposed()).decode()


class _Merged(Collector):
    """Our own metrics and the child processes' (multi-process files), one family per name."""

    def __init__(self, own: CollectorRegistry, children_dir: str) -> None:
        self.own = own
        self.children_dir = children_dir

    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        from prometheus_client.multiprocess import MultiProcessCollector

        children = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(children, path=self.children_dir)
        families: dict[str, object] = {}
        for registry in (self.own, children):
            for family in registry.collect():
                known = families.get(family.name)
                if known is None:
                    families[family.name] = family
                else:
                    known.samples.extend(family.samples)  # type: ignore[attr-defined]
        return iter(families.values())
