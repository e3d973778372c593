"""The video scenario through the real scorer on Apache Kafka (issue 16, item 5): near-duplicate
frames are suppressed and counted on /metrics, and requests driven by track instability name
the track and the frames."""

from __future__ import annotations

import orjson
import pytest

from tests.integration.kafka_support import metric, produce, read_all, scrape, wait_for
from tests.integration.scorer_support import consumed, private_loop, scorer_env, scorer_in_thread

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]


def _clip_events(scenes: int = 6, frames: int = 80) -> list[tuple[bytes, bytes]]:
    """`scenes` clips of `frames` frames, two tracked objects each; frames of a clip have nearly
    one embedding; halfway through each clip the two track ids swap (each track flips class)."""
    out = []
    for s in range(scenes):
        for f in range(frames):
            swapped = f >= frames // 2
            for k, cls in enumerate(("3", "5")):
                track = f"c{s}-t{(k + swapped) % 2}"
                p = 0.8 if (s + f) % 3 else 0.6
                event = {
                    "schema_version": 1, "event_id": f"e{s}-{f}-{k}",
                    "asset_id": f"clip{s}/f{f}/o{k}", "model_id": "pitch",
                    "model_version": "v1", "sequence_id": f"clip{s}",
                    "timestamp": 1_700_000_000 + s * frames + f,
                    "predictions": [{"scores": {cls: p, "8": 1 - p}, "track_id": track,
                                     "bbox": [10.0 * k + f, 0.0, 8.0, 8.0],
                                     "embedding": [1.0, float(s), float(k), 0.01 * (f % 5)]}]}
                out.append((f"clip{s}".encode(), orjson.dumps(event)))
    return out


def _in_doubt(track: dict | None) -> bool:
    return bool(track) and track["score"] >= 1.0 and bool(  # type: ignore[index]
        {"crossing", "identity_switch"} & set(track["signals"]))  # type: ignore[index]


def test_video_events_through_the_scorer(broker: object) -> None:
    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    prefix = private_loop(bootstrap, partitions=1)
    stream = _clip_events()
    produce(bootstrap, prefix + "al.inference-events.v1", stream)
    policy = {"budget": {"share": 0.1},
              "redundancy": {"similarity": 0.97, "horizon_seconds": 100000},
              "tracks": {"weight": 0.8}}
    env = scorer_env(bootstrap, prefix, f"g-{prefix}", policy=orjson.dumps(policy).decode())
    with scorer_in_thread(env) as scorer:
        wait_for(lambda: consumed(scorer, len(stream)), 120, "stream not consumed")
        samples = scrape(scorer.ops.port)
    requests = [orjson.loads(m.value()) for m in
                read_all(bootstrap, prefix + "al.annotation-requests.v1")]
    assert requests
    assert metric(samples, "scorer_redundant_suppressed_total", reason="near_duplicate") > 0
    exploit = [r for r in requests if r["reason"]["strategy"] == "reservoir"]
    # One exploit request per (clip, object) embedding at most: the rest are near duplicates,
    # except the frames where a track crosses another and flips class (the swap), which the
    # gate spares (redundancy.spare_identity_doubt): who is who is in doubt there.
    spared = [r for r in exploit if _in_doubt(r["reason"].get("track"))]
    keys = [(r["asset_id"].split("/")[0], r["asset_id"].split("/")[2]) for r in exploit
            if r not in spared]
    assert len(keys) == len(set(keys))
    assert spared and all(int(r["asset_id"].split("/")[1][1:]) >= 40 for r in spared)
    tracked = [r for r in requests if r["reason"].get("track")]
    assert tracked, "the swaps should drive requests"
    for r in tracked:
        track = r["reason"]["track"]
        assert track["frames"][-1] == r["asset_id"]
        assert track["track_id"] == r["predictions"][0]["track_id"]
        assert set(track["signals"]) <= {"class_flip", "confidence_collapse",
                                         "identity_switch", "crossing"}
