"""A real Prometheus (Debian's package) scrapes the scorer and the label sink, running as
subprocesses on the session's broker, with the deploy alert rules loaded. Through Prometheus's
HTTP API: every series the services expose is stored, the counters the test drove have the
values it expects, every rule evaluates without error, and every dashboard query is valid
PromQL that finds data. A second test scrapes protected ops endpoints with Prometheus's own
basic-auth and bearer-token support.

Without the `prometheus` binary these tests skip, saying how to install it; with
ACTIVE_STREAM_REQUIRE_PROMETHEUS=1 (CI) they fail instead."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter

from services.streaming import topics
from services.streaming.ops import OpsAccess, OpsServer
from services.streaming.settings import Secret
from tests.integration.kafka_support import metric, produce, read_all, wait_for
from tests.integration.label_sink_support import SinkProcess, label
from tests.integration.scorer_support import ScorerProcess, private_loop, scorer_env
from tests.prometheus_support import (
    ALERTS,
    SCORER_JOB,
    SINK_JOB,
    Prometheus,
    binary,
    dashboard_exprs,
    grafana_to_promql,
    names_in,
    running,
)
from tests.synthetic_events import inference_events

# Over 500 per partition: the scorer refreshes its per-class stats (and the confidence panel's
# series) every 500 assets of a partition.
EVENTS = 1200
LABELS = 8
TURNAROUND_S = 120.0
# Dashboard queries that may rightly find nothing after this short run, by a metric they read.
MAY_BE_EMPTY = {
    "ALERTS": "no alert fires within the run (the `for:` durations are minutes)",
    "scorer_class_confidence_threshold_ratio": "a class has a threshold once its stats are "
    "ready (min_count predictions of each frequent class in a partition): more than this run",
    "scorer_class_drift_total": "no class drifts on this short stationary stream (a test needs "
    "drift.min_count confidences in a recent and a reference window)",
    "scorer_class_drift_boost_ratio": "a class's boost series appears at its first drift: none",
    "scorer_probe_changed_ratio": "the run sends no probe events, and one model version: no "
    "comparison of versions",
    "label_sink_probe_changed_ratio": "no stability record without probes (as above)",
    "label_sink_tier_cost_units_total": "the run has no tier policy, so no label has a cost "
    "(tests/integration/test_label_sink_tiers.py runs with tiers)",
    "label_sink_consensus_decisions_total": "its series are per model and class, from a "
    "model's first consensus label on: none without tiers (as above)",
}


@pytest.fixture
def prometheus_binary() -> str:
    """Checked before any service starts: the skip (or CI failure) comes first and fast."""
    return binary("prometheus")


def targets(port: int) -> dict[str, Any]:
    return {"static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}


@pytest.mark.broker
@pytest.mark.timeout(300)
def test_prometheus_scrapes_both_services_and_stores_what_they_produced(
    prometheus_binary: str, broker: Any,
) -> None:
    bootstrap = broker.bootstrap
    prefix = private_loop(bootstrap, partitions=2)
    scorer = ScorerProcess(scorer_env(bootstrap, prefix, f"g-{prefix}"))
    sink = SinkProcess(bootstrap, f"sink-{prefix}", prefix, trigger_min_labels=LABELS)
    prometheus = Prometheus({SCORER_JOB: targets(scorer.port), SINK_JOB: targets(sink.port)},
                            rule_files=(ALERTS,))
    try:
        scorer.start()
        sink.start()
        with_prometheus(prometheus, scorer, sink, bootstrap, prefix)
    finally:
        prometheus.stop()
        scorer.stop()
        sink.stop()
    assert prometheus.proc is not None and prometheus.proc.poll() is not None, "still running"


def with_prometheus(prometheus: Prometheus, scorer: ScorerProcess, sink: SinkProcess,
                    bootstrap: str, prefix: str) -> None:
    prometheus.start()
    scorer.wait_ready(90)
    sink.wait_ready(90)
    # Events only once Prometheus holds a sample from before them: a rate() (the latency alerts,
    # most dashboard panels) needs an increase between two samples, not just a final value.
    wait_for(lambda: prometheus.values(f'up{{job=~"{SCORER_JOB}|{SINK_JOB}"}} == 1'), 60,
             "Prometheus never scraped the services")
    wait_for(lambda: len(prometheus.values("up == 1")) == 2, 60, "not both services scraped")
    events = inference_events(EVENTS, seed=12)
    produce(bootstrap, prefix + topics.INFERENCE_EVENTS, [*events, (b"bad-1", b"{not json")])
    wait_for(lambda: metric(scorer.metrics(), "scorer_events_consumed_total") == EVENTS + 1, 90,
             "the scorer did not consume every event")
    requests = [orjson.loads(m.value())
                for m in read_all(bootstrap, prefix + topics.ANNOTATION_REQUESTS)]
    assert len(requests) >= LABELS, f"only {len(requests)} requests"
    wait_for(lambda: metric(sink.metrics(), "label_sink_requests_total") == len(requests), 60,
             "the sink did not store every request")
    # Control-arm requests first: their labels feed the control-arm estimates, the mastery
    # states and the stopping signal (set at the trigger), whose panels must then find data.
    control = [r for r in requests if r["reason"]["strategy"] == "random_control"]
    assert control, "no control-arm request in the run"
    chosen = (control + [r for r in requests if r not in control])[:LABELS]
    produce(bootstrap, prefix + topics.LABELS, [
        (r["asset_id"].encode(),
         label(f"l-{i}", [r["reason"]["class"] or "c0"], request_id=r["request_id"],
               asset_id=r["asset_id"], at=r["event_timestamp"] + TURNAROUND_S))
        for i, r in enumerate(chosen)])
    wait_for(lambda: metric(sink.metrics(), "label_sink_triggers_total", rule="label_count") == 1,
             60, f"no trigger\n{sink.tail()}")

    expected = {  # PromQL -> the value this run must leave in Prometheus
        f'up{{job="{SCORER_JOB}"}}': 1,
        f'up{{job="{SINK_JOB}"}}': 1,
        "scorer_events_consumed_total": EVENTS + 1,
        'scorer_events_invalid_total{reason="not_json"}': 1,
        "scorer_requests_emitted_total": len(requests),
        "sum(scorer_selected_total)": len(requests),
        "scorer_assigned_partitions": 2,
        "label_sink_requests_total": len(requests),
        "label_sink_label_records_total": LABELS,
        "label_sink_joined_labels_total": LABELS,
        "sum(label_sink_labels_total)": LABELS,
        'label_sink_triggers_total{rule="label_count"}': 1,
        "label_sink_turnaround_seconds_count": LABELS,
        "label_sink_turnaround_seconds_sum": LABELS * TURNAROUND_S,
        # One annotation per label; the model has control labels, so the trigger set its signal.
        "sum(label_sink_control_labels_total)": min(len(control), LABELS),
        "label_sink_stopping_signal": 0,
        'label_sink_stopping_branch_signal{branch="control"}': 0,
        'label_sink_stopping_branch_signal{branch="stability"}': 0,
    }

    def stored() -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for promql in expected:
            values = list(prometheus.values(promql).values())
            out[promql] = values[0] if len(values) == 1 else None
        return out

    try:
        wait_for(lambda: stored() == expected, 60, "values")
    except AssertionError:
        got = stored()
        raise AssertionError({k: (got[k], v) for k, v in expected.items() if got[k] != v}) from None

    for process, job in ((scorer, SCORER_JOB), (sink, SINK_JOB)):
        wait_for(lambda p=process, j=job: not missing_series(prometheus, p, j), 30,
                 f"{job}: series on /metrics not in Prometheus: "
                 f"{sorted(missing_series(prometheus, process, job))[:10]}")
    check_rules(prometheus)
    check_dashboard(prometheus)


def missing_series(prometheus: Prometheus, process: ScorerProcess | SinkProcess,
                   job: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Series the service exposes now that Prometheus has not stored for its job."""
    exposed = set(process.metrics())
    stored = {(s.pop("__name__"),
               tuple(sorted((k, v) for k, v in s.items() if k not in ("job", "instance"))))
              for s in prometheus.api("series", **{"match[]": f'{{job="{job}"}}'})}
    return exposed - stored


def check_rules(prometheus: Prometheus) -> None:
    """Every deploy rule is loaded and evaluates on the real series without error; the events,
    stamped in 2023, make both event-to-request alerts pending and nothing critical."""
    def evaluated() -> list[dict[str, Any]]:
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        return rules if rules and all(r["health"] != "unknown" for r in rules) else []

    rules = wait_for(evaluated, 30, "rules not evaluated")
    deployed = [r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"]
                for r in g["rules"]]
    assert len(deployed) >= 20 and sorted(r["name"] for r in rules) == sorted(deployed)
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []

    def active() -> set[tuple[str, str]]:
        return {(a["labels"]["alertname"], a["labels"]["severity"])
                for a in prometheus.api("alerts")["alerts"]}

    # Settles within an evaluation or two: the *Absent alerts went pending before the first
    # scrape and clear at the next evaluation after it.
    latency = {("ActiveStreamScorerEventToRequestP99High", "warning"),
               ("ActiveStreamScorerEventToRequestP50High", "warning")}
    try:
        wait_for(lambda: latency <= active() and
                 not any(severity == "critical" for _, severity in active()), 30, "alerts")
    except AssertionError:
        raise AssertionError(f"active alerts: {sorted(active())}") from None


def check_dashboard(prometheus: Prometheus) -> None:
    """Every dashboard query, as Grafana sends it, is valid PromQL (a query error raises, also
    for those that may find nothing) and finds series; the labels panel counts every label of
    the run, its classes' first ones included."""
    exprs = dashboard_exprs()

    def empty() -> set[str]:
        found = {(title, expr): bool(prometheus.query(grafana_to_promql(expr, "5m")))
                 for title, expr in exprs}
        return {f"{title}: {expr}" for (title, expr), ok in found.items()
                if not ok and not names_in(expr).metrics & set(MAY_BE_EMPTY)}

    try:  # a series just stored needs a second sample before increase() or rate() answer
        wait_for(lambda: not empty(), 30, "empty panels")
    except AssertionError:
        raise AssertionError(f"dashboard queries that found nothing: {sorted(empty())}") from None
    (per_class,) = [expr for title, expr in exprs if title == "Labels per hour by class"]
    assert sum(prometheus.values(grafana_to_promql(per_class)).values()) == LABELS


@pytest.fixture
def protected_servers() -> Iterator[dict[str, OpsServer]]:
    registry = CollectorRegistry()
    Counter("demo_scrapes_total", "A counter to scrape.", registry=registry).inc(5)
    servers = {
        "basic": OpsServer(registry, "127.0.0.1", access=OpsAccess(
            "basic", "prometheus", Secret("pw-2c1f"))),
        "bearer": OpsServer(registry, "127.0.0.1", access=OpsAccess(
            "bearer", token=Secret("tok-9e4d"))),
        "wrong": OpsServer(registry, "127.0.0.1", access=OpsAccess(
            "bearer", token=Secret("tok-9e4d"))),
    }
    for server in servers.values():
        server.start()
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def test_prometheus_scrapes_protected_endpoints_with_its_own_auth_settings(
    prometheus_binary: str, protected_servers: dict[str, OpsServer],
) -> None:
    jobs = {
        "basic": {**targets(protected_servers["basic"].port),
                  "basic_auth": {"username": "prometheus", "password": "pw-2c1f"}},
        "bearer": {**targets(protected_servers["bearer"].port),
                   "authorization": {"type": "Bearer", "credentials": "tok-9e4d"}},
        "wrong": {**targets(protected_servers["wrong"].port),
                  "authorization": {"type": "Bearer", "credentials": "tok-wrong"}},
    }
    with running(Prometheus(jobs)) as prometheus:
        wait_for(lambda p=prometheus: len(p.values("up")) == 3, 30, "targets not scraped")
        assert prometheus.values("up") == {(("instance", f"127.0.0.1:{s.port}"), ("job", j)): v
                                           for j, s, v in (
                                               ("basic", protected_servers["basic"], 1.0),
                                               ("bearer", protected_servers["bearer"], 1.0),
                                               ("wrong", protected_servers["wrong"], 0.0))}
        assert prometheus.values("demo_scrapes_total") == {
            (("instance", f"127.0.0.1:{protected_servers[j].port}"), ("job", j)): 5.0
            for j in ("basic", "bearer")}
        errors = {t["labels"]["job"]: t["lastError"]
                  for t in prometheus.api("targets")["activeTargets"]}
        assert "401" in errors["wrong"] and errors["basic"] == errors["bearer"] == ""
