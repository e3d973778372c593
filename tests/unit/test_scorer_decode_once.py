"""Decode once: a selected event, or one a reservoir holds for a later window, is built from what
the batch decoder parsed (services/scorer/selected.py), never parsed again from its bytes; and
the requests are the bytes the exact decoder's events give."""

from __future__ import annotations

from collections import Counter
from typing import Any
from unittest import mock

import orjson

from services.core import SelectorPolicy, SelectorState
from services.scorer.builders import build_request
from services.scorer.partition import PartitionScorer, Record, partition_seed
from services.streaming.annotation_requests import encode_annotation_request
from services.streaming.events import decode_inference_event
from tests.synthetic_events import inference_events

POLICY = SelectorPolicy()


def _records(n: int) -> list[Record]:
    """The stream (every 7th event a top-1 prediction: the exact decoder's), some events with
    an `asset_uri`, metadata, integer probabilities or an integer timestamp (the fast shape)."""
    out = []
    for i, (key, value) in enumerate(inference_events(n, 11)):
        event = orjson.loads(value)
        scores = event["predictions"][0].get("scores")
        if i % 3 == 0:
            event["asset_uri"] = f"s3://bucket/{i}.jpg"
        if i % 5 == 0:
            event["metadata"] = {"camera": "c1", "frame": i}
        if i % 11 == 0 and scores is not None:
            top = max(scores, key=scores.get)
            event["predictions"][0]["scores"] = {c: int(c == top) for c in scores}
        if i % 17 == 0:
            event["timestamp"] = int(event["timestamp"])
        out.append(Record(i, key, orjson.dumps(event), 1_700_000_000.0 + i))
    return out


def test_no_record_is_parsed_twice_and_held_picks_need_no_read_back() -> None:
    records = _records(3000)
    fetched: list[int] = []
    scorer = PartitionScorer("t", 0, SelectorState.create(POLICY, partition_seed(0, 0)), 0,
                             service_version="test", fetch=lambda o: fetched.append(o) or None)
    parsed: Counter[bytes] = Counter()
    loads = orjson.loads

    def counting(data: Any) -> Any:
        parsed[bytes(data)] += 1
        return loads(data)

    requests = []
    with mock.patch.object(orjson, "loads", counting):
        for lo in range(0, len(records), 50):  # small batches: reservoir picks span batches
            result = scorer.process(records[lo:lo + 50])
            requests.extend(zip(result.selected, result.requests, strict=True))
    assert len(requests) > 20 and fetched == []
    assert any(sel.asset_index < 0 for sel, _ in requests), "no pick granted after its batch"
    assert any(sel.strategy != "reservoir" for sel, _ in requests)
    assert max(parsed.values()) == 1, parsed.most_common(1)
    assert sum(parsed.values()) == len(records)
    # The same bytes the exact decoder's event of each record gives.
    by_offset = {r.offset: r.value for r in records}
    for sel, out in requests:
        event = decode_inference_event(by_offset[int(sel.ref)] or b"")
        assert out.value == encode_annotation_request(build_request(event, sel, "t", 0,
                                                                    int(sel.ref)))
        assert out.key == event.asset_id.encode()
