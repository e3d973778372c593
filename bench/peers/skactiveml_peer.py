"""Peer: scikit-activeml's stream VariableUncertainty (Žliobaitė et al. 2014), called per event
with its default budget manager at a 2% budget, in a plain confluent-kafka loop (decode, query,
update, produce).

Its `query` takes candidates and a classifier: the events already carry the model's
probabilities, so the classifier here returns its input (`GivenProbabilities`), and the cost
measured is the strategy's own, per event, as a user calling it per event would pay it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer
from skactiveml.base import SkactivemlClassifier
from skactiveml.stream import VariableUncertainty

from bench.peers.common import Timer, least_confidence, parse_args, report, request


class GivenProbabilities(SkactivemlClassifier):  # type: ignore[misc]
    """A classifier whose `predict_proba(X)` is X itself: each candidate row is the model's
    probability vector taken from the event. Nothing to fit."""

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> GivenProbabilities:
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.asarray(X, dtype=float)


class Selector:
    """VariableUncertainty over one event at a time. `offer(event)` returns the event's
    least-confidence when the strategy queries it, else None."""

    def __init__(self, classes: list[str], budget: float = 0.02, seed: int = 0) -> None:
        self.classes = classes
        self.clf = GivenProbabilities(classes=np.array(classes), missing_label=None)
        self.qs = VariableUncertainty(budget=budget, random_state=seed)

    def offer(self, event: dict[str, Any]) -> float | None:
        prediction = event["predictions"][0]
        scores = prediction.get("scores")
        if scores is None:  # top-1: the rest of the mass spread evenly over the other classes
            rest = (1.0 - prediction["confidence"]) / max(1, len(self.classes) - 1)
            scores = {c: rest for c in self.classes} | {prediction["label"]:
                                                         prediction["confidence"]}
        candidate = np.array([[scores.get(c, 0.0) for c in self.classes]])
        queried = self.qs.query(candidate, clf=self.clf)
        self.qs.update(candidate, queried)
        return least_confidence(event) if len(queried) else None


def main() -> None:
    args = parse_args(__doc__ or "")
    timer = Timer(args.events)
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": True,
                         "fetch.queue.backoff.ms": args.fetch_queue_backoff_ms})
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 5})
    consumer.subscribe([args.topic])
    selector: Selector | None = None
    try:
        while not timer.done:
            for msg in consumer.consume(1000, 1.0):
                if msg.error() or timer.done:
                    continue
                event = orjson.loads(msg.value() or b"{}")
                if selector is None:  # the class list of the stream, from its first event
                    selector = Selector(sorted(event["predictions"][0]["scores"]))
                score = selector.offer(event)
                if score is not None:
                    producer.produce(args.out_topic, orjson.dumps(request(event, score)),
                                     msg.key())
                    producer.poll(0)
                timer.tick(score is not None)
        producer.flush(30)
    finally:
        consumer.close()
    report(timer)


if __name__ == "__main__":
    main()
