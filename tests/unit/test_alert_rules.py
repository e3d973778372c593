"""deploy/prometheus/alerts.yml under `promtool`: the file is valid, every alert fires on a
synthetic series that should trigger it and stays silent on a healthy one
(deploy/prometheus/alerts.test.yml), and every metric a rule reads is one the services export."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.prometheus_support import (
    ALERT_TESTS,
    ALERTS,
    alert_rules,
    binary,
)
from tests.unit.test_dashboard import unknown_names


def promtool_test(rules_text: str, tmp_path: Path,
                  only: str | None = None) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` of alerts.test.yml against `rules_text` as alerts.yml, without its
    annotations: promtool compares them verbatim, and the tests are about when alerts fire.
    `only`: keep just the test groups that check this alert (a faster run)."""
    doc = yaml.safe_load(rules_text)
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(doc))
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    if only is not None:
        tests["tests"] = [t for t in tests["tests"]
                          if any(c["alertname"] == only for c in t.get("alert_rule_test", []))]
    (tmp_path / "alerts.test.yml").write_text(yaml.safe_dump(tests))
    return subprocess.run([binary("promtool"), "test", "rules", "alerts.test.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_the_rule_file_and_its_templates_are_valid() -> None:
    out = subprocess.run([binary("promtool"), "check", "rules", str(ALERTS)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_fires_when_it_should_and_not_otherwise(tmp_path: Path) -> None:
    out = promtool_test(ALERTS.read_text(), tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_has_a_firing_case_and_a_silent_case() -> None:
    alerts = {rule["alert"] for rule in alert_rules() if "alert" in rule}
    fires: set[str] = set()
    silent: set[str] = set()
    for group in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for case in group.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    assert len(alerts) == 25
    assert alerts - fires == set(), "alerts never shown to fire"
    assert alerts - silent == set(), "alerts never shown to stay silent"
    assert (fires | silent) - alerts == set(), "tests of alerts that do not exist"


@pytest.mark.parametrize("alert, before, after", [
    # A threshold off by a factor: the 5% case no longer fires.
    ("ActiveStreamScorerDeadLettersRising", "> 0.01", "> 0.1"),
    # The healthy loop's 0.2% of dead letters now fires.
    ("ActiveStreamScorerDeadLettersRising", "> 0.01", "> 0.001"),
    # The rule as it was before its fix: the first invalid feedback after a start was missed.
    ("ActiveStreamScorerFeedbackInvalid", None,
     'sum(increase(scorer_feedback_invalid_total{job="active-stream-scorer"}[30m])) > 0'),
    # Grouped by instance, the scorer-wide alert would name no lane.
    ("ActiveStreamScorerBudgetExhausted", "sum by (lane)", "sum by (lane, instance)"),
    # Summed over classes, the drift alert would not say which class drifted.
    ("ActiveStreamScorerClassDrift", "sum by (model_id, class)", "sum"),
    # Summed over models, the stopping alert would not say which model to lower.
    ("ActiveStreamModelStoppingSignal", "max by (model_id, branch)", "max"),
    # Nor, without the branch, which branch raised it.
    ("ActiveStreamModelStoppingSignal", "max by (model_id, branch)", "max by (model_id)"),
    # Firing for as long as a class stays reopened: the class reopened hours ago fires again.
    ("ActiveStreamMasteredClassReopened", None,
     'max by (model_id, class) (label_sink_mastery_state{job="active-stream-label-sink",'
     ' state="reopened"}) == 1'),
    # Without the volume floor, half of a dozen decisions an hour fires.
    ("ActiveStreamConsensusEscalationsHigh", ">= 20", ">= 0"),
    # Summed over models, a busy agreeing model hides another's escalations.
    ("ActiveStreamConsensusEscalationsHigh", "sum by (model_id)", "sum"),
    # increase() alone misses the first control label (its series appears at 1).
    ("ActiveStreamControlArmSilent", None,
     'sum(increase(label_sink_label_records_total{job="active-stream-label-sink"}[6h])) > 200'
     ' and on () (sum(increase(label_sink_control_labels_total'
     '{job="active-stream-label-sink"}[6h])) or vector(0)) == 0'),
])
def test_a_wrong_rule_fails_the_promtool_tests(alert: str, before: str | None, after: str,
                                               tmp_path: Path) -> None:
    """The tests can fail: each mutation of a rule (`before` -> `after`; None replaces the
    whole expression) breaks at least one of its cases."""
    doc = yaml.safe_load(ALERTS.read_text())
    rule = next(r for g in doc["groups"] for r in g["rules"] if r.get("alert") == alert)
    if before is None:
        rule["expr"] = after
    else:
        assert before in rule["expr"], rule["expr"]
        rule["expr"] = rule["expr"].replace(before, after)
    out = promtool_test(yaml.safe_dump(doc), tmp_path, only=alert)
    assert out.returncode != 0 and alert in out.stdout + out.stderr


def test_every_metric_a_rule_reads_is_exported() -> None:
    exprs = [(rule.get("alert") or rule["record"], rule["expr"]) for rule in alert_rules()]
    assert len(exprs) == 25
    assert unknown_names(exprs) == []


@pytest.mark.parametrize("uncomment", [None, "basic_auth", "authorization"])
def test_the_compose_scrape_config_and_its_auth_examples_are_valid(uncomment: str | None,
                                                                   tmp_path: Path) -> None:
    """deploy/prometheus/prometheus.yml under `promtool check config`, its rule file pointed at
    the real one and, in turn, each commented scrape-auth example switched on."""
    text = (ALERTS.parent / "prometheus.yml").read_text()
    text = text.replace("/etc/prometheus/alerts.yml", str(ALERTS))
    if uncomment is not None:
        assert f"# {uncomment}:" in text
        text = text.replace(f"# {uncomment}:", f"{uncomment}:")
        for secret in ("scorer-password", "scorer-token"):
            (tmp_path / secret).write_text("s3cret\n")
            text = text.replace(f"/etc/prometheus/{secret}", str(tmp_path / secret))
    config = tmp_path / "prometheus.yml"
    config.write_text(text)
    out = subprocess.run([binary("promtool"), "check", "config", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    if uncomment is not None:
        job = yaml.safe_load(text)["scrape_configs"][0]
        assert uncomment in job
