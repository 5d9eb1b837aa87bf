"""A small HTTP endpoint: ``/health`` (JSON) and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

import json
import logging
import ssl
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
    post : callable, optional
        Answers every ``POST`` request, given the request handler (the STOW-RS route,
        :mod:`sswe_node.node.stow_server`); without it a ``POST`` gets 405.
    ssl_context : ssl.SSLContext, optional
        Serve HTTPS with this server-side context.
    """

    def __init__(
        self,
        host: str,
        port: int,
        health: Callable[[], dict[str, Any]],
        metrics: Callable[[], str],
        post: Callable[[BaseHTTPRequestHandler], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                if outer._post is None:
                    self._reply(405, "text/plain", b"method not allowed\n")
                    return
                try:
                    outer._post(self)
                except Exception as exc:  # noqa: BLE001 - report, keep serving
                    LOGGER.error("event=http-error method=POST error=%s", type(exc).__name__)
                    self.close_connection = True
                    self._reply(500, "text/plain", b"error\n")

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
        self._post = post
        self._server = ThreadingHTTPServer((host, port), _Handler)
        if ssl_context is not None:
            # The handshake happens on the first read, in the request's thread, so a slow
            # client cannot hold up the accepting loop.
            self._server.socket = ssl_context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
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
