"""HTTP ingest benchmark (not a test; prints figures).

    PYTHONPATH=. .venv/bin/python bench/ingest.py [--requests 300] [--clients 4] [--events 100,1000]

(PYTHONPATH: it runs the service with the integration tests' helpers.)

1. Framework: the same handler work (split an NDJSON body, run the scorer's batch decoder,
   answer a small JSON) behind aiohttp and behind the stdlib's ThreadingHTTPServer, no Kafka.
   Requests per second with `--clients` concurrent clients, a new connection per request.
2. End to end: `active-stream ingest` as a subprocess producing to Apache Kafka (or the embedded
   broker without a JDK), events per second acknowledged, per batch size.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.client
import multiprocessing as mp
import socket
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiohttp import web
from confluent_kafka.admin import AdminClient

# Run as `python bench/ingest.py`: the repository root holds tests/ (the shared event generator
# and the ingest process helper), which is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.ingest.body import split_events  # noqa: E402
from services.streaming import apache_kafka, topics  # noqa: E402
from services.streaming.embedded import EmbeddedBroker, free_port  # noqa: E402
from services.streaming.inference_batch import decode_inference_batch  # noqa: E402
from services.streaming.topics import TopicSpec, create_topics  # noqa: E402
from tests.integration.ingest_support import IngestProcess  # noqa: E402
from tests.synthetic_events import inference_events  # noqa: E402

NDJSON = "application/x-ndjson"


def work(body: bytes) -> bytes:
    batch = decode_inference_batch(split_events(body, NDJSON, 100_000))
    return b'{"accepted": %d}' % len(batch.index)


def serve_aiohttp(port: int, started: Any) -> None:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=work(await request.read()), content_type="application/json")

    async def main() -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        started.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_stdlib(port: int, started: Any) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            out = work(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    started.set()
    server.serve_forever()


def post(port: int, body: bytes, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def load(send: Callable[[], int], requests: int, clients: int) -> float:
    """Requests per second of `send` over `requests` calls from `clients` threads."""
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        statuses = list(pool.map(lambda _: send(), range(requests)))
    assert set(statuses) == {200}, set(statuses)
    return requests / (time.perf_counter() - started)


def frameworks(requests: int, clients: int, events: int) -> None:
    body = b"\n".join(v for _, v in inference_events(events, seed=1))
    for name, serve in (("aiohttp", serve_aiohttp), ("stdlib ThreadingHTTPServer", serve_stdlib)):
        # The server in its own process, as in production: the clients' threads here must not
        # compete with it for this process's GIL.
        port = free_port()
        server = mp.Process(target=serve, args=(port, mp.Event()), daemon=True)
        server.start()
        try:
            wait_for_port(port)
            send = functools.partial(post, port, body, {"Content-Type": NDJSON})
            load(send, 20, clients)  # warm-up
            rate = load(send, requests, clients)
        finally:
            server.kill()
        print(f"  {name:<28} {rate:8.0f} requests/s  ({rate * events:9.0f} events/s, "
              f"{events} events a request)", flush=True)


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def _status(service: IngestProcess, body: bytes) -> int:
    return service.post(body, NDJSON)[0]


def end_to_end(requests: int, clients: int, sizes: list[int]) -> None:
    if apache_kafka.unavailable_reason() is None:
        broker: apache_kafka.ApacheKafka | EmbeddedBroker = apache_kafka.ApacheKafka()
        name = f"Apache Kafka {apache_kafka.kafka_version()}"
    else:
        broker, name = EmbeddedBroker(), "the embedded broker"
    broker.start()
    try:
        for events in sizes:
            prefix = f"b{uuid.uuid4().hex[:6]}."
            create_topics(AdminClient({"bootstrap.servers": broker.bootstrap}),
                          [TopicSpec(prefix + topics.INFERENCE_EVENTS, 4)])
            service = IngestProcess(broker.bootstrap, prefix, max_events=max(sizes))
            service.start()
            try:
                service.wait_ready(60)
                body = b"\n".join(v for _, v in inference_events(events, seed=2))
                n = max(10, requests * 100 // events)
                load(functools.partial(_status, service, body), 5, clients)
                rate = load(functools.partial(_status, service, body), n, clients)
                print(f"  {events:>5} events a request: {rate * events:9.0f} events/s "
                      f"acknowledged ({rate:.0f} requests/s) on {name}", flush=True)
            finally:
                service.stop()
    finally:
        if isinstance(broker, EmbeddedBroker):
            broker.stop()
        else:
            broker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--events", default="100,1000", help="events per request, comma-separated")
    args = parser.parse_args()
    sizes = [int(s) for s in args.events.split(",")]
    print(f"framework (no Kafka; {args.clients} clients, a connection per request):")
    frameworks(args.requests, args.clients, sizes[0])
    print("end to end (active-stream ingest -> broker, acknowledged):")
    end_to_end(args.requests, args.clients, sizes)


if __name__ == "__main__":
    main()
