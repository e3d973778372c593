"""A SASL_SSL listener for the development/test Apache Kafka (services/streaming/apache_kafka.py):
TLS from a throwaway CA made with openssl, SCRAM-SHA-512 users created when the storage is
formatted, and the standard KRaft authorizer with nothing allowed unless an ACL says so.

The plaintext listener stays beside it for the tests' own set-up: its principal (User:ANONYMOUS)
and the controller's are super users, so only clients of the SASL_SSL listener meet the ACLs.
The broker's certificate names 127.0.0.1 and localhost, so clients verify it with hostname
checking on (librdkafka's default), as in production.

Measured facts this follows: shared/research/apache-kafka-findings.md, "A secured broker".
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MECHANISM = "SCRAM-SHA-512"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


class TlsUnavailable(RuntimeError):
    """openssl is missing or failed; the message says which command."""


@dataclass(frozen=True)
class Security:
    """The secured listener's users (SCRAM-SHA-512 name -> password). `admin` is a super user."""

    users: Mapping[str, str] = field(default_factory=dict)
    admin: str = "admin"

    def format_args(self) -> list[str]:
        """`kafka-storage format` arguments that create the users."""
        args = []
        for name, password in self.users.items():
            args += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
        return args

    def properties(self, tls_dir: Path) -> dict[str, str]:
        """Broker settings of the SASL_SSL listener and the authorizer (listener addresses are
        the broker's)."""
        return {
            "sasl.enabled.mechanisms": MECHANISM,
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(tls_dir / "broker.pem"),
            "authorizer.class.name": AUTHORIZER,
            # The plaintext and controller listeners authenticate no one (ANONYMOUS).
            "super.users": f"User:{self.admin};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }


def client_config(bootstrap: str, user: str, password: str, ca: Path) -> dict[str, str]:
    """librdkafka settings of a client of the SASL_SSL listener."""
    return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_SSL",
            "sasl.mechanisms": MECHANISM, "sasl.username": user, "sasl.password": password,
            "ssl.ca.location": str(ca)}


def make_tls(directory: Path, names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Path:
    """A CA (`ca.pem`) and a broker key and certificate signed by it, the key in PKCS#8 and
    key + certificate + CA in one PEM file (`broker.pem`, Kafka's PEM keystore). Returns the
    CA's path. Raises TlsUnavailable when openssl fails."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TlsUnavailable("openssl is not on PATH: it makes the test broker's certificates")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (directory / n for n in
                                  ("ca.key", "ca.pem", "broker.key", "broker.csr", "broker.crt"))
    sans = ",".join(f"IP:{n}" if n[0].isdigit() else f"DNS:{n}" for n in names)
    ext = directory / "san.cnf"
    ext.write_text(f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    _run(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=active-stream test CA", "-keyout", str(ca_key), "-out", str(ca))
    _run(openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={names[0]}",
         "-keyout", str(key), "-out", str(csr))
    _run(openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))
    pkcs8 = subprocess.run([openssl, "pkcs8", "-topk8", "-nocrypt", "-in", str(key)],
                           capture_output=True, text=True, check=False)
    if pkcs8.returncode != 0:
        raise TlsUnavailable(f"openssl pkcs8 failed: {pkcs8.stderr.strip()}")
    (directory / "broker.pem").write_text(pkcs8.stdout + cert.read_text() + ca.read_text())
    return ca


def _run(openssl: str, *args: str) -> None:
    done = subprocess.run([openssl, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TlsUnavailable(f"openssl {args[0]} failed: {done.stderr.strip()}")
