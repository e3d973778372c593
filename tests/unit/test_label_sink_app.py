"""The label sink's faust app as built from settings (no broker: nothing is started)."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from prometheus_client import CollectorRegistry

from services.label_sink.app import SinkStatus, build_app
from services.label_sink.metrics import LabelSinkMetrics
from services.streaming.settings import LabelSinkSettings, SettingsError

BASE = {"KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092"}
REPLICATION = "ACTIVE_STREAM_LABEL_SINK_TOPIC_REPLICATION_FACTOR"


def sink_app(env: dict[str, str]) -> faust.App:
    settings = LabelSinkSettings.from_env(BASE | env)
    return build_app(settings, LabelSinkMetrics(CollectorRegistry()), SinkStatus(),
                     partitions=4, on_crash=lambda exc: None)


class RecordingProducer:
    """Stands in for faust's producer: records the topics faust would create."""

    def __init__(self) -> None:
        self.created: dict[str, int] = {}

    async def create_topic(self, topic: str, replication: int, **kwargs: Any) -> None:
        self.created[topic] = replication


@pytest.mark.parametrize("replicas", [None, 3])
def test_faust_creates_its_topics_with_the_configured_replication(replicas: int | None) -> None:
    app = sink_app({} if replicas is None else {REPLICATION: str(replicas)})
    expected = replicas or 1  # default 1: the embedded broker and a one-node cluster
    assert app.conf.topic_replication_factor == expected
    producer = RecordingProducer()

    async def get_producer() -> RecordingProducer:
        return producer

    internal = [table.changelog_topic for table in app.tables.values()]
    internal.append(app.agents["services.label_sink.app.count_labels"].channel)
    for topic in internal:
        topic._get_producer = get_producer  # type: ignore[attr-defined]
        asyncio.run(topic.declare())
    assert producer.created == {
        "active-stream-label-sink-requests-changelog": expected,
        "active-stream-label-sink-labels-changelog": expected,
        "active-stream-label-sink-tiers-changelog": expected,  # docs/tiers.md
        "active-stream-label-sink-mastery-changelog": expected,
        "active-stream-label-sink-labels-by-model": expected,
    }


@pytest.mark.parametrize("value", ["0", "three"])
def test_bad_replication_factor_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match=REPLICATION):
        LabelSinkSettings.from_env(BASE | {REPLICATION: value})


def test_faust_environment_variables_do_not_override_the_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # faust reads its settings from unprefixed variables and lets them win over the arguments.
    for name, value in {"TOPIC_REPLICATION_FACTOR": "5", "PROCESSING_GUARANTEE": "exactly_once",
                        "BROKER_SESSION_TIMEOUT": "99", "BROKER": "kafka://elsewhere:9092"}.items():
        monkeypatch.setenv(name, value)
    app = sink_app({REPLICATION: "3"})
    assert app.conf.topic_replication_factor == 3
    assert app.conf.processing_guarantee.value == "at_least_once"
    assert app.conf.broker_session_timeout == 10.0
    assert [str(url) for url in app.conf.broker] == ["kafka://kafka-1:9092"]
