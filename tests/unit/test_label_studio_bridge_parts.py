"""The bridge's settings, its API client's chunking, and the label writer's memory."""

from __future__ import annotations

from typing import Any

import pytest

from services.label_studio import api
from services.label_studio.settings import BridgeSettings
from services.label_studio.writer import DeliveryFailed, LabelWriter
from services.streaming.settings import SettingsError, describe

BASE = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "ACTIVE_STREAM_LABEL_STUDIO_URL": "http://ls:8080",
        "ACTIVE_STREAM_LABEL_STUDIO_TOKEN": "tok-secret", "ACTIVE_STREAM_LABEL_STUDIO_PROJECT_ID":
        "3", "ACTIVE_STREAM_LABEL_STUDIO_WEBHOOK_SECRET": "hook-secret"}


def test_settings_and_secrets_never_printed() -> None:
    s = BridgeSettings.from_env(BASE | {"ACTIVE_STREAM_LABEL_STUDIO_CONFIGURE_PROJECT": "false"})
    assert (s.project_id, s.configure_project, s.requests_topic) == (
        3, False, "al.annotation-requests.v1")
    shown = str(describe(s))
    assert "tok-secret" not in shown and "hook-secret" not in shown


@pytest.mark.parametrize("env,names", [
    ({"ACTIVE_STREAM_LABEL_STUDIO_URL": "ls:8080"}, "URL"),
    ({"ACTIVE_STREAM_LABEL_STUDIO_TOKEN": ""}, "TOKEN is required"),
    ({"ACTIVE_STREAM_LABEL_STUDIO_WEBHOOK_SECRET": ""}, "WEBHOOK_SECRET"),
    ({"ACTIVE_STREAM_LABEL_STUDIO_PROJECT_ID": "0"}, "PROJECT_ID"),
    ({"ACTIVE_STREAM_LABEL_STUDIO_CONFIGURE_PROJECT": "maybe"}, "CONFIGURE_PROJECT"),
    ({"ACTIVE_STREAM_LABEL_STUDIO_RETRY_MAX_S": "0"}, "RETRY_MAX_S"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        BridgeSettings.from_env(BASE | env)


def test_request_ids_are_looked_up_in_chunks_that_keep_urls_short() -> None:
    ids = [f"{i:064x}" for i in range(200)]
    chunks = list(api._chunks(ids))
    assert [rid for chunk in chunks for rid in chunk] == ids
    assert len(chunks) > 1 and all(len(c) * (64 + 120) <= api._MAX_QUERY_CHARS for c in chunks)


class _Records:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.fail = fail

    def write(self, topic: str, value: bytes, key: bytes | None) -> None:
        if self.fail:
            raise DeliveryFailed("down")
        self.sent.append((topic, value, key))


def test_a_label_id_is_produced_once_and_forgotten_when_its_delivery_failed() -> None:
    records: Any = _Records()
    writer = LabelWriter(records, "labels", remembered=2)
    assert writer.write("l1", "a", b"1") and not writer.write("l1", "a", b"1")
    assert records.sent == [("labels", b"1", b"a")]
    writer.write("l2", "a", b"2")
    writer.write("l3", "a", b"3")  # the memory is bounded: l1 is forgotten
    assert not writer.seen("l1") and writer.seen("l3")
    records.fail = True
    with pytest.raises(DeliveryFailed):
        writer.write("l4", "a", b"4")
    assert not writer.seen("l4")  # a later attempt (reconciliation) produces it
