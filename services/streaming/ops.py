"""The ops endpoints every service serves: `/metrics` (Prometheus text), `/healthz`, `/readyz`.

`/healthz` answers "is the process able to make progress" (a stuck loop should be restarted);
`/readyz` answers "should it receive work" (e.g. partitions assigned and state restored). Both are
callbacks returning (ok, detail) so the service decides what they mean; 200 when ok, else 503.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Probe = Callable[[], tuple[bool, str]]


def always_ok() -> tuple[bool, str]:
    return True, "ok"


class OpsServer:
    """HTTP server on a daemon thread. `port=0` picks a free port (see `.port` after start)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str = "0.0.0.0",
        port: int = 0,
        *,
        health: Probe = always_ok,
        ready: Probe = always_ok,
    ) -> None:
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest(registry)),
            "/healthz": lambda: _probe(health),
            "/readyz": lambda: _probe(ready),
        }
        self._server = ThreadingHTTPServer((host, port), _handler(routes))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ops-http",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> OpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


def _probe(check: Probe) -> tuple[int, str, bytes]:
    ok, detail = check()
    return (200 if ok else 503), "text/plain; charset=utf-8", (detail + "\n").encode()


def _handler(routes: dict[str, Callable[[], tuple[int, str, bytes]]]) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            route = routes.get(self.path.split("?", 1)[0])
            status, ctype, body = route() if route else (404, "text/plain", b"not found\n")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Scrapes every few seconds would drown the service's own log; stay quiet."""

    return Handler
