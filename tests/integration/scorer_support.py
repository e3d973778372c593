"""Helpers for the scorer's integration tests: private topics, synthetic inference events, the
scorer in-process or as a subprocess, and the reference output computed without Kafka."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from services.core import SelectorPolicy, SelectorState
from services.scorer.partition import PartitionScorer, Record, partition_seed
from services.scorer.service import Scorer
from services.streaming.settings import ScorerSettings
from services.streaming.topics import create_topics, loop_topics
from tests.conftest import TEST_GROUP_TIMINGS
from tests.integration.kafka_support import ServiceProcess, read_all


def private_loop(bootstrap: str, partitions: int = 2) -> str:
    """Create every loop topic under a fresh prefix; returns the prefix."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    create_topics(AdminClient({"bootstrap.servers": bootstrap}),
                  loop_topics(partitions, prefix=prefix))
    return prefix


def scorer_env(bootstrap: str, prefix: str, group: str, **settings: Any) -> dict[str, str]:
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap,
           "ACTIVE_STREAM_SCORER_GROUP_ID": group,
           "ACTIVE_STREAM_SCORER_TOPIC_PREFIX": prefix,
           "ACTIVE_STREAM_SCORER_METRICS_HOST": "127.0.0.1",
           "ACTIVE_STREAM_SCORER_METRICS_PORT": "0",
           "ACTIVE_STREAM_SCORER_BATCH_TIMEOUT_S": "0.2"}
    for key, value in TEST_GROUP_TIMINGS.items():
        env["ACTIVE_STREAM_KAFKA_" + key.upper().replace(".", "_")] = str(value)
    env.update({f"ACTIVE_STREAM_SCORER_{k.upper()}": str(v) for k, v in settings.items()})
    return env


class ScorerProcess(ServiceProcess):
    def __init__(self, env: dict[str, str]) -> None:
        super().__init__("scorer", env, "ACTIVE_STREAM_SCORER_METRICS_PORT")


@contextmanager
def scorer_in_thread(env: dict[str, str]) -> Iterator[Scorer]:
    """A Scorer running on a thread of the test process, stopped (gracefully) on exit."""
    scorer = Scorer(ScorerSettings.from_env(env), registry=CollectorRegistry())
    errors: list[BaseException] = []

    def run() -> None:
        try:
            scorer.run()
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=run, name="scorer", daemon=True)
    thread.start()
    try:
        yield scorer
    finally:
        scorer.stop()
        thread.join(60)
    assert not thread.is_alive(), "scorer did not stop within 60 s"
    if errors:
        raise errors[0]


def consumed(scorer: Scorer, n: int) -> bool:
    """True once the in-process scorer has consumed at least `n` records."""
    value = scorer.registry.get_sample_value("scorer_events_consumed_total")
    return value is not None and value >= n


def reference_requests(bootstrap: str, prefix: str, partitions: int,
                       seed: int = 0) -> list[bytes]:
    """The requests the scorer must produce, computed with no broker in the loop: each input
    partition's records (read back in offset order) through a fresh PartitionScorer."""
    return reference_run(bootstrap, prefix, partitions, seed)[0]


def reference_run(bootstrap: str, prefix: str, partitions: int,
                  seed: int = 0) -> tuple[list[bytes], dict[int, SelectorState]]:
    """`reference_requests`, plus each partition's selector state at the end of its input."""
    settings = ScorerSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                                        "ACTIVE_STREAM_SCORER_TOPIC_PREFIX": prefix,
                                        "ACTIVE_STREAM_SCORER_SEED": str(seed)})
    records: dict[int, list[Record]] = defaultdict(list)
    for msg in read_all(bootstrap, settings.input_topic):
        records[msg.partition()].append(
            Record(msg.offset(), msg.key(), msg.value(), msg.timestamp()[1] / 1000.0))
    out: list[bytes] = []
    states: dict[int, SelectorState] = {}
    for p, recs in sorted(records.items()):
        recs.sort(key=lambda r: r.offset)
        by_offset = {r.offset: r.value for r in recs}
        state = SelectorState.create(SelectorPolicy().for_partition(p, partitions),
                                     partition_seed(seed, p))
        scorer = PartitionScorer(settings.input_topic, p, state, 0, service_version="ref",
                                 fetch=by_offset.get)
        out.extend(o.value for o in scorer.process(recs).requests)
        states[p] = state
    return out, states


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (-1001 where none), without joining it."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def progress(bootstrap: str, group: str, topic: str, ends: dict[int, int]) -> float:
    """Share of the input the group has committed, in [0, 1]."""
    done = committed(bootstrap, group, topic, len(ends))
    return sum(max(0, done[p]) for p in ends) / max(1, sum(ends.values()))


def assert_same_requests_as_reference(produced: list[bytes], expected: list[bytes]) -> None:
    """Distinct request ids equal the uninterrupted reference's, and every duplicate is
    byte-identical to its twin (at-least-once output that a consumer dedupes by request_id)."""
    by_id: dict[str, set[bytes]] = defaultdict(set)
    for value in produced:
        by_id[orjson.loads(value)["request_id"]].add(value)
    differing = {rid: values for rid, values in by_id.items() if len(values) > 1}
    assert not differing, f"{len(differing)} request ids with differing bytes"
    expected_ids = {orjson.loads(v)["request_id"] for v in expected}
    assert len(expected_ids) == len(expected), "the reference itself repeats a request id"
    missing, extra = expected_ids - set(by_id), set(by_id) - expected_ids
    assert not missing and not extra, (f"{len(missing)} requests of the reference missing, "
                                       f"{len(extra)} not in it, of {len(expected_ids)}")
    assert {v for values in by_id.values() for v in values} == set(expected)
