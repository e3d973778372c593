"""The ops endpoints every service serves: `/metrics` (Prometheus text), `/healthz`, `/readyz`.

`/healthz` answers "is the process able to make progress" (a stuck loop should be restarted);
`/readyz` answers "should it receive work" (e.g. partitions assigned and state restored). Both are
callbacks returning (ok, detail) so the service decides what they mean; 200 when ok, else 503.

Access (`OpsAccess`): open by default; or HTTP basic auth, or a bearer token, on every endpoint
or on `/metrics` only (so kubelet probes need no credentials). Binding to loopback is the
service's `*_METRICS_HOST`. A client gets `read_timeout_s` to send its whole request and as long
again to take the response, and at most `max_connections` are served at once (more are closed at
accept): a slow or stalled client holds one thread for a bounded time and cannot pile them up.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from services.streaming.settings import Secret

Probe = Callable[[], tuple[bool, str]]
Route = Callable[[], tuple[int, str, bytes]]

# A scrape or a probe sends its few hundred bytes of request at once; 5 s is ample on any
# network and still frees a thread quickly from a client that connects and stalls.
READ_TIMEOUT_S = 5.0
# Prometheus, the kubelet's probes and a person with curl need a handful at a time.
MAX_CONNECTIONS = 64


def always_ok() -> tuple[bool, str]:
    return True, "ok"


@dataclass(frozen=True)
class OpsAccess:
    """Who may read the ops endpoints. `mode`: "none", "basic" (`user` + `password`) or
    "bearer" (`token`); `scope`: "all" endpoints or "metrics" only (probes stay open)."""

    mode: str = "none"
    user: str = ""
    password: Secret = Secret("")
    token: Secret = Secret("")
    scope: str = "all"

    @classmethod
    def of(cls, settings: Any) -> OpsAccess:
        """From a service's settings object (its `metrics_auth*` fields, validated there)."""
        return cls(settings.metrics_auth, settings.metrics_user, settings.metrics_password,
                   settings.metrics_token, settings.metrics_auth_scope)

    def protects(self, path: str) -> bool:
        return self.mode != "none" and (self.scope == "all" or path == "/metrics")

    def challenge(self) -> str:
        """The WWW-Authenticate value of a 401."""
        return 'Basic realm="active-stream"' if self.mode == "basic" else "Bearer"

    def allows(self, authorization: str | None) -> bool:
        """True when the Authorization header carries the configured credentials. Compared in
        constant time, so response timing does not reveal how much of a guess was right."""
        if self.mode == "none":
            return True
        scheme, _, value = (authorization or "").strip().partition(" ")
        value = value.strip()
        if self.mode == "bearer":
            return scheme.lower() == "bearer" and _same(value, self.token.reveal())
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Both compared every time (no short cut), for the same reason as above.
        user_ok = _same(user, self.user)
        password_ok = _same(password, self.password.reveal())
        return bool(sep) and user_ok and password_ok


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


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
        access: OpsAccess | None = None,
        read_timeout_s: float = READ_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        routes: dict[str, Route] = {
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest(registry)),
            "/healthz": lambda: _probe(health),
            "/readyz": lambda: _probe(ready),
        }
        handler = _handler(routes, access or OpsAccess(), read_timeout_s)
        self._server = _BoundedServer((host, port), handler, max_connections)
        self._thread = threading.Thread(target=self._server.serve_forever, name="ops-http",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> OpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; idempotent. Connections being served finish on
        their own threads, within their timeouts."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


class _BoundedServer(HTTPServer):
    """One daemon thread per connection, at most `max_connections` of them: a connection
    accepted beyond that is closed at once instead of queuing for a thread."""

    def __init__(self, address: tuple[str, int], handler: type, max_connections: int) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        threading.Thread(target=self._serve, args=(request, client_address), name="ops-conn",
                         daemon=True).start()

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except OSError:
            pass  # the client went away or timed out: nothing to answer, nothing to log
        finally:
            self.shutdown_request(request)
            self._slots.release()


class _DeadlineReader(io.RawIOBase):
    """Reads a socket until a fixed deadline: each recv may wait only for what is left of it,
    so a client that drips a byte at a time cannot stretch its request past the deadline (a
    per-recv timeout alone would be reset by every byte)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request not received in time")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


def _probe(check: Probe) -> tuple[int, str, bytes]:
    ok, detail = check()
    return (200 if ok else 503), "text/plain; charset=utf-8", (detail + "\n").encode()


def _handler(routes: dict[str, Route], access: OpsAccess, read_timeout_s: float) -> type:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0 (the default): one request per connection, so the deadline covers it all.
        timeout = read_timeout_s

        def setup(self) -> None:
            super().setup()
            deadline = time.monotonic() + read_timeout_s
            self.rfile.close()  # the plain reader setup() made; ours replaces it
            self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline))

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            # Sending the response gets its own bound: sendall's timeout covers the whole body.
            self.connection.settimeout(read_timeout_s)
            path = self.path.split("?", 1)[0]
            route = routes.get(path)
            if route is None:
                self._send(404, "text/plain", b"not found\n")
            elif access.protects(path) and not access.allows(self.headers.get("Authorization")):
                self._send(401, "text/plain", b"unauthorized\n",
                           {"WWW-Authenticate": access.challenge()})
            else:
                self._send(*route())

        def _send(self, status: int, ctype: str, body: bytes,
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Scrapes every few seconds would drown the service's own log; stay quiet."""

    return Handler
