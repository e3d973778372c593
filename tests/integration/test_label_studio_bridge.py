"""The loop with people in it: the real scorer, label sink and bridge on the session's broker, and
a real Label Studio. Requests become tasks with pre-labels; a person's annotations, posted
through Label Studio's API as the editor posts them, come back as labels the sink counts, and a
retrain trigger fires; a lost webhook is caught by reconciliation; a replayed webhook is one
label; a bad one is dead-lettered; expired requests' tasks are removed; and a headless Chromium
shows the tasks with their pre-labels."""

from __future__ import annotations

import base64
import http.client
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.label_studio.api import LabelStudioClient
from services.label_studio.server import LabelStudioServer
from services.label_studio.webhook import SECRET_HEADER
from services.streaming import topics
from services.streaming.events import (
    decode_annotation_request,
    decode_label,
    decode_retrain_trigger,
    encode_event,
)
from tests.integration.kafka_support import metric, produce, read_all, wait_for
from tests.integration.label_sink_support import SinkProcess
from tests.integration.label_studio_support import (
    CLASSES,
    FRAME,
    WEBHOOK_SECRET,
    BridgeProcess,
    annotate,
    box_of,
    choose,
    client_of,
    create_project,
    image_uri,
    label_studio,  # noqa: F401 - the session fixture
    tasks_of,
)
from tests.integration.scorer_support import ScorerProcess, private_loop, scorer_env

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

EVENTS = 40
# Many picks from few events (about half, while warming up): every warm-up draw taken, half the
# budget for those random picks, no waiting on the hourly rate.
POLICY = {"warmup": {"rate": 1.0}, "budget": {"share": 1.0, "share_burst": 100, "burst": 100,
                                              "labels_per_hour": 1e6, "exploration_share": 0.5}}
TRIGGER_AT = 4
COLORS = [(214, 96, 77), (67, 147, 195), (90, 174, 97)]


@dataclass
class Loop:
    bootstrap: str
    prefix: str
    project_id: int
    client: LabelStudioClient
    server: LabelStudioServer
    bridge: BridgeProcess
    sink: SinkProcess

    def requests(self) -> list[Any]:
        return [decode_annotation_request(m.value())
                for m in read_all(self.bootstrap, self.prefix + topics.ANNOTATION_REQUESTS)]

    def labels(self) -> list[Any]:
        return [decode_label(m.value())
                for m in read_all(self.bootstrap, self.prefix + topics.LABELS)]

    def webhook(self, body: bytes, secret: str | None = WEBHOOK_SECRET) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.bridge.webhook_port, timeout=30)
        try:
            headers = {"Content-Type": "application/json"}
            if secret is not None:
                headers[SECRET_HEADER] = secret
            conn.request("POST", "/webhook", body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, orjson.loads(resp.read())
        finally:
            conn.close()


def _events(n: int) -> list[tuple[bytes, bytes]]:
    """Inference events of a 3-class image model, timestamped now (the sink joins labels to
    requests younger than its TTL), each asset a small picture (a data: URI) whose frame size is
    in the metadata: one whole-picture prediction and one for the object's box."""
    out = []
    now = time.time()
    for i in range(n):
        p = [0.34 + 0.01 * (i % 7), 0.33, 0.0]
        p[2] = 1.0 - p[0] - p[1]
        whole = dict(zip(CLASSES, p, strict=True))
        boxed = dict(zip(CLASSES, [p[1], p[0], p[2]], strict=True))
        event = {"schema_version": 1, "event_id": f"ev-{i}", "asset_id": f"img-{i}",
                 "asset_uri": image_uri(i, COLORS[i % len(COLORS)]), "model_id": "pets",
                 "model_version": "v1", "timestamp": now - n + i,
                 "predictions": [{"scores": whole},
                                 {"scores": boxed, "bbox": _predicted_box(i),
                                  "instance_id": f"obj-{i}"}],
                 "metadata": {"width": FRAME[0], "height": FRAME[1]}}
        out.append((f"img-{i}".encode(), encode_event(event)))
    return out


def _predicted_box(index: int) -> list[float]:
    """The model's box around the object: a little wide, as a model's boxes are."""
    x, y, w, h = box_of(index)
    return [x - 3.0, y - 3.0, w + 6.0, h + 6.0]


@pytest.fixture(scope="module")
def loop(broker: Any, label_studio: LabelStudioServer) -> Iterator[Loop]:  # noqa: F811
    client = client_of(label_studio)
    project_id = create_project(client)
    prefix = private_loop(broker.bootstrap, partitions=2)
    scorer = ScorerProcess(scorer_env(broker.bootstrap, prefix, f"{prefix}scorer",
                                      policy=json.dumps(POLICY)))
    sink = SinkProcess(broker.bootstrap, f"{prefix}sink", prefix, trigger_min_labels=TRIGGER_AT)
    bridge = BridgeProcess(broker.bootstrap, prefix, label_studio, project_id,
                           request_ttl_s=30 * 86400)
    services = [scorer.start(), sink.start(), bridge.start()]
    try:
        for service in services:
            service.wait_ready(120)
        produce(broker.bootstrap, prefix + topics.INFERENCE_EVENTS, _events(EVENTS))
        wait_for(lambda: metric(scorer.metrics(), "scorer_events_consumed_total") >= EVENTS, 60,
                 "the scorer did not consume the events")
        yield Loop(broker.bootstrap, prefix, project_id, client, label_studio, bridge, sink)
    finally:
        for service in services:
            code = service.stop()
            assert code == 0, f"{service.command} exit code {code}\n{service.tail()}"


def test_requests_become_tasks_with_prelabels_once_each(loop: Loop) -> None:
    requests = wait_for(lambda: loop.requests() or None, 30, "the scorer requested nothing")
    wait_for(lambda: metric(loop.bridge.metrics(), "label_studio_bridge_tasks_created_total")
             >= len({r.request_id for r in loop.requests()}), 60, "tasks not created")
    requests = {r.request_id: r for r in loop.requests()}
    assert len(requests) >= TRIGGER_AT + 2, "too few requests for the tests below"
    tasks = tasks_of(loop.client, loop.project_id)
    by_request = {t["data"]["request_id"]: t for t in tasks}
    assert len(by_request) == len(tasks) == len(requests)  # one task per request, no twin
    for rid, request in requests.items():
        task = by_request[rid]
        data = task["data"]
        assert (data["asset_id"], data["image"], data["model_id"]) == (
            request.asset_id, request.asset_uri, request.model_id)
        assert data["priority"] == request.priority
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "active-stream"
        assert prediction["score"] == pytest.approx(1 - request.priority)
        choice, region = prediction["result"]
        whole, boxed = request.predictions
        top = max(whole.scores, key=whole.scores.__getitem__)
        assert (choice["type"], choice["value"]["choices"]) == ("choices", [top])
        assert choice["score"] == pytest.approx(whole.scores[top])
        # The box in percent of the frame the event's metadata gave (read back from Kafka).
        top = max(boxed.scores, key=boxed.scores.__getitem__)
        x, y, w, h = boxed.bbox
        assert (region["type"], region["id"], region["value"]["rectanglelabels"]) == (
            "rectanglelabels", boxed.instance_id, [top])
        assert [region["value"][k] for k in ("x", "y", "width", "height")] == pytest.approx(
            [100 * x / FRAME[0], 100 * y / FRAME[1], 100 * w / FRAME[0], 100 * h / FRAME[1]])
        assert (region["original_width"], region["original_height"]) == FRAME
    project = loop.client.project(loop.project_id)
    assert (project["sampling"], project["show_collab_predictions"]) == (
        "Uncertainty sampling", True)
    ready = loop.bridge.metrics()
    assert metric(ready, "label_studio_bridge_label_studio_up") == 1


def _wait_labels(loop: Loop, n: int) -> list[Any]:
    return wait_for(lambda: (lambda got: got if len(got) >= n else None)(loop.labels()), 60,
                    f"fewer than {n} labels on al.labels.v1")


def test_annotations_become_labels_that_the_sink_counts_and_a_retrain_fires(loop: Loop) -> None:
    tasks = [t for t in tasks_of(loop.client, loop.project_id) if not t["annotations"]]
    chosen = {}
    for i, task in enumerate(tasks[:TRIGGER_AT]):
        name = CLASSES[i % len(CLASSES)]
        result = choose(task, name)
        if i == 0:  # the person keeps the pre-labelled box: its region id is the instance id
            result += [{**r, "origin": "prediction"} for r in task["predictions"][0]["result"]
                       if r["type"] == "rectanglelabels"]
        annotation = annotate(loop.client, task, result)
        chosen[task["data"]["request_id"]] = (name, annotation["id"], task)
    labels = {lab.request_id: lab for lab in _wait_labels(loop, TRIGGER_AT)}
    for i, (rid, (name, annotation_id, task)) in enumerate(chosen.items()):
        label = labels[rid]
        assert label.asset_id == task["data"]["asset_id"]
        assert label.annotations[0].label == name and label.annotations[0].bbox is None
        if i == 0:
            index = int(task["data"]["asset_id"].split("-")[1])
            box = label.annotations[1]
            assert box.instance_id == f"obj-{index}"
            assert box.bbox == pytest.approx(_predicted_box(index))  # in the frame's pixels
        else:
            assert len(label.annotations) == 1
        assert label.model_id == "pets"
        assert label.label_id.startswith(f"ls-{loop.project_id}-{annotation_id}-")
        assert label.annotator_id == "label-studio-user-1"
        assert abs(label.labeled_at - time.time()) < 120
    wait_for(lambda: metric(loop.sink.metrics(), "label_sink_joined_labels_total") >= TRIGGER_AT,
             60, f"the sink did not join the labels\n{loop.sink.tail()}")
    triggers = wait_for(lambda: read_all(loop.bootstrap, loop.prefix + topics.RETRAIN_TRIGGERS),
                        60, "no retrain trigger")
    trigger = decode_retrain_trigger(triggers[0].value())
    assert (trigger.model_id, trigger.total) == ("pets", TRIGGER_AT)
    # Each annotation came by webhook; the reconciliation pass may have read one first, so the
    # webhook found its label produced already (one label either way).
    samples = loop.bridge.metrics()
    hooks = sum(metric(samples, "label_studio_bridge_webhooks_total", outcome=o)
                for o in ("produced", "duplicate"))
    produced = sum(metric(samples, "label_studio_bridge_labels_produced_total", source=s)
                   for s in ("webhook", "reconcile"))
    assert hooks == produced == len(loop.labels()) == TRIGGER_AT
    # The marks: a later pass (or a restarted bridge) leaves these annotations alone.
    wait_for(lambda: all(t["meta"].get("active_stream_labels")
                         for t in tasks_of(loop.client, loop.project_id) if t["annotations"]),
             30, "tasks not marked with their labels")


def test_a_lost_webhook_is_caught_by_the_reconciliation_pass(loop: Loop) -> None:
    (hook,) = loop.client.webhooks(loop.project_id)
    loop.client.save_webhook(hook["id"], {"url": "http://127.0.0.1:9/nowhere"})  # lost
    try:
        task = next(t for t in tasks_of(loop.client, loop.project_id) if not t["annotations"])
        before = len(loop.labels())
        reconciled = metric(loop.bridge.metrics(), "label_studio_bridge_labels_produced_total",
                            source="reconcile")
        annotation = annotate(loop.client, task, choose(task, "bird"))
        labels = _wait_labels(loop, before + 1)
    finally:
        loop.client.save_webhook(hook["id"], {"url": hook["url"]})
    (label,) = [lab for lab in labels if lab.request_id == task["data"]["request_id"]]
    assert label.label_id.startswith(f"ls-{loop.project_id}-{annotation['id']}-")
    assert metric(loop.bridge.metrics(), "label_studio_bridge_labels_produced_total",
                  source="reconcile") == reconciled + 1


def test_a_replayed_webhook_is_one_label_and_a_bad_one_is_dead_lettered(loop: Loop) -> None:
    task = next(t for t in tasks_of(loop.client, loop.project_id) if not t["annotations"])
    annotation = annotate(loop.client, task, choose(task, "dog"))
    labels = wait_for(lambda: [lab for lab in loop.labels()
                               if lab.request_id == task["data"]["request_id"]], 30, "no label")
    payload = {"action": "ANNOTATION_CREATED", "project": {"id": loop.project_id},
               "annotation": loop.client.call("a", "GET", f"/api/annotations/{annotation['id']}"),
               "task": loop.client.task(task["id"])}
    body = orjson.dumps(payload)
    assert loop.webhook(body) == (200, {"outcome": "duplicate"})  # what Label Studio sent
    assert loop.webhook(body) == (200, {"outcome": "duplicate"})
    assert loop.webhook(body, secret="wrong")[0] == 401
    garbage = [b"\xff not json", b'{"action": "ANNOTATION_CREATED", "annotation": 7}',
               orjson.dumps({**payload, "annotation": {**payload["annotation"], "result": 7}})]
    for body in garbage:
        assert loop.webhook(body) == (400, {"outcome": "invalid"}), body[:60]
    other = {**payload, "project": {"id": loop.project_id + 100}}
    assert loop.webhook(orjson.dumps(other)) == (200, {"outcome": "foreign"})
    time.sleep(1)
    assert [lab for lab in loop.labels() if lab.request_id == task["data"]["request_id"]] \
        == labels
    dead = [orjson.loads(m.value()) for m in
            read_all(loop.bootstrap, topics.dlq(loop.prefix + topics.LABELS))]
    assert {base64.b64decode(d["original_b64"]) for d in dead} == set(garbage)
    assert {d["source"]["topic"] for d in dead} == {"label-studio.webhook"}
    samples = loop.bridge.metrics()
    assert metric(samples, "label_studio_bridge_webhooks_total", outcome="invalid") == 3
    assert metric(samples, "label_studio_bridge_webhooks_total", outcome="unauthorized") == 1


def test_an_edited_annotation_is_a_new_label(loop: Loop) -> None:
    task = next(t for t in tasks_of(loop.client, loop.project_id) if t["annotations"])
    (annotation,) = task["annotations"]
    before = [lab for lab in loop.labels() if lab.request_id == task["data"]["request_id"]]
    loop.client.call("edit", "PATCH", f"/api/annotations/{annotation['id']}",
                     {"result": choose(task, "cat")})
    after = wait_for(lambda: (lambda got: got if len(got) > len(before) else None)(
        [lab for lab in loop.labels() if lab.request_id == task["data"]["request_id"]]), 30,
        "no label for the edit")
    assert len({lab.label_id for lab in after}) == len(after) == len(before) + 1
    assert [a.label for a in after[-1].annotations] == ["cat"]


def test_an_expired_requests_task_is_removed(loop: Loop) -> None:
    old = time.time() - 31 * 86400  # the bridge's TTL here is 30 days
    rid = f"old-{uuid.uuid4().hex[:6]}"
    request = {"schema_version": 1, "request_id": rid, "asset_id": "img-old", "asset_uri": None,
               "event_id": "ev-old", "model_id": "pets", "model_version": "v1",
               "event_timestamp": old,
               "reason": {"strategy": "threshold", "score": 0.5, "class": "cat",
                          "threshold": 0.4, "instances": [0], "inclusion_probability": None},
               "priority": 0.5, "predictions": [{"label": "cat", "confidence": 0.5}],
               "source": {"topic": "x", "partition": 0, "offset": 0}}
    produce(loop.bootstrap, loop.prefix + topics.ANNOTATION_REQUESTS,
            [(b"img-old", encode_event(request))])
    wait_for(lambda: metric(loop.bridge.metrics(), "label_studio_bridge_tasks_expired_total")
             >= 1, 60, "the expired task was not removed")
    assert rid not in {t["data"]["request_id"] for t in tasks_of(loop.client, loop.project_id)}


def test_chromium_shows_the_tasks_with_their_prelabels(loop: Loop, tmp_path: Path) -> None:
    from tests.integration.chromium_support import project_screenshots

    tasks = tasks_of(loop.client, loop.project_id)
    open_task = next(t for t in tasks if not t["annotations"])
    shots = project_screenshots(loop.server, loop.project_id, open_task["id"], tmp_path)
    listing, editor = shots["tasks"], shots["task"]
    predicted = sum(1 for t in tasks if t["predictions"])
    assert f"Tasks: {len(tasks)} / {len(tasks)}" in listing.text
    assert f"Predictions: {predicted}" in listing.text and predicted == len(tasks)
    for task in sorted(tasks, key=lambda t: t["id"])[:5]:  # the first rows, by their assets
        assert task["data"]["asset_id"] in listing.text
    assert "active-stream" in editor.text  # the pre-label's model version
    choice, region = open_task["predictions"][0]["result"]
    assert editor.checked == choice["value"]["choices"]  # the pre-label chose the model's class
    # The box pre-label is a region of the model's class, with the model's probability.
    assert f"{region['value']['rectanglelabels'][0]}\n" in editor.text
    assert f"{region['score']:.2f}" in editor.text
    for shot in shots.values():
        assert shot.png.stat().st_size > 10_000 and shot.png.read_bytes()[:4] == b"\x89PNG"
