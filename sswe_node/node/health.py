"""A small HTTP endpoint: ``/health`` (JSON) and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOGGER = logging.getLogger(__name__)


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
