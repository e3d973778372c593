"""The services on a secured Apache Kafka: TLS (a throwaway CA; hostname checking on, the
certificate names 127.0.0.1), SASL/SCRAM-SHA-512 users, and the authorizer allowing nothing but
ACLs. Each service runs as its own user with only the ACLs `active-stream acls` gives it.

- The closed loop (scorer, both guarantees, and label sink) works with exactly those ACLs.
- An ACL taken away holds the scorer, not ready and saying which permission on which resource,
  nothing committed past what it could deliver; given back, it resumes by itself and the output
  is the uninterrupted run's.
- A wrong password, an unknown CA, a plaintext client on the TLS port: one line each, fast.
- No secret in any log, in `active-stream config`, on /metrics or in a dead letter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from services.streaming import acls
from services.streaming.apache_kafka import ApacheKafka
from services.streaming.kafka_security import make_tls
from services.streaming.settings import ScorerSettings
from tests.conftest import add_scram_user
from tests.integration.end_offsets import true_end_offsets
from tests.integration.kafka_support import (
    ServiceProcess,
    http_get,
    metric,
    produce,
    read_all,
    wait_for,
)
from tests.integration.label_sink_support import label
from tests.integration.scorer_support import (
    assert_same_requests_as_reference,
    committed,
    private_loop,
    progress,
    reference_requests,
)
from tests.synthetic_events import inference_events

pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
INPUT = "al.inference-events.v1"
REQUESTS = "al.annotation-requests.v1"


def secured_env(kafka: ApacheKafka, user: str, password: str,
                ca: Path | None = None) -> dict[str, str]:
    return {"KAFKA_BOOTSTRAP_SERVERS": kafka.secure_bootstrap,
            "ACTIVE_STREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "ACTIVE_STREAM_KAFKA_SASL_MECHANISMS": "SCRAM-SHA-512",
            "ACTIVE_STREAM_KAFKA_SASL_USERNAME": user,
            "ACTIVE_STREAM_KAFKA_SASL_PASSWORD": password,
            "ACTIVE_STREAM_KAFKA_SSL_CA_LOCATION": str(ca or kafka.ca_location),
            "ACTIVE_STREAM_LOG_FORMAT": "json"}


def scorer_env(kafka: ApacheKafka, prefix: str, user: str, password: str,
               **settings: str) -> dict[str, str]:
    env = {**secured_env(kafka, user, password),
           "ACTIVE_STREAM_SCORER_GROUP_ID": f"g-{prefix}",
           "ACTIVE_STREAM_SCORER_TOPIC_PREFIX": prefix,
           "ACTIVE_STREAM_SCORER_INSTANCE_ID": f"i-{prefix}",
           "ACTIVE_STREAM_SCORER_METRICS_HOST": "127.0.0.1",
           "ACTIVE_STREAM_SCORER_BATCH_TIMEOUT_S": "0.2",
           "ACTIVE_STREAM_KAFKA_SESSION_TIMEOUT_MS": "6000"}
    env.update({f"ACTIVE_STREAM_SCORER_{k.upper()}": v for k, v in settings.items()})
    return env


def user(kafka: ApacheKafka, role: str) -> tuple[str, str]:
    """A fresh SCRAM user (name, password) for this test."""
    name, password = f"{role}-{uuid.uuid4().hex[:6]}", f"pw-{uuid.uuid4().hex}"
    add_scram_user(kafka, name, password)
    return name, password


def grant(kafka: ApacheKafka, service: str, env: dict[str, str], principal: str,
          revoke: bool = False) -> str:
    """`active-stream acls SERVICE --apply` (or --revoke) as an operator would run it, over the
    plaintext listener (whose clients are the suite's super users)."""
    cli_env = {k: v for k, v in {**os.environ, **env}.items()
               if not k.startswith("ACTIVE_STREAM_KAFKA_")}
    cli_env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap
    done = subprocess.run([sys.executable, "-m", "services.cli", "acls", service, "--principal",
                           principal, "--revoke" if revoke else "--apply"], cwd=ROOT,
                          env=cli_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def started(command: str, env: dict[str, str], port_var: str) -> ServiceProcess:
    return ServiceProcess(command, env, port_var).start()


def ready(proc: ServiceProcess) -> tuple[int, str]:
    try:
        return http_get(proc.port, "/readyz")
    except OSError:
        return 0, "not serving"


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_the_loop_runs_over_sasl_ssl_with_only_its_own_acls(kafka: ApacheKafka,
                                                            guarantee: str) -> None:
    prefix = private_loop(kafka.bootstrap, partitions=2)
    scorer_user, scorer_pw = user(kafka, "scorer")
    sink_user, sink_pw = user(kafka, "sink")
    env = scorer_env(kafka, prefix, scorer_user, scorer_pw, processing_guarantee=guarantee)
    printed = grant(kafka, "scorer", env, f"User:{scorer_user}")
    assert f"User:{scorer_user}" in printed and "created" in printed
    sink_env = {**secured_env(kafka, sink_user, sink_pw),
                "ACTIVE_STREAM_LABEL_SINK_APP_ID": f"sink-{prefix}",
                "ACTIVE_STREAM_LABEL_SINK_TOPIC_PREFIX": prefix,
                "ACTIVE_STREAM_LABEL_SINK_METRICS_HOST": "127.0.0.1",
                "ACTIVE_STREAM_LABEL_SINK_TRIGGER_MIN_LABELS": "10",
                "ACTIVE_STREAM_LABEL_SINK_SESSION_TIMEOUT_S": "6",
                "ACTIVE_STREAM_LABEL_SINK_HEARTBEAT_INTERVAL_S": "1",
                "ACTIVE_STREAM_LABEL_SINK_DATA_DIR": tempfile.mkdtemp(prefix="sink-")}
    grant(kafka, "label-sink", sink_env, f"User:{sink_user}")
    topic = prefix + INPUT
    good = inference_events(3000, seed=61)
    produce(kafka.bootstrap, topic, good[:1000] + [(b"bad", b'{"not": "an event"}')] + good[1000:])
    ends = true_end_offsets({"bootstrap.servers": kafka.bootstrap}, topic, [0, 1])
    scorer = started("scorer", env, "ACTIVE_STREAM_SCORER_METRICS_PORT")
    sink = started("label-sink", sink_env, "ACTIVE_STREAM_LABEL_SINK_METRICS_PORT")
    try:
        scorer.wait_ready(60)
        sink.wait_ready(90)
        wait_for(lambda: progress(kafka.bootstrap, f"g-{prefix}", topic, ends) >= 1.0, 120,
                 f"the scorer did not finish over SASL_SSL; log:\n{scorer.tail()}")
        requests = [orjson.loads(m.value()) for m in read_all(kafka.bootstrap, prefix + REQUESTS)]
        produce(kafka.bootstrap, prefix + "al.labels.v1", [
            (r["asset_id"].encode(), label(f"l-{r['request_id']}", ["c1"],
                                           at=r["event_timestamp"] + 1,
                                           request_id=r["request_id"], asset_id=r["asset_id"]))
            for r in requests[:20]])
        wait_for(lambda: metric(sink.metrics(), "label_sink_joined_labels_total") >= 20, 90,
                 f"the sink did not count over SASL_SSL; log:\n{sink.tail()}")
        metrics_text = http_get(scorer.port, "/metrics")[1] + http_get(sink.port, "/metrics")[1]
        triggers = metric(sink.metrics(), "label_sink_triggers_total", rule="label_count")
    finally:
        scorer_code, sink_code = scorer.stop(), sink.stop()
    assert (scorer_code, sink_code) == (0, 0), (scorer.tail(), sink.tail())
    assert triggers == 2
    produced = [m.value() for m in read_all(kafka.bootstrap, prefix + REQUESTS)]
    expected = reference_requests(kafka.bootstrap, prefix, 2)
    if guarantee == "exactly_once":
        assert Counter(produced) == Counter(expected)
    else:
        assert_same_requests_as_reference(produced, expected)
    letters = read_all(kafka.bootstrap, prefix + INPUT + ".dlq")
    assert [m.key() for m in letters] == [b"bad"]
    config = subprocess.run([sys.executable, "-m", "services.cli", "config", "scorer"], cwd=ROOT,
                            env={**os.environ, **env}, capture_output=True, text=True,
                            timeout=60).stdout
    assert scorer_user in config  # the settings are there, the password is not
    outputs = {"scorer log": scorer.log.read_text(), "sink log": sink.log.read_text(),
               "config": config, "metrics": metrics_text,
               "dead letters": b"".join(m.value() for m in letters).decode()}
    for name, text in outputs.items():
        for secret in (scorer_pw, sink_pw):
            assert secret not in text, f"a password in the {name}"


def test_a_missing_acl_holds_the_scorer_until_it_is_given_back(kafka: ApacheKafka) -> None:
    prefix = private_loop(kafka.bootstrap, partitions=1)
    name, password = user(kafka, "scorer")
    env = scorer_env(kafka, prefix, name, password, batch_size="200")
    grant(kafka, "scorer", env, f"User:{name}")
    topic, requests_topic = prefix + INPUT, prefix + REQUESTS
    events = inference_events(6000, seed=62, dt=0.1)
    produce(kafka.bootstrap, topic, events[:2000])
    scorer = started("scorer", env, "ACTIVE_STREAM_SCORER_METRICS_PORT")
    try:
        scorer.wait_ready(60)
        first = true_end_offsets({"bootstrap.servers": kafka.bootstrap}, topic, [0])
        wait_for(lambda: progress(kafka.bootstrap, f"g-{prefix}", topic, first) >= 1.0, 60,
                 "first part not processed")
        write_requests = [a for a in acls.scorer_acls(ScorerSettings.from_env(env),
                                                      f"User:{name}")
                          if a.name == requests_topic and a.operation == "write"]
        admin_plain = AdminClient({"bootstrap.servers": kafka.bootstrap})
        acls.revoke(admin_plain, write_requests)
        produce(kafka.bootstrap, topic, events[2000:4000])
        status, why = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(ready(scorer)),
                               60, f"the scorer stayed ready; log:\n{scorer.tail()}")
        assert "not authorized to WRITE to topic " + requests_topic in why, why
        assert scorer.alive()
        held_at = committed(kafka.bootstrap, f"g-{prefix}", topic, 1)[0]
        assert held_at <= first[0] + 200  # nothing committed past the refused output
        acls.apply(admin_plain, write_requests)
        produce(kafka.bootstrap, topic, events[4000:])
        ends = true_end_offsets({"bootstrap.servers": kafka.bootstrap}, topic, [0])
        wait_for(lambda: progress(kafka.bootstrap, f"g-{prefix}", topic, ends) >= 1.0, 90,
                 f"the scorer did not resume by itself; log:\n{scorer.tail()}")
        wait_for(lambda: ready(scorer)[0] == 200, 30, "not ready again")
        holds = metric(scorer.metrics(), "scorer_holds_total")
    finally:
        code = scorer.stop()
    assert code == 0, scorer.tail()
    assert holds >= 1
    assert "Traceback" not in scorer.log.read_text()
    produced = [m.value() for m in read_all(kafka.bootstrap, requests_topic)]
    assert_same_requests_as_reference(produced, reference_requests(kafka.bootstrap, prefix, 1))


def test_refused_credentials_and_certificates_are_one_line(kafka: ApacheKafka,
                                                         tmp_path: Path) -> None:
    prefix = private_loop(kafka.bootstrap, partitions=1)
    name, password = user(kafka, "scorer")
    other_ca = make_tls(tmp_path / "other")  # a CA that did not sign the broker's certificate
    cases = {
        "wrong password": (scorer_env(kafka, prefix, name, "not-" + password),
                           "refused the credentials of SASL user"),
        "unknown CA": ({**scorer_env(kafka, prefix, name, password),
                        "ACTIVE_STREAM_KAFKA_SSL_CA_LOCATION": str(other_ca)},
                       "TLS with"),
        "plaintext on the TLS port": ({**scorer_env(kafka, prefix, name, password),
                                       "ACTIVE_STREAM_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
                                      "does not speak PLAINTEXT"),
    }
    for case, (env, expected) in cases.items():
        done = subprocess.run([sys.executable, "-m", "services.cli", "scorer"], cwd=ROOT,
                              env={**os.environ, **env}, capture_output=True, text=True,
                              timeout=120)
        ours = [line for line in done.stderr.splitlines() if line.startswith("active-stream:")]
        assert done.returncode == 2, (case, done.stderr[-2000:])
        assert len(ours) == 1 and expected in ours[0], (case, ours)
        assert "Traceback" not in done.stderr, case
        assert password not in done.stdout + done.stderr, case
