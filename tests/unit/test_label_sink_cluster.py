"""The sink's blocking metadata look-ups while no broker answers (found by the chaos soak: a worker
started during a broker restart exited 1 on the look-up's transport error)."""

from __future__ import annotations

import socket

from services.label_sink.cluster import metadata_lists
from services.streaming.settings import LabelSinkSettings


def closed_port() -> int:
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_topic_is_not_visible_while_the_broker_is_down() -> None:
    settings = LabelSinkSettings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port()}"})
    visible = metadata_lists(settings)
    assert visible("al.labels.v1") is False  # not an exception: the caller polls again
