"""Fetch and run a real Apache Kafka broker (KRaft, one node) for tests and development.

The broker comes as ordinary jars from Maven Central: `mvn dependency:copy-dependencies` on the
pom beside this module (`apache-kafka.pom.xml`, which pins the version) into a cache folder
outside the work tree, reused when present. It runs as a plain JVM process (no Docker, no
tarball) on free loopback ports with a fresh log directory, acting as broker and controller.

What it needs: a JDK (17+) and Maven on PATH (or `JAVA_HOME`). `unavailable_reason()` says in
one line what is missing, so callers can fall back to the embedded broker where that is allowed.
Measured on a 2-core machine: 46 jars, 43 MB, ~6 s to fetch on a cold Maven cache; ~1.5 s to
format the storage and ~2-4 s until the broker answers (shared/research/apache-kafka-findings.md).
"""

from __future__ import annotations

import base64
import contextlib
import importlib.resources
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from services.streaming.embedded import (
    HOST,
    BrokerUnavailable,
    _die_with_parent,
    free_port,
)
from services.streaming.kafka_security import Security, make_tls
from services.streaming.topics import TopicResult, create_topics, loop_topics

POM_NAME = "apache-kafka.pom.xml"
CACHE_ENV = "ACTIVE_STREAM_APACHE_KAFKA_CACHE"
_COMPLETE = ".complete"

# Settings a single node needs (replication factor 1 for the internal topics), plus what keeps a
# test suite quick without changing any guarantee: no initial rebalance delay (3 s per new group
# otherwise), fewer partitions of the internal topics (50 each by default, created on first use).
SINGLE_NODE: Mapping[str, str] = {
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "8",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "4",
    "group.initial.rebalance.delay.ms": "0",
    "num.partitions": "1",
    # Topics are created explicitly, as in production (topics.py): a typo must not make one.
    "auto.create.topics.enable": "false",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
}


def pom_path() -> Path:
    return Path(str(importlib.resources.files("services.streaming").joinpath(POM_NAME)))


def kafka_version() -> str:
    """The Apache Kafka version the pom pins."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom_path().read_text())
    if match is None:
        raise BrokerUnavailable(f"{pom_path()}: no <kafka.version> property")
    return match.group(1).strip()


def cache_dir() -> Path:
    """Where the jars of this version live: $ACTIVE_STREAM_APACHE_KAFKA_CACHE, else
    $XDG_CACHE_HOME (or ~/.cache)/active-stream, then apache-kafka-VERSION/."""
    root = os.environ.get(CACHE_ENV) or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "active-stream")
    return Path(root) / f"apache-kafka-{kafka_version()}"


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def unavailable_reason() -> str | None:
    """None when an Apache Kafka broker can be run here; else one line saying what is missing."""
    if _java() is None:
        return "no JDK found (java not on PATH, JAVA_HOME unset): Apache Kafka needs Java 17+"
    if jars_ready():
        return None
    if shutil.which("mvn") is None:
        return (f"Apache Kafka {kafka_version()} is not fetched ({cache_dir()}) and Maven (mvn) "
                "is not on PATH to fetch it")
    return None


def jars_ready() -> bool:
    return (cache_dir() / _COMPLETE).is_file()


def fetch_jars(timeout_s: float = 600.0) -> Path:
    """The folder of the broker's jars, fetched from Maven Central first if missing.

    Idempotent; a concurrent or interrupted fetch never leaves a half-filled folder behind (jars
    are copied into a temporary sibling, then renamed). Raises BrokerUnavailable with Maven's
    output tail when the fetch fails."""
    target = cache_dir()
    if jars_ready():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerUnavailable(unavailable_reason() or "Maven (mvn) not found")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        cmd = [mvn, "-B", "-q", "-f", str(pom_path()), "dependency:copy-dependencies",
               f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              check=False, cwd=staging)
        if done.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
            raise BrokerUnavailable(f"fetching Apache Kafka {kafka_version()} with Maven "
                                    f"failed (exit {done.returncode}):\n{tail}")
        (staging / _COMPLETE).write_text(f"{kafka_version()}\n")
        try:
            staging.rename(target)
        except OSError:  # another process finished first: keep its copy
            if not jars_ready():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid).
    Never one that starts with "-", which the storage tool would read as an option (Kafka's
    own Uuid.randomUuid skips those for the same reason)."""
    while True:
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster.startswith("-"):
            return cluster


_LOG4J = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = INFO
"""


class ApacheKafka:
    """One Apache Kafka 4.x process in KRaft mode (broker + controller) on loopback.

    `start()` fetches the jars if needed, formats a fresh storage directory on the first start,
    and blocks until the broker serves metadata and group coordination. `stop()` shuts it down
    (SIGTERM, then SIGKILL past the timeout); `kill()` SIGKILLs it (a crash); `restart()` starts
    it again on the same ports and log directory, so clients reconnect to the same address and
    find every topic, offset and transaction as the broker left them. Usable as a context
    manager. Not thread-safe. Start and restart it from a thread that outlives the broker: the
    JVM gets SIGTERM when the thread that spawned it exits (Linux ties the parent-death signal
    to the thread), so a restart on a short-lived thread is stopped when that thread returns.

    `port` fixes the client port (default: a free one). `properties` are broker settings on top
    of SINGLE_NODE (e.g. a faster log cleaner for a compaction test). The JVM heap is capped at
    `heap` (512 MB is plenty for tests). `data_dir` keeps the logs there instead of in a
    temporary directory that `close()` removes. `security` adds a SASL_SSL listener with SCRAM
    users and the authorizer (services/streaming/kafka_security.py): `secure_bootstrap` and
    `ca_location` are then what its clients need.
    """

    def __init__(self, port: int | None = None, *, properties: Mapping[str, str] | None = None,
                 heap: str = "512m", data_dir: Path | None = None,
                 security: Security | None = None) -> None:
        self._properties = dict(properties or {})
        self._heap = heap
        self._tmp = (tempfile.TemporaryDirectory(prefix="active-stream-kafka-")
                     if data_dir is None else None)
        self.data_dir = Path(self._tmp.name) if self._tmp is not None else Path(str(data_dir))
        self.log_path = self.data_dir / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._requested_port = port
        self._port: int | None = None
        self._controller_port: int | None = None
        self._secure_port: int | None = None
        self.security = security

    # -- addresses --------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """`host:port` for `bootstrap.servers`; valid after the first start()."""
        if self._port is None:
            raise BrokerUnavailable("Apache Kafka not started")
        return f"{HOST}:{self._port}"

    @property
    def secure_bootstrap(self) -> str:
        """`host:port` of the SASL_SSL listener (with `security` only)."""
        if self._secure_port is None:
            raise BrokerUnavailable("no SASL_SSL listener: start with security=Security(...)")
        return f"{HOST}:{self._secure_port}"

    @property
    def ca_location(self) -> Path:
        """The CA that signed the SASL_SSL listener's certificate (with `security` only)."""
        return self.data_dir / "tls" / "ca.pem"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def version(self) -> str:
        return kafka_version()

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- life cycle -------------------------------------------------------------------------

    def start(self, timeout_s: float = 60.0) -> str:
        """Start the broker (fetching its jars first if needed) and wait until it serves.
        Returns the bootstrap address. The first start picks free ports, retrying a lost race.
        Idempotent: on a broker this object already runs, it returns the address (a second
        JVM on the same ports and log directory would fail on the directory's lock)."""
        if self.running():
            return self.bootstrap
        jars = fetch_jars()
        java = _java()
        if java is None:
            raise BrokerUnavailable(unavailable_reason() or "no JDK")
        attempts = 1 if self._port is not None or self._requested_port else 3
        for attempt in range(attempts):
            if self._port is None or attempt > 0:
                self._pick_ports()
            self._write_config()
            if not (self.data_dir / "logs" / "meta.properties").is_file():
                self._format(java, jars)
            self._spawn(java, jars)
            if self._wait_ready(timeout_s):
                return self.bootstrap
            self._reap()
            if attempt == attempts - 1:
                raise BrokerUnavailable(
                    f"Apache Kafka did not serve on {self.bootstrap} within {timeout_s}s; "
                    f"log tail:\n{self.log_tail()}")
        raise AssertionError("unreachable")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Controlled shutdown (SIGTERM), SIGKILL past `timeout_s`; idempotent. The log
        directory stays until `close()` (or garbage collection), so `restart()` can follow."""
        self._reap(timeout_s)

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would; `restart()` recovers from its log directory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self, timeout_s: float = 60.0) -> str:
        """Stop (if running) and start again on the same ports and log directory."""
        self.stop()
        return self.start(timeout_s)

    def close(self) -> None:
        """Stop and remove the log directory this object created."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def create_topics(self, partitions: int = 4) -> list[TopicResult]:
        """Create every loop topic (and its .dlq) on this broker; idempotent."""
        return create_topics(AdminClient({"bootstrap.servers": self.bootstrap}),
                             loop_topics(partitions))

    def log_tail(self, lines: int = 30) -> str:
        chunks = []
        for path in (self.data_dir / "stdout.log", self.log_path):
            with contextlib.suppress(OSError):
                chunks.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(chunks[-lines:]) or "(no log)"

    # -- internals --------------------------------------------------------------------------

    def _pick_ports(self) -> None:
        ports = {self._requested_port} if self._requested_port else set()
        while len(ports) < (3 if self.security else 2):  # the OS may hand out one twice
            ports.add(free_port())
        picked = list(ports)
        if self._requested_port:
            picked.remove(self._requested_port)
            picked.insert(0, self._requested_port)
        self._port, self._controller_port = picked[0], picked[1]
        self._secure_port = picked[2] if self.security else None

    def _config(self) -> dict[str, str]:
        client, controller = self._port, self._controller_port
        listeners = [f"PLAINTEXT://{HOST}:{client}", f"CONTROLLER://{HOST}:{controller}"]
        advertised = [f"PLAINTEXT://{HOST}:{client}"]
        protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        secured: dict[str, str] = {}
        if self.security is not None:
            listeners.append(f"SASL_SSL://{HOST}:{self._secure_port}")
            advertised.append(f"SASL_SSL://{HOST}:{self._secure_port}")
            protocols += ",SASL_SSL:SASL_SSL"
            secured = self.security.properties(self.data_dir / "tls")
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{controller}",
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": protocols,
            "log.dirs": str(self.data_dir / "logs"),
            **SINGLE_NODE,
            **secured,
            **self._properties,
        }

    def _write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        text = "".join(f"{k}={v}\n" for k, v in self._config().items())
        (self.data_dir / "server.properties").write_text(text)
        (self.data_dir / "log4j2.properties").write_text(_LOG4J.format(log=self.log_path))

    def _jvm(self, java: str, jars: Path, *args: str) -> list[str]:
        return [java, f"-Xmx{self._heap}", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
                "-cp", f"{jars}/*", *args]

    def _format(self, java: str, jars: Path) -> None:
        users = []
        if self.security is not None:
            make_tls(self.data_dir / "tls")
            users = self.security.format_args()
        cmd = self._jvm(java, jars, "kafka.tools.StorageTool", "format", "-t", _cluster_id(),
                        "-c", str(self.data_dir / "server.properties"), *users)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise BrokerUnavailable(f"formatting Apache Kafka's storage failed:\n"
                                    f"{done.stdout}{done.stderr}")

    def _spawn(self, java: str, jars: Path) -> None:
        cmd = self._jvm(java, jars, "kafka.Kafka", str(self.data_dir / "server.properties"))
        with open(self.data_dir / "stdout.log", "ab") as out:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only sets PDEATHSIG, no locks
                start_new_session=True,  # a terminal's Ctrl-C reaches our process only
            )

    def _wait_ready(self, timeout_s: float) -> bool:
        """Port open, then metadata, then the group coordinator answers (on a new broker the
        first group call returns NOT_COORDINATOR until __consumer_offsets exists)."""
        deadline = time.monotonic() + timeout_s
        assert self._port is not None
        while time.monotonic() < deadline:
            if not self.running():
                return False
            with contextlib.suppress(OSError), socket.create_connection((HOST, self._port), 0.2):
                break
            time.sleep(0.05)
        else:
            return False
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        while time.monotonic() < deadline and self.running():
            with contextlib.suppress(KafkaException):
                if admin.list_topics(timeout=1.0).brokers:
                    break
        else:
            return False
        return self._coordinator_ready(deadline)

    def _coordinator_ready(self, deadline: float) -> bool:
        # A consumer's offset look-up, not AdminClient.list_consumer_group_offsets: librdkafka
        # 2.16 segfaults parsing that call's NOT_COORDINATOR answer (seen on this broker).
        consumer = Consumer({"bootstrap.servers": self.bootstrap,
                             "group.id": "active-stream-broker-ready",
                             "enable.auto.commit": False})
        try:
            probe = [TopicPartition("active-stream-broker-ready", 0)]
            while time.monotonic() < deadline and self.running():
                try:
                    consumer.committed(probe, timeout=2.0)
                    return True
                except KafkaException:
                    time.sleep(0.1)
            return False
        finally:
            consumer.close()

    def _reap(self, timeout_s: float = 30.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> ApacheKafka:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._reap(5.0)
