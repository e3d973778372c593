"""What every peer shares: the selection rule, the output record, the timer and the command line.

The rule is least-confidence (1 - the top class probability, the largest over an event's
predictions) above a fixed threshold: the stream's 98th percentile, computed by the parent from
the very events produced, so each peer selects about 2% of them. scikit-activeml's peer uses its
own budget manager at 2% instead (its VariableUncertainty is the point of that peer).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson


def least_confidence(event: Mapping[str, Any]) -> float:
    """1 - the top probability of the event's most uncertain prediction; a top-1 prediction
    (label + confidence) counts with its confidence. An event without predictions scores 0."""
    worst = 0.0
    for prediction in event.get("predictions") or ():
        scores = prediction.get("scores")
        top = max(scores.values()) if scores else prediction.get("confidence", 1.0)
        worst = max(worst, 1.0 - top)
    return worst


def threshold_for(values: Sequence[bytes], share: float = 0.02) -> float:
    """The least-confidence above which `share` of these events lie (the stream's quantile)."""
    scores = np.fromiter((least_confidence(orjson.loads(v)) for v in values), float, len(values))
    return float(np.quantile(scores, 1.0 - share))


def request(event: Mapping[str, Any], score: float) -> dict[str, Any]:
    """The record a peer produces for a selected event: what an annotator needs, no more."""
    return {"event_id": event["event_id"], "asset_id": event["asset_id"],
            "model_id": event["model_id"], "model_version": event["model_version"],
            "strategy": "least_confidence", "score": score,
            "event_timestamp": event["timestamp"]}


@dataclass
class Timer:
    """Counts handled events; times from the first to the `total`-th, so start-up (connection,
    group join) is excluded as it is for the scorer."""

    total: int
    seen: int = 0
    selected: int = 0
    first: float = 0.0
    last: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def tick(self, chosen: bool) -> bool:
        """Count one event (`chosen`: selected); True once `total` events are counted."""
        self.seen += 1
        self.selected += chosen
        now = time.perf_counter()
        if self.seen == 1:
            self.first = now
        if self.seen >= self.total:
            self.last = now
            return True
        return False

    @property
    def done(self) -> bool:
        return self.seen >= self.total

    def result(self) -> dict[str, Any]:
        seconds = self.last - self.first
        return {"events": self.seen, "selected": self.selected, "seconds": seconds,
                "eps": (self.seen - 1) / seconds if seconds > 0 else None, **self.extra}


def report(timer: Timer) -> None:
    """The peer's one result line on stdout, read by bench/peers/run.py. Written to the file
    descriptor itself: faust's worker replaces sys.stdout with its logger."""
    os.write(1, ("RESULT " + json.dumps(timer.result()) + "\n").encode())


def parse_args(doc: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True, help="the inference events")
    parser.add_argument("--out-topic", required=True, help="where selected events go")
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--events", type=int, required=True, help="stop after this many")
    parser.add_argument("--threshold", type=float, required=True,
                        help="least-confidence above which an event is selected")
    parser.add_argument("--group", required=True, help="a fresh consumer group")
    parser.add_argument("--fetch-queue-backoff-ms", type=int, default=10,
                        help="for librdkafka consumers, as the scorer's in bench/scorer.py")
    return parser.parse_args()
