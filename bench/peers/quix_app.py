"""Peer: a quix-streams application that selects by least-confidence, as a new user writes it.

JSON deserializer, `apply` (score), `filter` (threshold), `to_topic` (JSON serializer); an
`update` before the filter counts every event for the timer and stops the app at the last one.
quix-streams' defaults otherwise (at-least-once, a commit every 5 s), plus the same
fetch.queue.backoff.ms as the scorer's consumer in bench/scorer.py.
"""

from __future__ import annotations

import tempfile
from typing import Any

from quixstreams import Application

from bench.peers.common import Timer, least_confidence, parse_args, report, request


def main() -> None:
    args = parse_args(__doc__ or "")
    timer = Timer(args.events)
    app = Application(
        broker_address=args.bootstrap, consumer_group=args.group, auto_offset_reset="earliest",
        consumer_extra_config={"fetch.queue.backoff.ms": args.fetch_queue_backoff_ms},
        state_dir=tempfile.mkdtemp(prefix="peer-quix-"), loglevel="WARNING")
    events = app.topic(args.topic, value_deserializer="json")
    requests = app.topic(args.out_topic, value_serializer="json")

    def count(row: dict[str, Any]) -> None:
        if timer.tick(row["score"] > args.threshold):
            app.stop()

    # -- the app a user would write: ten lines ----------------------------------------------
    sdf = app.dataframe(events)
    sdf = sdf.apply(lambda event: request(event, least_confidence(event)))
    sdf = sdf.update(count)  # the bench's counter, not part of the app
    sdf = sdf.filter(lambda row: row["score"] > args.threshold)
    sdf.to_topic(requests)
    app.run()
    report(timer)


if __name__ == "__main__":
    main()
