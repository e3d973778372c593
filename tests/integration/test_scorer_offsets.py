"""Offsets that go backwards (issue #13, item 4) on Apache Kafka: the input topic is deleted and
created again under the same name, so its offsets restart at 0 below what the group committed.

Before, the scorer skipped every record below its next offset: the new topic's records gave no
request, no dead letter, and a stale commit. Now it says so (log, `scorer_offset_regressions_total`)
and follows ACTIVE_STREAM_SCORER_ON_OFFSET_REGRESSION: `reset` (the default) rebuilds the
partition's state from the new log's first record, as for a new partition, so its requests are
exactly a fresh scorer's; `stop` stops the scorer with exit code 4.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from services.streaming.apache_kafka import ApacheKafka
from tests.integration.end_offsets import true_end_offsets
from tests.integration.kafka_support import metric, produce, read_all, wait_for
from tests.integration.scorer_support import (
    ScorerProcess,
    assert_same_requests_as_reference,
    committed,
    private_loop,
    progress,
    reference_requests,
    scorer_env,
)
from tests.synthetic_events import inference_events

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

INPUT = "al.inference-events.v1"
REQUESTS = "al.annotation-requests.v1"


def regressions_of(proc: ScorerProcess) -> float:
    return metric(proc.metrics(), "scorer_offset_regressions_total", partition="0")


def recreate(bootstrap: str, topic: str) -> None:
    """Delete `topic` and create it again, empty, with one partition (deletion is asynchronous:
    creation is retried until the old topic is gone)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([topic])[topic].result(30)

    def created() -> bool:
        try:
            admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(15)
            return True
        except Exception:  # "marked for deletion" until the broker is done with it
            time.sleep(0.5)
            return False

    wait_for(created, 60, f"{topic} could not be created again")


def run_to_end(bootstrap: str, env: dict[str, str], group: str, topic: str,
               ends: dict[int, int]) -> tuple[int, float, str]:
    """Run the scorer until the group committed `ends`; (exit code, regressions, log)."""
    proc = ScorerProcess(env).start()
    try:
        wait_for(lambda: committed(bootstrap, group, topic, 1)[0] == ends[0], 120,
                 f"the group did not commit offset {ends[0]}; log:\n{proc.tail()}")
        regressions = regressions_of(proc)
    finally:
        code = proc.stop()
    return code, regressions, proc.tail(400)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_recreated_input_topic_resets_the_partition_and_selects_from_its_new_records(
        kafka: ApacheKafka, guarantee: str) -> None:
    bootstrap = kafka.bootstrap
    prefix = private_loop(bootstrap, partitions=1)
    topic, group = prefix + INPUT, f"g-{prefix}"
    env = scorer_env(bootstrap, prefix, group, processing_guarantee=guarantee,
                     instance_id=f"i-{prefix}", batch_size=200, checkpoint_every_events=500)
    produce(bootstrap, topic, inference_events(2000, seed=41, dt=0.1))
    code, regressions, _ = run_to_end(bootstrap, env, group, topic, {0: 2000})
    assert code == 0 and regressions == 0

    recreate(bootstrap, topic)
    produce(bootstrap, topic, inference_events(1500, seed=42, t0=1_700_001_000.0, dt=0.1))
    ends = true_end_offsets({"bootstrap.servers": bootstrap}, topic, [0])
    assert ends[0] == 1500 < 2000  # below what the group committed: the offsets went back
    code, regressions, log = run_to_end(bootstrap, env, group, topic, ends)
    assert code == 0, log
    assert regressions >= 1
    assert "recreated or truncated" in log and "Traceback" not in log

    # The new records were selected from, as a fresh scorer on the new topic would.
    produced = [m.value() for m in read_all(bootstrap, prefix + REQUESTS)
                if b"asset-42-" in m.value()]
    expected = reference_requests(bootstrap, prefix, partitions=1)
    assert len(expected) > 20
    if guarantee == "exactly_once":
        assert Counter(produced) == Counter(expected)
    else:
        assert_same_requests_as_reference(produced, expected)

    # The reset was checkpointed: a third run finds the new log's state, not a regression.
    produce(bootstrap, topic, inference_events(300, seed=43, t0=1_700_002_000.0, dt=0.1))
    code, regressions, log = run_to_end(bootstrap, env, group, topic, {0: 1800})
    assert code == 0 and regressions == 0, log


def test_a_topic_recreated_under_a_running_scorer_is_noticed_without_a_restart(
        kafka: ApacheKafka) -> None:
    bootstrap = kafka.bootstrap
    prefix = private_loop(bootstrap, partitions=1)
    topic, group = prefix + INPUT, f"g-{prefix}"
    env = scorer_env(bootstrap, prefix, group, instance_id=f"i-{prefix}", batch_size=200,
                     checkpoint_every_events=500)
    produce(bootstrap, topic, inference_events(2000, seed=44, dt=0.1))
    proc = ScorerProcess(env).start()
    try:
        wait_for(lambda: progress(bootstrap, group, topic, {0: 2000}) >= 1.0, 120,
                 f"input not committed; log:\n{proc.tail()}")
        recreate(bootstrap, topic)
        produce(bootstrap, topic, inference_events(1000, seed=45, t0=1_700_001_000.0,
                                                   dt=0.1))
        wait_for(lambda: committed(bootstrap, group, topic, 1)[0] == 1000, 120,
                 f"the new topic's records were not committed; log:\n{proc.tail()}")
        assert regressions_of(proc) >= 1
        assert proc.alive()
    finally:
        code = proc.stop()
    assert code == 0, proc.tail()
    produced = [m.value() for m in read_all(bootstrap, prefix + REQUESTS)
                if b"asset-45-" in m.value()]
    expected = reference_requests(bootstrap, prefix, partitions=1)
    assert len(expected) > 10
    assert_same_requests_as_reference(produced, expected)


def test_the_stop_policy_stops_the_scorer_with_exit_code_4(kafka: ApacheKafka) -> None:
    bootstrap = kafka.bootstrap
    prefix = private_loop(bootstrap, partitions=1)
    topic, group = prefix + INPUT, f"g-{prefix}"
    env = scorer_env(bootstrap, prefix, group, instance_id=f"i-{prefix}", batch_size=200,
                     on_offset_regression="stop")
    produce(bootstrap, topic, inference_events(1000, seed=46, dt=0.1))
    code, _, log = run_to_end(bootstrap, env, group, topic, {0: 1000})
    assert code == 0, log
    recreate(bootstrap, topic)
    produce(bootstrap, topic, inference_events(200, seed=47, t0=1_700_001_000.0, dt=0.1))
    proc = ScorerProcess(env).start()
    assert proc.proc is not None
    code = proc.proc.wait(120)
    assert code == 4, proc.tail()
    assert "ON_OFFSET_REGRESSION=stop" in proc.tail()
    assert committed(bootstrap, group, topic, 1)[0] == 1000  # nothing moved back or on
