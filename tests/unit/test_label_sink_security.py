"""The label sink's faust client gets the librdkafka security settings, or start-up stops."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from prometheus_client import CollectorRegistry

from services import cli
from services.label_sink.app import SinkStatus, build_app
from services.label_sink.metrics import LabelSinkMetrics
from services.label_sink.security import UnsupportedSecurity, faust_security
from services.streaming.settings import KafkaSettings, LabelSinkSettings, Secret, SettingsError

BASE = {"KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9093"}
KEY_PASSWORD = "hunter3"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed CA certificate and a client certificate whose key is encrypted."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    out = tmp_path_factory.mktemp("pki")
    files = {name: out / f"{name}.pem" for name in ("ca", "ca-key", "client", "client-key")}

    def make(cert: str, key: str, subject: str, *extra: str) -> None:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-days", "1",
                        "-subj", subject, "-keyout", str(files[key]), "-out", str(files[cert]),
                        *extra], check=True, capture_output=True)

    make("ca", "ca-key", "/CN=active-stream-test-ca", "-nodes")
    make("client", "client-key", "/CN=label-sink", "-passout", f"pass:{KEY_PASSWORD}")
    return files


def config(**keys: str) -> dict[str, str | Secret]:
    """librdkafka properties as KafkaSettings holds them (secrets wrapped)."""
    env = BASE | {f"ACTIVE_STREAM_KAFKA_{k.upper()}": v for k, v in keys.items()}
    return dict(KafkaSettings.from_env(env).client_config)


def aiokafka_kwargs(credentials: Any) -> dict[str, Any]:
    """What faust hands to aiokafka's consumer and producer for these credentials."""
    return dict(credentials_to_aiokafka_auth(credentials, None))


def test_no_security_keys_mean_plaintext() -> None:
    security = faust_security(config(client_id="sink", linger_ms="5"))
    assert security.credentials is None and security.unused == ()
    assert aiokafka_kwargs(None) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "scram-sha-512"])
def test_sasl_ssl_with_a_password_mechanism(mechanism: str, pki: dict[str, Path]) -> None:
    security = faust_security(config(security_protocol="sasl_ssl", sasl_mechanisms=mechanism,
                                     sasl_username="sink", sasl_password="hunter2",
                                     ssl_ca_location=str(pki["ca"])))
    assert isinstance(security.credentials, faust.SASLCredentials)
    kwargs = aiokafka_kwargs(security.credentials)
    context = kwargs.pop("ssl_context")
    assert kwargs == {"security_protocol": "SASL_SSL", "sasl_mechanism": mechanism.upper(),
                      "sasl_plain_username": "sink", "sasl_plain_password": "hunter2"}
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    cas = [dict(part[0] for part in ca["subject"]) for ca in context.get_ca_certs()]
    assert cas == [{"commonName": "active-stream-test-ca"}]  # ours, not the system store


def test_sasl_plaintext_has_no_tls_and_accepts_the_singular_alias() -> None:
    security = faust_security(config(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                                     sasl_username="sink", sasl_password="hunter2"))
    assert aiokafka_kwargs(security.credentials) == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "sink", "sasl_plain_password": "hunter2", "ssl_context": None}


def test_ssl_with_a_client_certificate_and_encrypted_key(pki: dict[str, Path]) -> None:
    keys = {"security_protocol": "SSL", "ssl_ca_location": str(pki["ca"]),
            "ssl_certificate_location": str(pki["client"]),
            "ssl_key_location": str(pki["client-key"])}
    security = faust_security(config(**keys, ssl_key_password=KEY_PASSWORD))
    assert isinstance(security.credentials, faust.SSLCredentials)
    kwargs = aiokafka_kwargs(security.credentials)
    assert kwargs["security_protocol"] == "SSL"
    assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    # The key password is really used: a wrong one cannot load the key.
    with pytest.raises(UnsupportedSecurity, match="ssl.certificate.location"):
        faust_security(config(**keys, ssl_key_password="wrong"))


def test_a_ca_directory_is_a_capath(tmp_path: Path) -> None:
    security = faust_security(config(security_protocol="SSL", ssl_ca_location=str(tmp_path)))
    assert "CA " + str(tmp_path) in str(security)


@pytest.mark.parametrize(
    ("keys", "check_hostname", "verify_mode"),
    [
        ({}, True, ssl.CERT_REQUIRED),  # librdkafka's defaults: verify, check the host name
        ({"ssl_endpoint_identification_algorithm": "none"}, False, ssl.CERT_REQUIRED),
        ({"enable_ssl_certificate_verification": "false"}, False, ssl.CERT_NONE),
    ],
)
def test_verification_settings(keys: dict[str, str], check_hostname: bool,
                               verify_mode: ssl.VerifyMode) -> None:
    security = faust_security(config(security_protocol="SSL", **keys))
    context = aiokafka_kwargs(security.credentials)["ssl_context"]
    assert (context.check_hostname, context.verify_mode) == (check_hostname, verify_mode)


def test_gssapi_is_librdkafkas_default_mechanism() -> None:
    security = faust_security(config(security_protocol="SASL_PLAINTEXT",
                                     sasl_kerberos_service_name="kafka-prod"), has_gssapi=True)
    kwargs = aiokafka_kwargs(security.credentials)
    assert (kwargs["sasl_mechanism"], kwargs["sasl_kerberos_service_name"]) == ("GSSAPI",
                                                                               "kafka-prod")
    with pytest.raises(UnsupportedSecurity, match="gssapi"):
        faust_security(config(security_protocol="SASL_PLAINTEXT"), has_gssapi=False)


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"security_protocol": "SASL_SSL", "sasl_mechanisms": "OAUTHBEARER"}, "sasl.mechanisms"),
        ({"security_protocol": "SASL_SSL", "sasl_oauthbearer_method": "oidc"},
         "sasl.oauthbearer.method"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_kerberos_keytab": "/k.tab"},
         "sasl.kerberos.keytab"),
        ({"security_protocol": "SSL", "ssl_keystore_location": "/k.p12"},
         "ssl.keystore.location"),
        ({"security_protocol": "SSL", "ssl_key_pem": "-----BEGIN"}, "ssl.key.pem"),
        ({"security_protocol": "SSL", "ssl_crl_location": "/crl.pem"}, "ssl.crl.location"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanisms": "PLAIN"}, "sasl.username"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanisms": "PLAIN", "sasl_mechanism": "GSSAPI",
          "sasl_username": "u", "sasl_password": "p"}, "sasl.mechanism"),
        ({"security_protocol": "KERBEROS"}, "security.protocol"),
        ({"security_protocol": "SSL", "ssl_ca_location": "/no/such/ca.pem"}, "ssl.ca.location"),
        ({"security_protocol": "SSL", "ssl_endpoint_identification_algorithm": "dns"},
         "ssl.endpoint.identification.algorithm"),
        ({"security_protocol": "SSL", "ssl_key_location": "/k.pem"}, "ssl.key.location"),
    ],
)
def test_what_faust_cannot_express_is_refused_in_one_line(keys: dict[str, str],
                                                          named: str) -> None:
    with pytest.raises(UnsupportedSecurity) as info:
        faust_security(config(**keys))
    message = str(info.value)
    assert message.startswith(named + " (ACTIVE_STREAM_KAFKA_") and "\n" not in message
    assert isinstance(info.value, SettingsError)


def test_keys_the_protocol_does_not_use_are_reported_not_dropped() -> None:
    security = faust_security(config(security_protocol="SASL_PLAINTEXT", sasl_mechanisms="PLAIN",
                                     sasl_username="u", sasl_password="p",
                                     ssl_ca_location="/etc/ca.pem"))
    assert security.unused == ("ssl.ca.location",)
    security = faust_security(config(sasl_username="u"))
    assert (security.credentials, security.unused) == (None, ("sasl.username",))


def test_secrets_never_print(pki: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    security = faust_security(config(
        security_protocol="SASL_SSL", sasl_mechanisms="SCRAM-SHA-512", sasl_username="sink",
        sasl_password="hunter2", ssl_ca_location=str(pki["ca"]),
        ssl_certificate_location=str(pki["client"]), ssl_key_location=str(pki["client-key"]),
        ssl_key_password=KEY_PASSWORD))
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("security %s / %r / %s", security, security,
                                       security.credentials)
    for text in (str(security), repr(security), repr(security.credentials), caplog.text):
        assert "hunter2" not in text and KEY_PASSWORD not in text
    assert "SCRAM-SHA-512 as user 'sink'" in str(security)
    with pytest.raises(UnsupportedSecurity) as info:
        faust_security(config(security_protocol="SSL", ssl_certificate_location=str(pki["client"]),
                              ssl_key_location=str(pki["client-key"]),
                              ssl_key_password="wrong-hunter4"))
    assert "hunter4" not in str(info.value)


def sink_app(env: dict[str, str]) -> faust.App:
    settings = LabelSinkSettings.from_env(BASE | env)
    return build_app(settings, LabelSinkMetrics(CollectorRegistry()), SinkStatus(),
                     partitions=4, on_crash=lambda exc: None)


def test_the_faust_app_gets_the_credentials() -> None:
    app = sink_app({"ACTIVE_STREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                    "ACTIVE_STREAM_KAFKA_SASL_MECHANISMS": "SCRAM-SHA-256",
                    "ACTIVE_STREAM_KAFKA_SASL_USERNAME": "sink",
                    "ACTIVE_STREAM_KAFKA_SASL_PASSWORD": "hunter2"})
    kwargs = aiokafka_kwargs(app.conf.broker_credentials)
    assert (kwargs["security_protocol"], kwargs["sasl_mechanism"]) == ("SASL_PLAINTEXT",
                                                                       "SCRAM-SHA-256")
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("sink", "hunter2")


@pytest.fixture
def _restore_root_logger() -> Iterator[None]:
    """The CLI configures the root logger; put it back for the tests that follow."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("_restore_root_logger")
def test_sink_start_up_stops_with_one_line_before_contacting_kafka(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # An unroutable bootstrap address: reaching the network would hang, not fail fast.
    for name, value in {"KAFKA_BOOTSTRAP_SERVERS": "192.0.2.1:9092",
                        "ACTIVE_STREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                        "ACTIVE_STREAM_KAFKA_SASL_MECHANISMS": "OAUTHBEARER"}.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["label-sink"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("active-stream: sasl.mechanisms (ACTIVE_STREAM_KAFKA_SASL_MECHANISMS)")
