"""Shared fixtures: the brokers the integration suite runs on.

- `broker`: the integration suite's broker, ONE per test session, with every loop topic created.
  It is Apache Kafka (KRaft, one node, jars from Maven Central; services/streaming/apache_kafka.py)
  wherever a JDK and Maven exist; elsewhere the suite says so in one line and runs on Tansu.
  `ACTIVE_STREAM_REQUIRE_APACHE_KAFKA=1` (set by CI) turns a missing Apache Kafka into a failure.
  `ACTIVE_STREAM_TEST_BROKER=tansu` runs the suite on Tansu on purpose.
- `kafka`: Apache Kafka itself, for the tests of what only it shows (transactions hidden from
  `read_committed` readers, compaction, `max.message.bytes`, TLS, SASL and ACLs). Where it
  cannot run they skip with the reason, except under ACTIVE_STREAM_REQUIRE_APACHE_KAFKA=1, where
  they fail. Beside its plaintext listener (whose clients are super users: the suite's own
  set-up) it has a SASL_SSL one with SCRAM users and the authorizer (`kafka.secure_bootstrap`,
  `kafka.ca_location`, `SECURE_ADMIN`; more users with `add_scram_user`).
- `tansu`: the embedded broker, for its quirk tests and a smoke subset of the loop (`any_broker`).
- `any_broker`: parametrized over both, for the loop's smoke tests.
Tests that need isolation create their own uniquely named topics with `unique_topic`.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

import pytest

from services.streaming import apache_kafka
from services.streaming.apache_kafka import ApacheKafka
from services.streaming.embedded import EmbeddedBroker
from services.streaming.kafka_security import Security
from services.streaming.topics import TopicResult

# Measured on Tansu: a consumer-group join takes about session.timeout.ms / 2 (docs/brokers.md),
# so tests use a short session to keep joins near 3 s instead of the 45 s default's ~23 s.
TEST_GROUP_TIMINGS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}

REQUIRE_ENV = "ACTIVE_STREAM_REQUIRE_APACHE_KAFKA"
CHOICE_ENV = "ACTIVE_STREAM_TEST_BROKER"

# Broker settings for the suite on top of apache_kafka.SINGLE_NODE, none of which changes a
# guarantee: offsets commit in ~1 ms instead of ~6 ms (the coordinator's 5-ms append linger,
# shared/research/apache-kafka-findings.md), and the log cleaner looks for work every second
# instead of every 15 s so a compaction test needs no long wait, and it aborts a transaction
# left open past its timeout within half a second of the timeout instead of up to 10 s.
TEST_BROKER_PROPERTIES = {
    "group.coordinator.append.linger.ms": "0",
    "log.cleaner.backoff.ms": "1000",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "500",
}

# The secured listener's super user; other users are made per test (add_scram_user).
SECURE_ADMIN = ("admin", "admin-secret-7d1e")

_counter = itertools.count()


class Broker(Protocol):
    """What a test needs of either broker."""

    @property
    def bootstrap(self) -> str: ...

    def create_topics(self, partitions: int = 4) -> list[TopicResult]: ...


def _required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def _apache_kafka_missing() -> str | None:
    """Why Apache Kafka cannot be used here, or None."""
    if os.environ.get(CHOICE_ENV, "") == "tansu":
        return f"{CHOICE_ENV}=tansu"
    return apache_kafka.unavailable_reason()


@contextmanager
def private_kafka(properties: Mapping[str, str] | None = None) -> Iterator[ApacheKafka]:
    """A broker of a test's own (one it may kill or restart), with the suite's settings and
    `properties` over them; skipped where Apache Kafka cannot run, a failure when required."""
    missing = _apache_kafka_missing()
    if missing is not None:
        if _required():
            pytest.fail(f"Apache Kafka required but {missing}", pytrace=False)
        pytest.skip(f"needs Apache Kafka: {missing}")
    broker = ApacheKafka(properties={**TEST_BROKER_PROPERTIES, **(properties or {})})
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


def pytest_report_header(config: pytest.Config) -> str:
    missing = _apache_kafka_missing()
    if missing is None:
        return (f"integration broker: Apache Kafka {apache_kafka.kafka_version()} "
                f"(KRaft, jars in {apache_kafka.cache_dir()}); quirk and smoke tests: Tansu")
    if _required():
        return f"integration broker: Apache Kafka REQUIRED ({REQUIRE_ENV}) but {missing}"
    return f"integration broker: Tansu, because {missing}"


@pytest.fixture(scope="session")
def tansu() -> Iterator[EmbeddedBroker]:
    embedded = EmbeddedBroker()
    embedded.start()
    embedded.create_topics()
    try:
        yield embedded
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
def _apache_kafka() -> Iterator[ApacheKafka | str]:
    """The session's Apache Kafka, or the reason there is none (a failure when required)."""
    missing = _apache_kafka_missing()
    if missing is not None:
        if _required():
            pytest.fail(f"{REQUIRE_ENV} is set but Apache Kafka cannot run: {missing}",
                        pytrace=False)
        yield missing
        return
    broker = ApacheKafka(properties=TEST_BROKER_PROPERTIES,
                         security=Security(users=dict([SECURE_ADMIN]), admin=SECURE_ADMIN[0]))
    try:
        broker.start()
        broker.create_topics()
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="session")
def kafka(_apache_kafka: ApacheKafka | str) -> ApacheKafka:
    if isinstance(_apache_kafka, str):
        pytest.skip(f"needs Apache Kafka: {_apache_kafka}")
    return _apache_kafka


@pytest.fixture(scope="session")
def broker(_apache_kafka: ApacheKafka | str, request: pytest.FixtureRequest) -> Broker:
    if isinstance(_apache_kafka, str):
        tansu: EmbeddedBroker = request.getfixturevalue("tansu")
        return tansu
    return _apache_kafka


@pytest.fixture(params=["apache-kafka", "tansu"])
def any_broker(request: pytest.FixtureRequest) -> Broker:
    """Both brokers in turn: the loop's smoke subset runs on each."""
    if request.param == "tansu":
        tansu: EmbeddedBroker = request.getfixturevalue("tansu")
        return tansu
    kafka: ApacheKafka = request.getfixturevalue("kafka")
    return kafka


def add_scram_user(kafka: ApacheKafka, name: str, password: str) -> None:
    """A SCRAM-SHA-512 user of the secured listener (made over the plaintext listener, whose
    clients are super users)."""
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    upsert = UserScramCredentialUpsertion(
        name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), password.encode())
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(30)


@pytest.fixture(autouse=True)
def _no_service_outlives_its_test() -> Iterator[None]:
    """A test that fails half-way leaves its scorer or sink subprocess running, and it would
    keep working against the shared broker for the rest of the session: reap it. Processes of
    wider-scoped fixtures (started before this fixture's setup) are theirs to stop."""
    from services.evaluation.processes import ServiceProcess

    before = list(ServiceProcess.started)
    yield
    ServiceProcess.kill_leftovers(keep=before)


@pytest.fixture
def unique_topic() -> Iterator[str]:
    """A topic name no other test uses (the topic itself is not created)."""
    yield f"test.{next(_counter)}.{uuid.uuid4().hex[:8]}"
