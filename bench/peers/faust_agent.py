"""Peer: a faust-streaming agent handling one message at a time: decode, score, threshold,
produce. Raw bytes in and out (orjson for JSON, as the scorer), in-memory tables, no web server.
At the last counted event the agent flushes its producer, prints the result and ends the process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

import faust
import orjson

from bench.peers.common import Timer, least_confidence, parse_args, report, request


def main() -> None:
    args = parse_args(__doc__ or "")
    timer = Timer(args.events)
    app = faust.App(args.group, broker=f"kafka://{args.bootstrap}", value_serializer="raw",
                    key_serializer="raw", store="memory://", web_enabled=False,
                    consumer_auto_offset_reset="earliest", topic_disable_leader=True,
                    topic_partitions=args.partitions)
    events = app.topic(args.topic, value_type=bytes, key_type=bytes)
    requests = app.topic(args.out_topic, value_type=bytes, key_type=bytes)

    @app.agent(events)
    async def select(stream: Any) -> None:
        async for key, value in stream.items():
            event = orjson.loads(value)
            score = least_confidence(event)
            chosen = score > args.threshold
            if chosen:
                await requests.send(key=key, value=orjson.dumps(request(event, score)))
            if timer.tick(chosen):
                await app.producer.flush()
                report(timer)
                logging.shutdown()
                # The measurement is over; faust's graceful stop (seconds) adds nothing to it.
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "WARNING"]
    asyncio.set_event_loop(asyncio.new_event_loop())
    faust.Worker(app, loglevel="WARNING").execute_from_commandline()


if __name__ == "__main__":
    main()
