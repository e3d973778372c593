"""The chaos soak's actors, each on a thread of its own (bench/chaos.py): the annotator that
answers requests, the trainer that reads each trigger's manifest, and a tail of the class
feedback (how much the sink has counted); the model service that streams inference events is in
chaos_model.py. None of them is a fault target: they stand for other teams' systems, which keep
running."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from bench.chaos_input import Answer, answer, backlog_label
from services.streaming.annotation_requests import decode_annotation_request
from services.streaming.control_events import decode_class_feedback, decode_retrain_trigger
from services.streaming.events import InvalidEvent, decode_label
from services.streaming.partitioning import KEYED_PARTITIONER

# The broker restart makes every client log each failed reconnect (several lines a second per
# client, for ~20 s); the services' own logs keep theirs. Critical lines only here.
QUIET = {"log_level": 2}
POLL_S = 0.1  # how long an actor's poll may block: it also bounds how soon it sees `halt`


def consumer(bootstrap: str, **extra: Any) -> Consumer:
    """A group-less reader (assign only) that never commits."""
    return Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-reader",
                     "enable.auto.commit": False, "fetch.wait.max.ms": 50, **QUIET, **extra})


def producer(bootstrap: str) -> Producer:
    # Idempotent: a broker restart makes the client retry, and a retried send must not be
    # written twice, or "events produced" would not be the count of records the model sent.
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                     "linger.ms": 5, "partitioner": KEYED_PARTITIONER,
                     "allow.auto.create.topics": False, **QUIET})


def ends(reader: Consumer, topic: str, partitions: int) -> dict[int, int]:
    """High watermark of each partition (asked of the broker)."""
    return {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                            cached=False)[1] for p in range(partitions)}


def read_topic(bootstrap: str, topic: str, partitions: int) -> list[Message]:
    """Every record of `topic`, partition by partition in offset order (non-transactional
    topics: the high watermark is one past the last record)."""
    reader = consumer(bootstrap)
    try:
        want = ends(reader, topic, partitions)
        out: list[Message] = []
        for p, end in want.items():
            if end == 0:
                continue
            reader.assign([TopicPartition(topic, p, 0)])
            got: list[Message] = []
            deadline = time.monotonic() + 120  # a 30-min run's input is ~100 MB
            while (not got or (got[-1].offset() or 0) < end - 1) and time.monotonic() < deadline:
                for msg in reader.consume(1000, 0.5):
                    if msg.error() is None:
                        got.append(msg)
            out += got
        return out
    finally:
        reader.close()


class Actor(threading.Thread):
    """A daemon thread that runs `step` until `halt` is set; an exception stops it and is kept
    in `error` (the soak reports it)."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                self.step()
        except BaseException as exc:  # reported by the soak, never swallowed
            self.error = exc
        finally:
            self.close()

    def step(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Annotator(Actor):
    """Reads every request (all partitions, from the start) and answers each request id once
    (`chaos_input.answer`), after its delay times `delay_scale`; a few answers are submitted a
    second time, byte-identical. `sabotage_double_count`: the first answer is also sent under a
    second label id (a label counted twice: the soak's checks must catch it)."""

    def __init__(self, bootstrap: str, requests: str, labels: str, partitions: int, seed: int,
                 delay_scale: float, *, sabotage_double_count: bool = False) -> None:
        super().__init__("annotator")
        self.labels_topic, self.seed, self.scale = labels, seed, delay_scale
        self.reader = consumer(bootstrap)
        self.reader.assign([TopicPartition(requests, p, 0) for p in range(partitions)])
        self.producer = producer(bootstrap)
        self.read_upto: dict[int, int] = defaultdict(int)  # partition -> next offset to read
        self.answered: dict[str, Answer] = {}  # label id -> answer (what counts, once each)
        self.models: Counter[str] = Counter()  # model -> distinct requests answered
        self.requests = 0
        self.sent = 0
        self.failed = 0
        self.last_error: str | None = None
        self._due: list[tuple[float, int, Answer]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self.sabotage = sabotage_double_count

    def _report(self, err: Any, _msg: Any) -> None:
        if err is None:
            self.sent += 1
        else:
            self.failed += 1
            self.last_error = str(err)

    def step(self) -> None:
        now = time.monotonic()
        for msg in self.reader.consume(500, POLL_S):
            if msg.error() is not None:
                continue
            self.read_upto[msg.partition() or 0] = (msg.offset() or 0) + 1
            self.requests += 1
            request = decode_annotation_request(msg.value() or b"")
            a = answer(request, self.seed)
            with self._lock:
                if a.label_id in self.answered:
                    continue  # a duplicate request (a replay): answered already
                self.answered[a.label_id] = a
                self.models[a.model_id] += 1
                self._schedule(now + a.delay_s * self.scale, a)
                if a.again_s is not None:
                    self._schedule(now + (a.delay_s + a.again_s) * self.scale, a)
                if self.sabotage:
                    self.sabotage = False
                    body = orjson.loads(a.value)
                    body["label_id"] += "-twice"
                    self._schedule(now, Answer(a.key, orjson.dumps(body), body["label_id"],
                                               a.model_id, a.label_class, 0.0, None))
        self._send_due(time.monotonic())

    def _schedule(self, at: float, a: Answer) -> None:
        heapq.heappush(self._due, (at, next(self._seq), a))

    def _send_due(self, now: float) -> None:
        with self._lock:
            while self._due and self._due[0][0] <= now:
                a = heapq.heappop(self._due)[2]
                self.producer.produce(self.labels_topic, a.value, a.key, on_delivery=self._report)
        self.producer.poll(0)

    def pending(self) -> int:
        with self._lock:
            return len(self._due) + len(self.producer)

    def top_up(self, every: int, at: float) -> dict[str, int]:
        """Backlog labels so that each model's count is a whole number of triggers; returns
        how many per model."""
        added = {}
        with self._lock:
            for model, n in sorted(self.models.items()):
                added[model] = (-n) % every
                for k in range(added[model]):
                    a = backlog_label(model, k, at)
                    self.answered[a.label_id] = a
                    self._schedule(0.0, a)
        return added

    def expected(self) -> dict[str, Counter[str]]:
        """Per model, the labels per class that must be counted (each label id once)."""
        out: dict[str, Counter[str]] = defaultdict(Counter)
        with self._lock:
            for a in self.answered.values():
                out[a.model_id][a.label_class] += 1
        return dict(out)

    def close(self) -> None:
        self.producer.flush(60)
        self.reader.close()


class Trainer(Actor):
    """Reads each retrain trigger (deduplicated by trigger id) and exactly the labels its
    manifest names; keeps, per trigger id, every distinct record seen for it and the label ids
    and classes its manifest holds."""

    def __init__(self, bootstrap: str, triggers: str, labels: str) -> None:
        super().__init__("trainer")
        self.labels_topic = labels
        self.reader = consumer(bootstrap)
        self.reader.assign([TopicPartition(triggers, 0, 0)])
        self.fetcher = consumer(bootstrap)
        self.records: dict[str, set[bytes]] = defaultdict(set)  # trigger id -> its records
        self.trained: dict[str, list[tuple[str, str, str | None]]] = {}  # id -> (label, class,
        self.problems: list[str] = []  # model) per manifest record, and what was wrong
        self.lock = threading.Lock()

    def step(self) -> None:
        for msg in self.reader.consume(100, POLL_S):
            if msg.error() is not None:
                continue
            value = msg.value() or b""
            trigger = decode_retrain_trigger(value)
            with self.lock:
                self.records[trigger.trigger_id].add(value)
                if trigger.trigger_id in self.trained:
                    continue
            labels = self._read(trigger)
            problems = []
            if len(labels) != trigger.total:
                problems.append(f"{len(labels)} records in its manifest, total {trigger.total}")
            if Counter(c for _, c, _ in labels) != Counter(trigger.counts):
                problems.append("its manifest's classes differ from its counts")
            with self.lock:
                self.trained[trigger.trigger_id] = labels
                self.problems += [f"trigger {trigger.trigger_id[:12]}: {p}" for p in problems]

    def _read(self, trigger: Any) -> list[tuple[str, str, str | None]]:
        """The labels at the manifest's offsets: each partition's span read once (one
        assignment for all of them: a fetch per run would cost a round trip per label where
        two models' labels interleave)."""
        wanted: dict[int, set[int]] = defaultdict(set)
        for r in trigger.manifest.ranges:
            wanted[r.partition].update(range(r.start_offset, r.end_offset))
        if not wanted:
            return []
        last = {p: max(offsets) for p, offsets in wanted.items()}
        self.fetcher.assign([TopicPartition(self.labels_topic, p, min(offsets))
                             for p, offsets in wanted.items()])
        got: dict[tuple[int, int], Message] = {}
        reached: set[int] = set()
        deadline = time.monotonic() + 120  # the broker may be restarting
        while len(reached) < len(wanted) and time.monotonic() < deadline:
            for m in self.fetcher.consume(500, 0.2):
                p, off = m.partition() or 0, m.offset() or 0
                if m.error() is not None or p not in wanted:
                    continue
                if off in wanted[p]:
                    got[(p, off)] = m
                if off >= last[p]:
                    reached.add(p)
        out = []
        for (p, off), m in sorted(got.items()):
            try:
                label = decode_label(m.value() or b"")
                out.append((label.label_id, label.annotations[0].label, label.model_id))
            except InvalidEvent as exc:
                out.append((f"invalid@{p}:{off}", exc.code.value, None))
        return out

    def covered(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.trained.values())

    def close(self) -> None:
        self.reader.close()
        self.fetcher.close()


class FeedbackTail(Actor):
    """The latest class feedback per model: what the sink has counted so far."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__("feedback-tail")
        self.reader = consumer(bootstrap)
        self.reader.assign([TopicPartition(topic, 0, 0)])
        self.latest: dict[str, dict[str, int]] = {}

    def step(self) -> None:
        for msg in self.reader.consume(100, POLL_S):
            err = msg.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                continue
            if err is None:
                fb = decode_class_feedback(msg.value() or b"")
                self.latest[fb.model_id] = {c: s.labels_total for c, s in fb.classes.items()}

    def counted(self) -> int:
        return sum(sum(c.values()) for c in list(self.latest.values()))

    def close(self) -> None:
        self.reader.close()


def wait(predicate: Callable[[], bool], timeout_s: float, tick: Callable[[], None]) -> bool:
    """Poll `predicate` (running `tick` between polls) until true or `timeout_s`; its result."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        tick()
        time.sleep(0.2)
    return True
