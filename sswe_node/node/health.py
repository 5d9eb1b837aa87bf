"""A small HTTP endpoint: ``/health`` (JSON) and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOGGER = logging.getLogger(__name__)

_LabelKey = tuple[str, tuple[tuple[str, str], ...]]


class Metrics:
    """Thread-safe counters and latency summaries kept in memory by the running node."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[_LabelKey, float] = {}
        self._sums: dict[_LabelKey, tuple[int, float]] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` to the counter ``name`` with ``labels``."""
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + amount

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        """Record one latency observation of ``name`` (a Prometheus summary: count and sum)."""
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            count, total = self._sums.get(key, (0, 0.0))
            self._sums[key] = (count + 1, total + seconds)

    def value(self, name: str, **labels: str) -> float:
        """Return the current value of a counter (0 when never incremented)."""
        with self._lock:
            return self._counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self, gauges: dict[str, dict[str, float]] | None = None) -> str:
        """Return everything in the Prometheus text exposition format.

        Parameters
        ----------
        gauges : dict, optional
            ``{name: {label_value: value}}`` gauges computed at scrape time (queue depths), with
            the label named ``status``.
        """
        lines: list[str] = []
        with self._lock:
            counters = dict(self._counters)
            sums = dict(self._sums)
        for name in sorted({k[0] for k in counters}):
            full = f"sswe_{name}"
            lines.append(f"# TYPE {full} counter")
            for (n, labels), value in sorted(counters.items()):
                if n == name:
                    lines.append(f"{full}{_labels(labels)} {value:g}")
        for name in sorted({k[0] for k in sums}):
            full = f"sswe_{name}"
            lines.append(f"# TYPE {full} summary")
            for (n, labels), (count, total) in sorted(sums.items()):
                if n == name:
                    lines.append(f"{full}_count{_labels(labels)} {count}")
                    lines.append(f"{full}_sum{_labels(labels)} {total:.6f}")
        for name, values in sorted((gauges or {}).items()):
            full = f"sswe_{name}"
            lines.append(f"# TYPE {full} gauge")
            for status, value in sorted(values.items()):
                lines.append(f'{full}{{status="{status}"}} {value:g}')
        return "\n".join(lines) + "\n"


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return "{" + inner + "}"


class HealthServer:
    """Serve ``/health`` and ``/metrics`` in a background thread.

    Parameters
    ----------
    host, port : str, int
        Where to listen (port 0 picks a free one; see :attr:`port`).
    health : callable
        Returns the ``/health`` JSON body as a dictionary (``"status": "ok"`` when healthy).
    metrics : callable
        Returns the ``/metrics`` text.
    """

    def __init__(
        self,
        host: str,
        port: int,
        health: Callable[[], dict[str, Any]],
        metrics: Callable[[], str],
    ) -> None:
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                try:
                    if self.path.split("?")[0] == "/health":
                        body = outer._health()
                        code = 200 if body.get("status") == "ok" else 503
                        self._reply(code, "application/json", json.dumps(body).encode())
                    elif self.path.split("?")[0] == "/metrics":
                        text = outer._metrics().encode()
                        self._reply(200, "text/plain; version=0.0.4", text)
                    else:
                        self._reply(404, "text/plain", b"not found\n")
                except Exception as exc:  # noqa: BLE001 - report, keep serving
                    LOGGER.error("event=http-error error=%s", type(exc).__name__)
                    self._reply(500, "text/plain", b"error\n")

            def _reply(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                LOGGER.debug("event=http-request %s", format % args)

        self._health = health
        self._metrics = metrics
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sswe-http", daemon=True
        )

    def start(self) -> None:
        """Start serving."""
        self._thread.start()
        LOGGER.info("event=http-listening port=%d", self.port)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
