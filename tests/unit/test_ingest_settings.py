"""The ingest service's settings from ACTIVE_STREAM_INGEST_* variables."""

from __future__ import annotations

import pytest

from services.ingest.settings import IngestSettings
from services.streaming.settings import SettingsError, describe

BASE = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "ACTIVE_STREAM_INGEST_TOKEN": "s3cret-token"}


def test_defaults_and_the_token_never_printed() -> None:
    settings = IngestSettings.from_env(BASE | {"ACTIVE_STREAM_INGEST_TOPIC_PREFIX": "x."})
    assert settings.topic == "x.al.inference-events.v1"
    assert settings.token.reveal() == "s3cret-token"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(describe(settings))
    assert (settings.max_events, settings.port) == (10_000, 9320)


@pytest.mark.parametrize("env,names", [
    ({"ACTIVE_STREAM_INGEST_TOKEN": ""}, "TOKEN is required"),
    ({"ACTIVE_STREAM_INGEST_MAX_EVENTS": "0"}, "MAX_EVENTS=0"),
    ({"ACTIVE_STREAM_INGEST_MAX_EVENTS": "ten"}, "MAX_EVENTS='ten'"),
    ({"ACTIVE_STREAM_INGEST_MAX_EVENTS": "20", "ACTIVE_STREAM_INGEST_MAX_IN_FLIGHT_EVENTS": "10"},
     "exceeds"),
    ({"ACTIVE_STREAM_INGEST_DELIVERY_TIMEOUT_S": "0"}, "DELIVERY_TIMEOUT_S"),
    ({"ACTIVE_STREAM_INGEST_METRICS_AUTH": "bearer"}, "METRICS_TOKEN"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        IngestSettings.from_env(BASE | env)
