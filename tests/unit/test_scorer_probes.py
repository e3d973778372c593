"""Probe events in the scorer (docs/mastery.md, "Prediction-stability branch"): kept out of
selection, statistics, budgets and drift; folded into the checkpointed probe books; a completed
comparison becomes one class-feedback record (kind stability). And the scorer's own feedback
reader passes such records over."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson

from services.core import SelectorPolicy, SelectorState
from services.core.stability import ProbeBooks, StabilityPolicy, predicted_class
from services.scorer.checkpoint_format import read_checkpoint
from services.scorer.feedback import FeedbackReader
from services.scorer.partition import PartitionScorer, Record, partition_seed
from services.streaming.events import FeedbackKind, decode_class_feedback, encode_event
from tests.synthetic_events import inference_events
from tests.unit.feedback_messages import FeedbackMessage

TOPIC = "al.inference-events.v1"
POLICY = SelectorPolicy()
STABILITY = StabilityPolicy(min_probes=5, max_probes=50)


def _scorer(probes: ProbeBooks | None = None) -> PartitionScorer:
    return PartitionScorer(TOPIC, 0, SelectorState.create(POLICY, partition_seed(0, 0)), 0,
                           service_version="test", fetch=lambda _: None,
                           probes=probes if probes is not None else ProbeBooks(STABILITY))


def _probe(i: int, version: str, top: str, t: float) -> bytes:
    other = "b" if top == "a" else "a"
    return encode_event({"schema_version": 1, "event_id": f"p{version}-{i}",
                         "asset_id": f"probe-{i}", "model_id": "digits",
                         "model_version": version, "timestamp": t, "probe": True,
                         "predictions": [{"scores": {top: 0.9, other: 0.1}}]})


def _stream(n_probes: int = 20, flips: int = 3) -> list[Record]:
    """Ordinary events, v1's probes, more events, v2's probes (`flips` of them changed class),
    more events: probes of one version arrive together, as the model service sends them."""
    ordinary = [value for _, value in inference_events(600, 5)]
    t0 = orjson.loads(ordinary[0])["timestamp"]
    values: list[bytes] = ordinary[:200]
    values += [_probe(i, "v1", "a", t0 + 1) for i in range(n_probes)]
    values += ordinary[200:400]
    values += [_probe(i, "v2", "b" if i < flips else "a", t0 + 2) for i in range(n_probes)]
    values += ordinary[400:]
    return [Record(i, None, v, t0 + i) for i, v in enumerate(values)]


def _without_probes(records: list[Record]) -> list[Record]:
    return [r for r in records if b'"probe":true' not in (r.value or b"")]


def test_probes_change_no_selection_and_complete_one_comparison() -> None:
    records = _stream()
    result = _scorer().process(records)
    plain = _scorer().process(_without_probes(records))
    # The same requests (offsets aside: the probes shift them) and no probe selected.
    assert [orjson.loads(r.value)["asset_id"] for r in result.requests] == \
        [orjson.loads(r.value)["asset_id"] for r in plain.requests]
    assert result.requests and not any(b"probe-" in r.key for r in result.requests if r.key)
    assert [(s.strategy, s.class_name) for s in result.selected] == \
        [(s.strategy, s.class_name) for s in plain.selected]
    assert result.probes == 40 and result.valid == plain.valid + 40
    assert [(m, r.to_dict()) for m, r in result.stability] == [("digits", {
        "model_version": "v2", "previous_version": "v1", "probes": 20, "changed": 3})]
    (out,) = result.stability_records
    assert out.key == b"stability\x1fdigits\x1f0"
    feedback = decode_class_feedback(out.value)
    assert feedback.kind is FeedbackKind.STABILITY and feedback.classes == {}
    assert feedback.stability is not None and feedback.stability.changed == 3


def test_probes_never_enter_the_class_statistics() -> None:
    """Probes carry classes `a` and `b`, which no ordinary event has: the selector's books
    must never have seen them."""
    scorer = _scorer()
    scorer.process(_stream())
    assert "\"a\"" not in orjson.dumps(scorer.state.snapshot()).decode()


def test_a_replay_from_a_checkpoint_yields_the_same_record_bytes() -> None:
    """Cut the stream between the two versions' probes, checkpoint, restore, process the rest:
    the same stability record, byte for byte, as an uninterrupted run."""
    records = _stream()
    whole = _scorer().process(records).stability_records
    first = _scorer()
    first.process(records[:300])
    checkpoint = read_checkpoint(first.checkpoint(), POLICY)
    assert checkpoint is not None and checkpoint.probes  # the books ride in the checkpoint
    restored = PartitionScorer(TOPIC, 0, checkpoint.state, checkpoint.offset,
                               service_version="test", fetch=lambda _: None,
                               probes=ProbeBooks.from_snapshot(STABILITY, checkpoint.probes))
    assert restored.process(records[300:]).stability_records == whole
    # and a replay that must produce nothing (below the committed offset) reports nothing
    replayed = PartitionScorer(TOPIC, 0, checkpoint.state, checkpoint.offset,
                               service_version="test", fetch=lambda _: None,
                               suppress_below=len(records),
                               probes=ProbeBooks.from_snapshot(STABILITY, checkpoint.probes))
    assert replayed.process(records[300:]).stability_records == []


def test_checkpoints_without_probes_keep_their_bytes() -> None:
    records = _without_probes(_stream())
    scorer = _scorer()
    scorer.process(records)
    assert b'"probes"' not in scorer.checkpoint()


def test_the_books_are_bounded() -> None:
    books = ProbeBooks(StabilityPolicy(min_probes=1, max_probes=3), max_models=2)
    for model in ("m1", "m2", "m3"):
        for i in range(10):
            books.observe(model, f"a{i}", "v1", "x")
    assert sorted(books.books) == ["m1", "m2"]
    assert all(len(b.last) == 3 for b in books.books.values())
    again = ProbeBooks.from_snapshot(books.policy, orjson.loads(orjson.dumps(books.snapshot())),
                                     max_models=2)
    assert again.snapshot() == books.snapshot()


def test_predicted_class_is_the_top_one_ties_to_the_smaller_name() -> None:
    assert predicted_class({"b": 0.5, "a": 0.5}, None) == "a"
    assert predicted_class({"b": 0.6, "a": 0.4}, None) == "b"
    assert predicted_class(None, "cat") == "cat"


def test_the_scorer_feedback_reader_passes_stability_records_over() -> None:
    """A stability record read as weights would wipe the model's class weights ({} classes)."""
    sink = encode_event({"schema_version": 1, "model_id": "digits", "updated_at": 1.0,
                         "classes": {"3": {"labels_total": 4, "labels_since_trigger": 4,
                                           "agreement": 0.5, "weight": 2.0}}})
    scorer = _scorer()
    result = scorer.process(_stream())
    reader: Any = FeedbackReader.__new__(FeedbackReader)
    reader.__dict__.update(latest={}, tier_inputs={}, dead_letters=[], invalid_codes=[],
                           topic="fb", service_version="t")
    reader._consumer = SimpleNamespace(consume=lambda *a, **k: [
        FeedbackMessage(sink), FeedbackMessage(result.stability_records[0].value)])
    assert reader.poll() == {"digits": {"3": 2.0}}
    assert reader.latest == {"digits": {"3": 2.0}} and not reader.dead_letters
