"""How the label sink's state grows with the labels it has counted (issue 14, item 3), on Apache
Kafka (not a test; prints figures).

    .venv/bin/python bench/sink_state.py [--labels 1000000] [--partitions 4] [--models 10]
        [--max-count-minutes M]

A fresh Apache Kafka (KRaft, one node), one sink worker, and `--labels` distinct labels (each
with its own model_id, so no request is needed; 1 class each, 3 classes) produced up front. The
sink counts them; then it is stopped (SIGTERM) and started again. Printed:

  labels_counted         labels it had counted when the figures were taken (all of them,
                         unless --max-count-minutes ran out first)
  labels_per_s           labels counted per second while it caught up
  peak_rss_mb            the sink's peak resident memory (VmHWM) while counting
  rss_after_restart_mb   its resident memory once the restarted sink is ready and counting
  changelog_mb           bytes of the labels table's changelog segments (.log files, all
                         partitions) when the sink has counted them all
  changelog_files_mb     ... all its files, as measured before issue 14 (this includes two
                         preallocated 10 MiB index files per partition's open segment)
  changelog_end_mb       segment bytes at the end (after the restart; the cleaner had more
                         time)
  cleaner_wait_s         how long the bench waited, once all labels were counted and before
                         the restart, for the log cleaner to finish with the closed segments
                         (until their bytes stay unchanged over two cleaner periods, at most
                         5 min): the restart then reads what the configuration leaves, not
                         what the cleaner had no time for yet
  changelog_records      records in the labels changelog just before the restart (rows +
                         tombstones, read with a consumer): what the table recovery reads
  changelog_tombstones   ... of which tombstones (deleted rows whose delete.retention.ms has
                         not passed, or that no cleaning has dropped yet)
  changelog_offsets      the sum over its partitions of high watermark - log start (compaction
                         leaves holes in between; the only figure printed before)
  cleanup_policy         the changelog topic's configuration as Apache Kafka reports it
  restart_ready_s        SIGTERM of the caught-up sink to the restarted one's /readyz 200
                         (its tables recovered from the changelogs)
  restart_count_s        ... to its first label counted after the restart (one more label is
                         produced once it is ready: the ledger is rebuilt from the rows first)

The last line is `JSON {...}`. `--dedupe-window-labels` sets the sink's window (default: the
sink's own default). docs/label-sink.md, "State", has the figures before and after issue 14.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from services.evaluation.processes import ServiceProcess, metric, wait_until
from services.streaming import topics
from services.streaming.apache_kafka import ApacheKafka
from services.streaming.events import encode_event
from services.streaming.partitioning import KEYED_PARTITIONER
from services.streaming.topics import create_topics, loop_topics


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def label(i: int, models: int) -> tuple[bytes, bytes]:
    asset = f"asset-{i}"
    body = {"schema_version": 1, "label_id": f"l-{i}", "asset_id": asset,
            "model_id": f"m-{i % models}", "annotations": [{"label": ("a", "b", "c")[i % 3]}],
            "annotator_id": "bench", "labeled_at": 1_700_000_000.0 + i}
    return asset.encode(), encode_event(body)


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def dir_bytes(root: Path, prefix: str, suffix: str = "") -> int:
    """Bytes of the files ending with `suffix` in the partition directories of a topic.
    Segment data is `.log`; Kafka also preallocates 10 MiB `.index` and `.timeindex` files
    for each partition's open segment (sparse: they count in their size, not on disk)."""
    return sum(f.stat().st_size for d in root.glob(prefix + "*") if d.is_dir()
               for f in d.iterdir() if f.is_file() and f.name.endswith(suffix))


def topic_config(admin: AdminClient, topic: str) -> str:
    """The changelog settings of `topic` that bound it, as the broker reports them."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(30)
    return ",".join(f"{k}={entries[k].value}" for k in (
        "cleanup.policy", "segment.bytes", "segment.ms", "delete.retention.ms",
        "min.cleanable.dirty.ratio"))


def census(bootstrap: str, topic: str, partitions: int) -> tuple[int, int]:
    """(rows, tombstones) in `topic`, read from the start with a consumer, as a recovery does."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "sink-state-census",
                         "enable.auto.commit": False})
    rows = tombstones = 0
    try:
        for p in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            consumer.assign([TopicPartition(topic, p, low)])
            last = low - 1
            while last < high - 1:
                # 10 s without a record: the rest of the partition is a compaction hole.
                batch = consumer.consume(10_000, 10.0)
                if not batch:
                    break
                for message in batch:
                    if message.error() is None:
                        last = message.offset()
                        if message.value() is None:
                            tombstones += 1
                        else:
                            rows += 1
        return rows, tombstones
    finally:
        consumer.close()


def wait_for_cleaner(segments: Callable[[], int], limit_s: float = 300.0) -> float:
    """Seconds waited until the changelog's segment bytes stayed unchanged over two periods of
    the cleaner (log.cleaner.backoff.ms: 15 s when it finds nothing to clean), or `limit_s`."""
    started, before, still = time.monotonic(), segments(), 0
    while still < 2 and time.monotonic() - started < limit_s:
        time.sleep(20.0)
        now = segments()
        still, before = (still + 1 if now == before else 0), now
    return time.monotonic() - started


def records_in(bootstrap: str, topic: str, partitions: int) -> int:
    """Sum over partitions of (high watermark - log start): what a recovery can read at most
    (compaction leaves holes between those offsets)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "sink-state-bench"})
    try:
        total = 0
        for p in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            total += high - low
        return total
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--max-count-minutes", type=float, default=0.0,
                        help="stop waiting for the sink to count all labels after this long "
                             "(0: no limit); the figures are then those at that point, "
                             "labels_counted says how far it got, and the restart is measured "
                             "with the rest still to count")
    parser.add_argument("--dedupe-window-labels", type=int, default=0,
                        help="the sink's ACTIVE_STREAM_LABEL_SINK_DEDUPE_WINDOW_LABELS (0: its "
                             "default)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sink-state-"))
    with ApacheKafka(heap="1g") as kafka:
        say(f"Apache Kafka {kafka.version} on {kafka.bootstrap}; logs in {workdir}")
        bootstrap, prefix = kafka.bootstrap, f"st{uuid.uuid4().hex[:6]}."
        create_topics(AdminClient({"bootstrap.servers": bootstrap}),
                      loop_topics(args.partitions, prefix=prefix))
        app_id = f"s-{prefix}"
        env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "ACTIVE_STREAM_LABEL_SINK_APP_ID": app_id,
               "ACTIVE_STREAM_LABEL_SINK_TOPIC_PREFIX": prefix,
               "ACTIVE_STREAM_LABEL_SINK_METRICS_HOST": "127.0.0.1",
               "ACTIVE_STREAM_LABEL_SINK_INSTANCE_ID": "bench",
               "ACTIVE_STREAM_LABEL_SINK_DATA_DIR": tempfile.mkdtemp(dir=workdir),
               "ACTIVE_STREAM_LABEL_SINK_TRIGGER_MIN_LABELS": "1000",
               "ACTIVE_STREAM_LOG_FORMAT": "json"}
        if args.dedupe_window_labels:
            env["ACTIVE_STREAM_LABEL_SINK_DEDUPE_WINDOW_LABELS"] = str(args.dedupe_window_labels)
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                             "partitioner": KEYED_PARTITIONER})
        for i in range(args.labels):
            key, value = label(i, args.models)
            while True:
                try:
                    producer.produce(prefix + topics.LABELS, value, key)
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.flush(120)
        say(f"{args.labels} labels produced")

        def sink() -> ServiceProcess:
            return ServiceProcess("label-sink", env, "ACTIVE_STREAM_LABEL_SINK_METRICS_PORT",
                                  log=workdir / f"sink-{time.monotonic_ns()}.log")

        def counted(proc: ServiceProcess) -> float:
            try:
                return metric(proc.metrics(), "label_sink_label_records_total")
            except OSError:
                return 0.0

        proc = sink().start()
        try:
            proc.wait_ready(120)
            started = time.monotonic()
            deadline = started + args.max_count_minutes * 60 if args.max_count_minutes else None
            peak, done, said = 0, 0.0, started
            while (done := counted(proc)) < args.labels:
                proc.check()
                assert proc.proc is not None
                peak = max(peak, rss_kb(proc.proc.pid, "VmHWM"))
                now = time.monotonic()
                if now - said >= 60:  # progress, for a run watched by hand
                    said = now
                    say(f"{done:.0f} counted after {now - started:.0f} s "
                        f"({done / (now - started):.0f}/s), peak RSS {peak / 1024:.0f} MB, "
                        f"load {os.getloadavg()[0]:.1f}")
                if deadline is not None and now >= deadline:
                    say(f"stopped waiting after {args.max_count_minutes} min")
                    break
                time.sleep(1.0)
            took = time.monotonic() - started
            assert proc.proc is not None
            peak = max(peak, rss_kb(proc.proc.pid, "VmHWM"))
            say(f"counted in {took:.0f} s; peak RSS {peak / 1024:.0f} MB")
            changelog_topic = f"{app_id}-labels-changelog"
            waited = wait_for_cleaner(lambda: dir_bytes(kafka.data_dir / "logs",
                                                        changelog_topic + "-", ".log"))
            say(f"waited {waited:.0f} s for the log cleaner to finish with the closed segments "
                "before the restart")
            counted_bytes = dir_bytes(kafka.data_dir / "logs", changelog_topic + "-", ".log")
            counted_files = dir_bytes(kafka.data_dir / "logs", changelog_topic + "-")
            policy = topic_config(AdminClient({"bootstrap.servers": bootstrap}),
                                  changelog_topic)
            recovered = records_in(bootstrap, changelog_topic, args.partitions)
            rows, tombstones = census(bootstrap, changelog_topic, args.partitions)
            say(f"labels changelog: {rows} rows, {tombstones} tombstones, {recovered} offsets")
            stopped = time.monotonic()
            proc.stop(120)
            proc = sink().start()
            proc.wait_ready(600)
            ready = time.monotonic() - stopped
            one = Producer({"bootstrap.servers": bootstrap})
            one.produce(prefix + topics.LABELS, label(args.labels, args.models)[1], b"one-more")
            one.flush(30)
            wait_until(lambda: counted(proc) > 0, 600, "the restarted sink counting", proc.check,
                       poll_s=0.05)
            count = time.monotonic() - stopped
            assert proc.proc is not None
            after = rss_kb(proc.proc.pid, "VmRSS")
        finally:
            proc.stop(120)
        changelog = dir_bytes(kafka.data_dir / "logs", f"{app_id}-labels-changelog-", ".log")
    figures = {"labels": args.labels, "labels_counted": int(done),
               "labels_per_s": round(done / took, 1),
               "peak_rss_mb": round(peak / 1024, 1), "rss_after_restart_mb": round(after / 1024, 1),
               "changelog_mb": round(counted_bytes / 2**20, 1),
               "changelog_files_mb": round(counted_files / 2**20, 1),
               "changelog_end_mb": round(changelog / 2**20, 1),
               "cleaner_wait_s": round(waited, 1), "changelog_records": rows + tombstones,
               "changelog_tombstones": tombstones, "changelog_offsets": recovered,
               "cleanup_policy": policy,
               "restart_ready_s": round(ready, 2), "restart_count_s": round(count, 2),
               "partitions": args.partitions, "models": args.models, "cores": os.cpu_count(),
               "load_average_1m_end": round(os.getloadavg()[0], 2)}
    for name, value in figures.items():
        print(f"{name:22s} {value}")
    print("JSON " + json.dumps(figures))


if __name__ == "__main__":
    main()
