"""Shared fixtures. The `broker` fixture starts ONE embedded Tansu broker per test session, on a
free loopback port, with every loop topic created; it is stopped (process reaped) at session end.
Tests that need isolation create their own uniquely named topics with `unique_topic`.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import pytest

from services.streaming.embedded import EmbeddedBroker

# Measured on Tansu: a consumer-group join takes about session.timeout.ms / 2 (docs/brokers.md),
# so tests use a short session to keep joins near 3 s instead of the 45 s default's ~23 s.
TEST_GROUP_TIMINGS = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}

_counter = itertools.count()


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    embedded = EmbeddedBroker()
    embedded.start()
    embedded.create_topics()
    try:
        yield embedded
    finally:
        embedded.stop()


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
