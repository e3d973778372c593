"""Settings from the environment: pass-through of librdkafka keys, secrets that never print."""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path

import pytest

from services.streaming.settings import (
    NO_BOOTSTRAP_HINT,
    KafkaSettings,
    LabelSinkSettings,
    ScorerSettings,
    Secret,
    SettingsError,
    describe,
    is_secret_key,
)

BASE = {"KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092,kafka-2:9092"}


def test_librdkafka_keys_pass_through_unchanged() -> None:
    env = BASE | {
        "ACTIVE_STREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "ACTIVE_STREAM_KAFKA_SASL_MECHANISMS": "SCRAM-SHA-512",
        "ACTIVE_STREAM_KAFKA_SASL_USERNAME": "scorer",
        "ACTIVE_STREAM_KAFKA_SASL_PASSWORD": "hunter2",
        "ACTIVE_STREAM_KAFKA_SSL_CA_LOCATION": "/etc/ca.pem",
        "KAFKA_HOME": "/opt/kafka",  # a Kafka install's variable must not become a client key
    }
    config = KafkaSettings.from_env(env).client()
    assert config == {
        "bootstrap.servers": "kafka-1:9092,kafka-2:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "scorer",
        "sasl.password": "hunter2",
        "ssl.ca.location": "/etc/ca.pem",
    }


def test_properties_file_keys_are_verbatim_and_env_wins(tmp_path: Path) -> None:
    props = tmp_path / "client.properties"
    props.write_text(
        "# comment\nbootstrap.servers=file-host:9092\nsasl.mechanisms=PLAIN\n"
        "sasl.password = from-file\n\nclient.id=from-file\n"
    )
    env = {"ACTIVE_STREAM_KAFKA_CONFIG_FILE": str(props),
           "ACTIVE_STREAM_KAFKA_CLIENT_ID": "from-env"}
    settings = KafkaSettings.from_env(env)
    assert settings.bootstrap_servers == "file-host:9092"
    assert settings.client() == {
        "bootstrap.servers": "file-host:9092",
        "sasl.mechanisms": "PLAIN",
        "sasl.password": "from-file",
        "client.id": "from-env",
    }
    assert KafkaSettings.from_env(env | BASE).bootstrap_servers == BASE["KAFKA_BOOTSTRAP_SERVERS"]


def test_unreadable_properties_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="ACTIVE_STREAM_KAFKA_CONFIG_FILE"):
        KafkaSettings.from_env({"ACTIVE_STREAM_KAFKA_CONFIG_FILE": str(tmp_path / "missing")})


@pytest.mark.parametrize("env", [{}, {"KAFKA_BOOTSTRAP_SERVERS": "  "}])
def test_missing_bootstrap_says_how_to_start_the_embedded_broker(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as info:
        KafkaSettings.from_env(env)
    assert str(info.value) == NO_BOOTSTRAP_HINT
    assert "active-stream broker" in NO_BOOTSTRAP_HINT and "\n" not in NO_BOOTSTRAP_HINT


def test_secrets_never_print(caplog: pytest.LogCaptureFixture) -> None:
    env = BASE | {
        "ACTIVE_STREAM_KAFKA_SASL_PASSWORD": "hunter2",
        "ACTIVE_STREAM_KAFKA_SSL_KEY_PASSWORD": "hunter3",
        "ACTIVE_STREAM_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET": "hunter4",
        "ACTIVE_STREAM_KAFKA_SSL_KEY_PEM": "-----BEGIN hunter5",
    }
    settings = ScorerSettings.from_env(env)
    shown = [repr(settings), str(settings), json.dumps(describe(settings), default=str)]
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings: %s", settings)
    shown.append(caplog.text)
    for text in shown:
        for secret in ("hunter2", "hunter3", "hunter4", "hunter5"):
            assert secret not in text
    assert settings.kafka.client()["ssl.key.pem"] == "-----BEGIN hunter5"
    assert isinstance(settings.kafka.client_config["sasl.password"], Secret)


def test_service_settings_are_frozen_and_typed() -> None:
    env = BASE | {
        "ACTIVE_STREAM_SCORER_BATCH_SIZE": "250",
        "ACTIVE_STREAM_SCORER_BATCH_TIMEOUT_S": "0.1",
        "ACTIVE_STREAM_SCORER_BATCH_LINGER_S": "0.02",
        "ACTIVE_STREAM_SCORER_PROCESSING_GUARANTEE": "exactly_once",
        "ACTIVE_STREAM_SCORER_GROUP_ID": "scorers-eu",
    }
    settings = ScorerSettings.from_env(env)
    assert (settings.batch_size, settings.batch_timeout_s, settings.batch_linger_s) == (
        250, 0.1, 0.02)
    assert (settings.processing_guarantee, settings.group_id) == ("exactly_once", "scorers-eu")
    with pytest.raises(AttributeError):
        settings.batch_size = 1  # type: ignore[misc]
    sink = LabelSinkSettings.from_env(BASE | {"ACTIVE_STREAM_LABEL_SINK_METRICS_PORT": "9400"})
    assert sink.metrics_port == 9400


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("ACTIVE_STREAM_SCORER_BATCH_SIZE", "lots", "expected int"),
        ("ACTIVE_STREAM_SCORER_BATCH_SIZE", "0", "expected an integer >= 1"),
        # librdkafka waits forever on a negative timeout; 0 spins the loop.
        ("ACTIVE_STREAM_SCORER_BATCH_TIMEOUT_S", "-1", "the timeout in (0, 3600]"),
        ("ACTIVE_STREAM_SCORER_BATCH_TIMEOUT_S", "0", "the timeout in (0, 3600]"),
        ("ACTIVE_STREAM_SCORER_BATCH_LINGER_S", "-0.1", "the linger in [0, 3600]"),
        ("ACTIVE_STREAM_SCORER_PROCESSING_GUARANTEE", "maybe", "at_least_once, exactly_once"),
        ("ACTIVE_STREAM_SCORER_POLICY", "{budget", "not JSON"),
        ("ACTIVE_STREAM_SCORER_POLICY", "[1]", "expected a JSON object"),
        ("ACTIVE_STREAM_SCORER_POLICY", '{"budget": {"share": 3}}', "policy.budget: share"),
        ("ACTIVE_STREAM_SCORER_POLICY", '{"budgets": {}}', "no field 'budgets'"),
        ("ACTIVE_STREAM_SCORER_POLICY", "@/nonexistent/policy.json", "cannot read"),
        ("ACTIVE_STREAM_SCORER_ON_OFFSET_REGRESSION", "ignore", "reset, stop"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        ScorerSettings.from_env(BASE | {name: value})
    assert name in str(info.value) and fragment in str(info.value)


def test_scorer_policy_from_json_or_file(tmp_path: Path) -> None:
    assert ScorerSettings.from_env(BASE).selector_policy().budget.share == 0.02  # the default
    inline = ScorerSettings.from_env(
        BASE | {"ACTIVE_STREAM_SCORER_POLICY": '{"budget": {"share": 0.05}, "mode": "threshold"}'})
    policy = inline.selector_policy()
    assert (policy.budget.share, policy.mode) == (0.05, "threshold")
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"budget": {"labels_per_hour": 300}}))
    from_file = ScorerSettings.from_env(BASE | {"ACTIVE_STREAM_SCORER_POLICY": f"@{path}"})
    assert from_file.selector_policy().budget.labels_per_hour == 300


def test_each_client_gets_only_the_properties_it_uses() -> None:
    """One ACTIVE_STREAM_KAFKA_* setting reaches every client of a service; a property a client
    ignores makes librdkafka print a CONFWARN line at every start, so `role` leaves it out.
    Overrides (the service's own choices) are never dropped."""
    import logging

    from confluent_kafka import Consumer, Producer

    kafka = KafkaSettings.from_env({
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "ACTIVE_STREAM_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "ACTIVE_STREAM_KAFKA_FETCH_WAIT_MAX_MS": "20",
        "ACTIVE_STREAM_KAFKA_LINGER_MS": "7",
        "ACTIVE_STREAM_KAFKA_SOCKET_TIMEOUT_MS": "5000",
    })
    producer = kafka.client({"enable.idempotence": True}, role="producer")
    consumer = kafka.client({"group.id": "g"}, role="consumer")
    assert "session.timeout.ms" not in producer and "fetch.wait.max.ms" not in producer
    assert producer["linger.ms"] == "7" and producer["enable.idempotence"] is True
    assert "linger.ms" not in consumer and consumer["session.timeout.ms"] == "6000"
    assert producer["socket.timeout.ms"] == consumer["socket.timeout.ms"] == "5000"
    assert "session.timeout.ms" in kafka.client()  # no role: everything, as before
    assert "session.timeout.ms" not in kafka.client(role="admin")

    warnings: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record.getMessage())

    log = logging.getLogger("test.librdkafka")
    log.addHandler(Catch())
    log.setLevel(logging.DEBUG)
    unfiltered = Producer({**kafka.client(), "logger": log})
    unfiltered.poll(0.1)  # a producer's log lines are served by poll()
    assert any("CONFWARN" in w for w in warnings), "librdkafka no longer warns: recheck the sets"
    warnings.clear()
    Producer({**producer, "logger": log}).poll(0.1)
    Consumer({**consumer, "logger": log}).close()
    assert not [w for w in warnings if "CONFWARN" in w], warnings


# Every librdkafka property whose name suggests it may concern credentials, and is not masked,
# with why it is safe to print. A property librdkafka adds later and that matches must be
# reviewed: masked (settings._SECRET_KEYS or a marker) or listed here.
_SENSITIVE_LOOKING = re.compile(
    r"pass|secret|token|key|cred|jaas|oauth|pem|private|assert|config|keytab|cert|kinit|user|"
    r"extension|auth|login|sasl|ssl|https")
_NOT_SECRET = {
    # file paths and public material
    "ssl.key.location", "ssl.certificate.location", "ssl.certificate.pem", "ssl_certificate",
    "ssl.ca.location", "ssl.ca.pem", "ssl_ca", "https.ca.location", "https.ca.pem",
    "ssl.crl.location",
    "ssl.ca.certificate.stores", "ssl.keystore.location", "sasl.kerberos.keytab",
    "sasl.oauthbearer.assertion.file", "sasl.oauthbearer.assertion.jwt.template.file",
    "ssl.engine.location", "ssl.providers",
    # switches, algorithms, names and claims
    "enable.ssl.certificate.verification", "ssl.certificate.verify_cb",
    "ssl.endpoint.identification.algorithm", "ssl.cipher.suites", "ssl.curves.list",
    "ssl.sigalgs.list", "ssl.engine.id", "ssl_engine_callback_data", "ssl.engine.callback_data",
    "enable.sasl.oauthbearer.unsecure.jwt", "enable_sasl_queue", "sasl.mechanisms",
    "sasl.mechanism", "sasl.kerberos.service.name", "sasl.kerberos.principal",
    "sasl.kerberos.min.time.before.relogin", "sasl.username", "sasl.oauthbearer.method",
    "sasl.oauthbearer.client.id", "sasl.oauthbearer.client.credentials.client.id",
    "sasl.oauthbearer.scope", "sasl.oauthbearer.sub.claim.name", "sasl.oauthbearer.grant.type",
    "sasl.oauthbearer.assertion.algorithm", "sasl.oauthbearer.assertion.claim.aud",
    "sasl.oauthbearer.assertion.claim.exp.seconds", "sasl.oauthbearer.assertion.claim.iss",
    "sasl.oauthbearer.assertion.claim.jti.include", "sasl.oauthbearer.assertion.claim.nbf.seconds",
    "sasl.oauthbearer.assertion.claim.sub", "sasl.oauthbearer.metadata.authentication.type",
    "oauthbearer_token_refresh_cb", "security.protocol",
    "ssl.protocol", "client.dns.lookup", "reconnect.backoff.jitter.ms",
}


def _librdkafka_properties() -> list[str]:
    """Every property name librdkafka knows (its own table, rd_kafka_conf_properties_show)."""
    import ctypes
    import glob
    import os

    import confluent_kafka

    found = glob.glob(os.path.join(os.path.dirname(confluent_kafka.__file__), os.pardir,
                                   "confluent_kafka.libs", "librdkafka*"))
    if not found:
        pytest.skip("the bundled librdkafka was not found")
    lib, libc = ctypes.CDLL(found[0]), ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_conf_properties_show.argtypes = [ctypes.c_void_p]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "properties.md")
        handle = libc.fopen(path.encode(), b"w")
        lib.rd_kafka_conf_properties_show(handle)
        libc.fclose(handle)
        rows = [line.split("|")[0].strip() for line in open(path) if "|" in line]
    names = [r for r in rows if r and r != "Property" and not r.startswith("-")]
    assert len(names) > 150, "the property table was not read"
    return names


def test_every_credential_bearing_librdkafka_property_is_masked() -> None:
    names = _librdkafka_properties()
    unreviewed = sorted(n for n in names if _SENSITIVE_LOOKING.search(n) and
                        not is_secret_key(n) and n not in _NOT_SECRET)
    assert unreviewed == [], "mask these or list them as not secret"
    for name in ("sasl.password", "sasl.oauthbearer.config", "sasl.oauthbearer.client.secret",
                 "sasl.oauthbearer.client.credentials.client.secret", "ssl.key.password",
                 "ssl.key.pem", "ssl.keystore.password", "sasl.oauthbearer.extensions",
                 "sasl.oauthbearer.assertion.private.key.passphrase",
                 "sasl.oauthbearer.assertion.private.key.pem", "sasl.kerberos.kinit.cmd"):
        assert name in names and is_secret_key(name), name
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092",
           "ACTIVE_STREAM_KAFKA_SASL_OAUTHBEARER_CONFIG": "principal=me token=hunter9"}
    described = str(describe(ScorerSettings.from_env(env)))
    assert "hunter9" not in described and "sasl.oauthbearer.config" in described


@pytest.mark.parametrize(("raw", "value"), [("true", True), ("1", True), ("yes", True),
                                            ("false", False), ("0", False), ("", False)])
def test_boolean_settings_read_words(raw: str, value: bool) -> None:
    env = {**BASE, "ACTIVE_STREAM_SCORER_DEAD_LETTER_REDACT": raw}
    assert ScorerSettings.from_env(env).dead_letter_redact is value


def test_a_boolean_setting_refuses_other_words() -> None:
    with pytest.raises(SettingsError, match="DEAD_LETTER_REDACT"):
        ScorerSettings.from_env({**BASE, "ACTIVE_STREAM_SCORER_DEAD_LETTER_REDACT": "maybe"})
