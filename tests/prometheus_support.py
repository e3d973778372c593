"""Prometheus for the tests: the binaries (Debian's `prometheus` package), a server the test owns,
the deploy files, the metric names the services export, and the names a PromQL expression uses.

A missing binary skips with the install command locally; with ACTIVE_STREAM_REQUIRE_PROMETHEUS=1
(set by CI) it fails instead, so CI always proves these tests ran.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from services.label_sink.metrics import LabelSinkMetrics
from services.scorer.metrics import ScorerMetrics
from services.streaming.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "active-stream.json"
SCORER_JOB, SINK_JOB = "active-stream-scorer", "active-stream-label-sink"

REQUIRE_ENV = "ACTIVE_STREAM_REQUIRE_PROMETHEUS"
INSTALL_HINT = ("install Debian's package: `sudo apt-get install prometheus` (it provides "
                "/usr/bin/prometheus and /usr/bin/promtool; `sudo systemctl disable --now "
                "prometheus` if you do not want its daemon), or put both on PATH")


def binary(name: str) -> str:
    """Path of `prometheus` or `promtool`; skips (fails under REQUIRE_ENV) when missing."""
    path = shutil.which(name)
    if path is None:
        why = f"{name} not found: {INSTALL_HINT}"
        if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
            pytest.fail(f"{REQUIRE_ENV} is set but {why}", pytrace=False)
        pytest.skip(why)
    return path


# -- what the services export ------------------------------------------------------------------

def exported() -> dict[str, frozenset[str]]:
    """Every series name the scorer and the label sink can expose, with its label names.
    Counters get `_total` (and `_created`), histograms `_bucket` (label `le`), `_sum`, `_count`
    and `_created`, as prometheus_client writes them. Label names come from the metric objects
    (children appear only once used, so a scrape of a fresh registry would miss them)."""
    out: dict[str, frozenset[str]] = {}
    for metrics in (ScorerMetrics(CollectorRegistry()), LabelSinkMetrics(CollectorRegistry())):
        for metric in vars(metrics).values():
            if not isinstance(metric, MetricWrapperBase):
                continue
            # prometheus_client keeps these as attributes of every metric since 0.4.
            name, kind = metric._name, metric._type  # noqa: SLF001
            labels = frozenset(metric._labelnames)  # noqa: SLF001
            if kind == "counter":
                suffixes = {"_total": labels, "_created": labels}
            elif kind == "histogram":
                suffixes = {"_bucket": labels | {"le"}, "_sum": labels, "_count": labels,
                            "_created": labels}
            else:
                suffixes = {"": labels}
            for suffix, names in suffixes.items():
                out[name + suffix] = names
    return out


# Series Prometheus makes itself, with their label names (besides job and instance).
PROMETHEUS_SERIES = {"up": frozenset(), "ALERTS": frozenset({"alertname", "alertstate"})}
TARGET_LABELS = frozenset({"job", "instance"})


# -- the names a PromQL expression uses --------------------------------------------------------

_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "offset", "bool", "inf", "nan", "sum", "min", "max", "avg", "count", "stddev", "stdvar",
    "topk", "bottomk", "quantile", "count_values", "group",
})
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_MATCHERS = re.compile(r"\{([^}]*)\}")
_MATCHER_NAME = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()")


@dataclass(frozen=True)
class Names:
    metrics: frozenset[str]
    labels: frozenset[str]


def names_in(expr: str) -> Names:
    """Metric names and label names (matchers and grouping clauses) an expression refers to.
    A tokenizer, not a parser: strings, range selectors and Grafana variables are dropped, and
    identifiers that are keywords, aggregations or function calls are not metric names."""
    matchers = " ".join(_MATCHERS.findall(expr))
    labels = set(_MATCHER_NAME.findall(_STRING.sub('""', matchers)))
    for group in _GROUPING.findall(expr):
        labels.update(n.strip() for n in group.split(",") if n.strip())
    rest = _STRING.sub(" ", expr)
    rest = _MATCHERS.sub(" ", rest)
    rest = _GROUPING.sub(" ", rest)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    rest = re.sub(r"\$\{?\w+\}?", " ", rest)
    metrics = {m for m in _IDENT.findall(rest) if m not in _KEYWORDS}
    return Names(frozenset(metrics), frozenset(labels))


# -- the deploy files ----------------------------------------------------------------------------

def alert_rules() -> list[dict[str, Any]]:
    """Every rule of deploy/prometheus/alerts.yml (alerting and recording)."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every query in the Grafana dashboard, nested rows included."""
    out: list[tuple[str, str]] = []

    def walk(node: Any, title: str) -> None:
        if isinstance(node, dict):
            title = node.get("title", title)
            if isinstance(node.get("expr"), str):
                out.append((title, node["expr"]))
            for value in node.values():
                walk(value, title)
        elif isinstance(node, list):
            for value in node:
                walk(value, title)

    walk(json.loads(DASHBOARD.read_text()), "")
    return out


def grafana_to_promql(expr: str, rate_interval: str = "1m") -> str:
    """A dashboard expression as Prometheus would receive it from Grafana."""
    for var in ("$__rate_interval", "$__interval", "$__range"):
        expr = expr.replace(var, rate_interval)
    return expr


# -- a Prometheus server the test owns -----------------------------------------------------------

class Prometheus:
    """`prometheus` on a free loopback port with its own config and data dir in a temp dir.
    `jobs`: job name -> scrape settings (targets, and e.g. basic_auth) merged into the job."""

    def __init__(self, jobs: dict[str, dict[str, Any]], *, rule_files: tuple[Path, ...] = (),
                 interval_s: int = 1) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        self.port = free_port()
        config = {
            # 1 s: the test sees a change within a few seconds instead of the default minute.
            "global": {"scrape_interval": f"{interval_s}s", "scrape_timeout": f"{interval_s}s",
                       "evaluation_interval": f"{interval_s}s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": name, **job} for name, job in jobs.items()],
        }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = self.dir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> Prometheus:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [binary("prometheus"), f"--config.file={self.dir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"prometheus did not become ready:\n{self.tail()}")
            time.sleep(0.2)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: str | list[str]) -> Any:
        """GET /api/v1/<path>; returns `data` of a success, raises on an error answer."""
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise PromQLError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's vector result (a scalar becomes one unlabelled sample)."""
        data = self.api("query", query=promql)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def values(self, promql: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Sample value by sorted labels (without __name__) of an instant query."""
        return {tuple(sorted((k, v) for k, v in s["metric"].items() if k != "__name__")):
                float(s["value"][1]) for s in self.query(promql)}

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, SIGKILL past `timeout_s`; idempotent. The data dir goes with it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir / "data", ignore_errors=True)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class PromQLError(AssertionError):
    """Prometheus answered an API call with an error (bad PromQL, unknown parameter)."""


@contextmanager
def running(prometheus: Prometheus) -> Iterator[Prometheus]:
    """Start it, and stop it however the block ends."""
    try:
        yield prometheus.start()
    finally:
        prometheus.stop()
