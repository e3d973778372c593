"""Takeover on Apache Kafka: a restarted instance resumes its partitions at once, a rolling
restart and a scale-out and back lose and duplicate nothing, the partitions an instance keeps
are never revoked, and a takeover fences the instance it replaces.

These tests run with a session timeout far above their own waits where it matters: a takeover
that waited out the dead member's session would fail them, whatever the machine's speed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

import pytest

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
from tests.integration.test_scorer_guarantees import freeze_while_computing
from tests.synthetic_events import inference_events

pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]

INPUT = "al.inference-events.v1"
REQUESTS = "al.annotation-requests.v1"
# Far above every wait below: a takeover that waits out the session cannot pass.
LONG_SESSION = {"ACTIVE_STREAM_KAFKA_SESSION_TIMEOUT_MS": "120000"}


def test_a_killed_instance_restarted_resumes_without_waiting_out_its_session(
        kafka: ApacheKafka) -> None:
    bootstrap = kafka.bootstrap
    prefix = private_loop(bootstrap, partitions=4)
    topic, group = prefix + INPUT, f"g-{prefix}"
    events = inference_events(30_000, seed=51, dt=0.05)
    produce(bootstrap, topic, events[:15_000])
    env = {**scorer_env(bootstrap, prefix, group, batch_size=200), **LONG_SESSION,
           "ACTIVE_STREAM_SCORER_INSTANCE_ID": f"a-{prefix}"}
    proc = ScorerProcess(env).start()
    proc.wait_ready()
    first = true_end_offsets({"bootstrap.servers": bootstrap}, topic, range(4))
    wait_for(lambda: progress(bootstrap, group, topic, first) >= 0.3, 120, "no progress")
    proc.kill()
    produce(bootstrap, topic, events[15_000:])
    ends = true_end_offsets({"bootstrap.servers": bootstrap}, topic, range(4))
    restarted = ScorerProcess(env).start()
    # 45 s: well above a takeover in seconds, far below the 120-s session a non-static member's
    # partitions would wait for.
    wait_for(lambda: progress(bootstrap, group, topic, ends) >= 1.0, 45,
             f"the restarted instance did not take its partitions back; log:\n{restarted.tail()}")
    stamps = [metric(restarted.metrics(), "scorer_partition_progress_timestamp_seconds",
                     partition=str(p)) for p in range(4)]
    assert restarted.stop() == 0, restarted.tail()
    assert all(time.time() - 120 < stamp <= time.time() for stamp in stamps), stamps
    produced = [m.value() for m in read_all(bootstrap, prefix + REQUESTS)]
    assert_same_requests_as_reference(produced, reference_requests(bootstrap, prefix, 4))


def test_a_takeover_fences_the_instance_it_replaces(kafka: ApacheKafka) -> None:
    """exactly_once. The instance is frozen in the middle of a batch and a new process starts
    with its id (a pod restarted by Kubernetes while the old one hangs): the new one takes the
    partitions and the transactional id over at once. Resumed, the old one must stop without
    one visible write; a read_committed reader sees the uninterrupted run's output."""
    bootstrap = kafka.bootstrap
    prefix = private_loop(bootstrap, partitions=2)
    topic, group = prefix + INPUT, f"g-{prefix}"
    events = inference_events(30_000, seed=52, dt=0.05)
    produce(bootstrap, topic, events[:20_000])
    env = {**scorer_env(bootstrap, prefix, group, processing_guarantee="exactly_once",
                        batch_size=200), **LONG_SESSION,
           "ACTIVE_STREAM_SCORER_INSTANCE_ID": f"a-{prefix}"}
    old = ScorerProcess(env).start()
    old.wait_ready()
    wait_for(lambda: metric(old.metrics(), "scorer_events_consumed_total") > 2000, 60,
             "no progress")
    freeze_while_computing(old)
    new = ScorerProcess(env).start()
    try:
        produce(bootstrap, topic, events[20_000:])
        ends = true_end_offsets({"bootstrap.servers": bootstrap}, topic, [0, 1])
        wait_for(lambda: progress(bootstrap, group, topic, ends) >= 1.0, 45,
                 f"the new instance did not take over; log:\n{new.tail()}")
        assert old.proc is not None
        os.kill(old.proc.pid, signal.SIGCONT)
        wait_for(lambda: not old.alive(), 30, f"the replaced instance kept running:\n"
                                              f"{old.tail()}")
        old_code, old_log = old.stop(), old.tail(50)
        assert new.alive(), new.tail()
    finally:
        old.stop()
        new_code = new.stop()
    assert old_code == 2, old_log
    assert "another process joined with this instance's id" in old_log, old_log
    assert "Traceback" not in old_log, old_log
    assert new_code == 0, new.tail()
    produced = [m.value() for m in read_all(bootstrap, prefix + REQUESTS)]
    assert Counter(produced) == Counter(reference_requests(bootstrap, prefix, 2))


def restores(proc: ScorerProcess) -> float:
    return metric(proc.metrics(), "scorer_restore_records_read_total")


def assigned(proc: ScorerProcess) -> float:
    """Its assigned partitions, or -1 before its ops server answers."""
    try:
        return metric(proc.metrics(), "scorer_assigned_partitions")
    except OSError:
        return -1.0


@pytest.mark.parametrize("assignor", ["default", "cooperative-sticky"])
def test_scale_out_and_back_in(kafka: ApacheKafka, assignor: str) -> None:
    """One instance owns 4 partitions; a second joins and takes two, each restored from one
    pointed-at checkpoint record; then the second stops for good and the first takes them back.
    The output is one uninterrupted run's. With the default (eager) assignor the first instance
    hands back all four and restores the two it keeps, also from one record each; with
    cooperative-sticky it never lets those two go (no restore, never 0 partitions)."""
    bootstrap = kafka.bootstrap
    prefix = private_loop(bootstrap, partitions=4)
    topic, group = prefix + INPUT, f"g-{prefix}"
    events = inference_events(40_000, seed=53, dt=0.05)
    produce(bootstrap, topic, events[:10_000])
    env = scorer_env(bootstrap, prefix, group, batch_size=200, checkpoint_every_events=1000)
    if assignor != "default":
        env["ACTIVE_STREAM_KAFKA_PARTITION_ASSIGNMENT_STRATEGY"] = assignor
    first = ScorerProcess({**env, "ACTIVE_STREAM_SCORER_INSTANCE_ID": f"a-{prefix}"}).start()
    second = ScorerProcess({**env, "ACTIVE_STREAM_SCORER_INSTANCE_ID": f"b-{prefix}"})
    owned: list[float] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            try:
                owned.append(metric(first.metrics(), "scorer_assigned_partitions"))
            except OSError:
                pass
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        first.wait_ready()
        wait_for(lambda: metric(first.metrics(), "scorer_assigned_partitions") == 4, 60,
                 "the first instance did not get every partition")
        part = true_end_offsets({"bootstrap.servers": bootstrap}, topic, range(4))
        wait_for(lambda: progress(bootstrap, group, topic, part) >= 1.0, 120, "no progress")
        restored_before = restores(first)
        sampler.start()
        second.start()
        produce(bootstrap, topic, events[10_000:25_000])
        wait_for(lambda: assigned(second) == 2, 60,
                 f"the second instance did not take half; log:\n{second.tail()}")
        wait_for(lambda: metric(first.metrics(), "scorer_assigned_partitions") == 2, 60,
                 "the first instance kept all four")
        part = true_end_offsets({"bootstrap.servers": bootstrap}, topic, range(4))
        wait_for(lambda: progress(bootstrap, group, topic, part) >= 1.0, 120,
                 "not all partitions moved with two instances")
        sampling.set()
        sampler.join()
        assert restores(second) == 2  # one pointed-at checkpoint per partition it took
        if assignor == "default":  # eager: revoked and restored, one record each
            assert restores(first) == restored_before + 2
        else:
            assert restores(first) == restored_before, "the first instance restored (so " \
                "let go of) a partition it kept"
            assert 0 not in owned and owned[-1] == 2, owned[:5] + owned[-5:]
        assert second.stop() == 0, second.tail()
        produce(bootstrap, topic, events[25_000:])
        ends = true_end_offsets({"bootstrap.servers": bootstrap}, topic, range(4))
        # A static member that stopped for good releases its partitions when its session (6 s
        # in tests) expires.
        wait_for(lambda: metric(first.metrics(), "scorer_assigned_partitions") == 4, 60,
                 "the first instance did not take the partitions back")
        wait_for(lambda: progress(bootstrap, group, topic, ends) >= 1.0, 120,
                 f"input not fully committed; log:\n{first.tail()}")
    finally:
        sampling.set()
        first_code, second_code = first.stop(), second.stop()
    assert (first_code, second_code) == (0, 0), (first.tail(), second.tail())
    produced = [m.value() for m in read_all(bootstrap, prefix + REQUESTS)]
    assert_same_requests_as_reference(produced, reference_requests(bootstrap, prefix, 4))


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_a_rolling_restart_of_two_instances_loses_and_duplicates_nothing(
        kafka: ApacheKafka, guarantee: str) -> None:
    """Each of two instances in turn is stopped with SIGTERM (finish the batch, checkpoint,
    commit) and started again with its id, while events keep arriving."""
    bootstrap = kafka.bootstrap
    prefix = private_loop(bootstrap, partitions=4)
    topic, group = prefix + INPUT, f"g-{prefix}"
    events = inference_events(40_000, seed=54, dt=0.05)
    produce(bootstrap, topic, events[:10_000])
    env = {**scorer_env(bootstrap, prefix, group, processing_guarantee=guarantee,
                        batch_size=200), **LONG_SESSION}
    ids = (f"a-{prefix}", f"b-{prefix}")
    procs = {i: ScorerProcess({**env, "ACTIVE_STREAM_SCORER_INSTANCE_ID": i}).start()
             for i in ids}
    try:
        for proc in procs.values():
            proc.wait_ready()
        for n, instance in enumerate(ids):
            assert procs[instance].stop() == 0, procs[instance].tail()
            produce(bootstrap, topic, events[10_000 * (n + 1):10_000 * (n + 2)])
            procs[instance] = ScorerProcess({**env, "ACTIVE_STREAM_SCORER_INSTANCE_ID":
                                             instance}).start()
            procs[instance].wait_ready()
        produce(bootstrap, topic, events[30_000:])
        ends = true_end_offsets({"bootstrap.servers": bootstrap}, topic, range(4))
        wait_for(lambda: progress(bootstrap, group, topic, ends) >= 1.0, 60,
                 "input not fully committed after the rolling restart (a partition waiting "
                 f"out a 120-s session?): committed {committed(bootstrap, group, topic, 4)}, "
                 f"ends {ends}; logs:\n" + "\n".join(p.tail(25) for p in procs.values()))
    finally:
        codes = [proc.stop() for proc in procs.values()]
    assert codes == [0, 0], [proc.tail() for proc in procs.values()]
    produced = [m.value() for m in read_all(bootstrap, prefix + REQUESTS)]
    expected = reference_requests(bootstrap, prefix, 4)
    if guarantee == "exactly_once":
        assert Counter(produced) == Counter(expected)
    else:
        assert_same_requests_as_reference(produced, expected)
