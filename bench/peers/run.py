"""Run the peers, one process each, against a topic already filled: bench/scorer.py's `--peers`.

Each peer gets a fresh consumer group, an output topic of its own, the same threshold, and a
number of events to handle (the slow ones fewer). A peer whose library is not installed is
reported as skipped, never as a figure.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from services.streaming.topics import TopicSpec, create_topics

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Peer:
    name: str  # as printed, and `<name>_eps` in the scorer bench's JSON line
    module: str  # bench.peers.<module>
    needs: str  # the import that tells whether its library is installed
    label: str


PEERS = (
    Peer("quix", "quix_app", "quixstreams", "quix-streams app (apply, filter, to_topic)"),
    Peer("faust", "faust_agent", "faust", "faust-streaming agent, per message"),
    Peer("skactiveml", "skactiveml_peer", "skactiveml",
         "scikit-activeml VariableUncertainty, per event"),
)


@dataclass
class PeerRun:
    peer: Peer
    events: int
    result: dict[str, Any] | None  # the peer's RESULT line; None when skipped
    note: str = ""

    @property
    def eps(self) -> float | None:
        return self.result.get("eps") if self.result else None


def run_peer(peer: Peer, bootstrap: str, topic: str, partitions: int, events: int,
             threshold: float, fetch_queue_backoff_ms: int, timeout_s: float,
             python: str | None = None) -> PeerRun:
    """Run one peer to its `events`-th event with `python` (default: this interpreter; another
    one is the venv of `make bench-peers`, bench/README.md); its stderr goes to ours."""
    if python is None and importlib.util.find_spec(peer.needs) is None:
        return PeerRun(peer, events, None, f"skipped: {peer.needs} not installed "
                       "(make bench-peers, then --peer-python)")
    out_topic = f"{topic}.peer-{peer.name}-{uuid.uuid4().hex[:6]}"
    create_topics(AdminClient({"bootstrap.servers": bootstrap}),
                  [TopicSpec(out_topic, partitions)])
    cmd = [python or sys.executable, "-m", f"bench.peers.{peer.module}", "--bootstrap", bootstrap,
           "--topic", topic, "--out-topic", out_topic, "--partitions", str(partitions),
           "--events", str(events), "--threshold", repr(threshold),
           "--group", f"peer-{peer.name}-{uuid.uuid4().hex[:8]}",
           "--fetch-queue-backoff-ms", str(fetch_queue_backoff_ms)]
    try:
        # `timeout_s` bounds a hung peer (a group that never joins); the slowest, faust, needs
        # ~3 s per 30,000 events on a quiet machine plus its start-up.
        done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return PeerRun(peer, events, None, f"no result within {timeout_s:.0f} s")
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        return PeerRun(peer, events, None, f"failed (exit {done.returncode})")
    return PeerRun(peer, events, json.loads(lines[-1][len("RESULT "):]))
