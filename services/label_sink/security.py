"""Kafka security for the faust client: librdkafka SASL/SSL properties -> faust broker_credentials.

The scorer hands `ACTIVE_STREAM_KAFKA_*` properties to librdkafka unchanged; faust (aiokafka)
takes a credentials object instead. `faust_security` translates the librdkafka security keys
(`security.protocol`, `sasl.*`, `ssl.*`, `enable.ssl.certificate.verification`) into one, with
librdkafka's defaults. A key it cannot translate raises `UnsupportedSecurity` (one line naming the
key), so the sink refuses to start rather than connect with weaker security than configured. Keys
librdkafka itself would ignore under the chosen protocol (say `sasl.username` with `SSL`) are
returned in `unused`, for the caller to log.

Secrets (`sasl.password`, `ssl.key.password`) arrive as `Secret` and are revealed only into the
faust/ssl objects that need them; `FaustSecurity` prints no secret.
"""

from __future__ import annotations

import importlib.util
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

import faust
from faust.types.auth import CredentialsT

from services.streaming.settings import KAFKA_PREFIX, Secret, SettingsError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

# Keys we translate, by the protocols that use them.
_PROTOCOL_KEYS = {"security.protocol"}
_SASL_KEYS = {"sasl.mechanisms", "sasl.mechanism", "sasl.username", "sasl.password",
              "sasl.kerberos.service.name"}
_SSL_KEYS = {"ssl.ca.location", "ssl.ca.pem", "ssl.certificate.location", "ssl.key.location",
             "ssl.key.password", "ssl.endpoint.identification.algorithm",
             "enable.ssl.certificate.verification", "ssl.cipher.suites"}
# Why a security key we do not translate cannot be, and what to do instead (first match wins).
_UNSUPPORTED_HINTS = (
    ("sasl.oauthbearer.", "OAUTHBEARER is not supported by the label sink (faust needs a token "
                          "provider object); use SCRAM or PLAIN"),
    ("sasl.kerberos.", "aiokafka takes Kerberos credentials from the ticket cache: run kinit "
                       "or set KRB5CCNAME / KRB5_CLIENT_KTNAME in the sink's environment"),
    ("ssl.keystore.", "convert the PKCS#12 keystore to PEM files and set "
                      "ssl.certificate.location / ssl.key.location"),
    ("ssl.certificate.pem", "write the certificate to a file and set ssl.certificate.location"),
    ("ssl.key.pem", "write the key to a file and set ssl.key.location"),
)


class UnsupportedSecurity(SettingsError):
    """A security property the faust client cannot apply; the message names the key."""


def is_security_key(key: str) -> bool:
    """True for librdkafka properties that decide how a client authenticates or encrypts."""
    return key.startswith(("security.", "sasl.", "ssl.")) or key == (
        "enable.ssl.certificate.verification")


@dataclass(frozen=True)
class FaustSecurity:
    """What the faust app gets: `credentials` for `broker_credentials` (None = PLAINTEXT)."""

    protocol: str
    mechanism: str | None = None
    credentials: CredentialsT | None = field(default=None, repr=False, compare=False)
    # Security keys that are set but unused under `protocol` (as librdkafka ignores them).
    unused: tuple[str, ...] = ()
    summary: str = "PLAINTEXT"

    def __str__(self) -> str:
        return self.summary


def faust_security(
    config: Mapping[str, str | Secret], *, has_gssapi: bool | None = None
) -> FaustSecurity:
    """Translate the librdkafka security keys of `config`; other keys are not looked at.

    Reads the certificate/key files named by `ssl.*.location` (SSL protocols only). Raises
    UnsupportedSecurity for a key or value faust cannot express, or a file that does not load.
    `has_gssapi` (default: whether the `gssapi` package is importable) gates GSSAPI."""
    keys = {k for k in config if is_security_key(k)}
    unsupported = sorted(keys - _PROTOCOL_KEYS - _SASL_KEYS - _SSL_KEYS)
    if unsupported:
        raise UnsupportedSecurity(_cannot(unsupported[0], _hint(unsupported[0])))
    protocol = _text(config, "security.protocol", "PLAINTEXT").upper()
    if protocol not in PROTOCOLS:
        raise UnsupportedSecurity(_cannot("security.protocol", f"expected one of "
                                          f"{', '.join(PROTOCOLS)}, got {protocol!r}"))
    uses_sasl, uses_ssl = protocol.startswith("SASL_"), protocol.endswith("SSL")
    used = (_PROTOCOL_KEYS | (_SASL_KEYS if uses_sasl else set())
            | (_SSL_KEYS if uses_ssl else set()))
    unused = tuple(sorted(keys - used))
    context, ssl_note = _ssl_context(config) if uses_ssl else (None, "")
    if not uses_sasl:
        credentials: CredentialsT | None = (
            faust.SSLCredentials(context) if context is not None else None)
        return FaustSecurity(protocol, None, credentials, unused, protocol + ssl_note)
    mechanism, credentials, who = _sasl(config, context, has_gssapi)
    return FaustSecurity(protocol, mechanism, credentials, unused,
                         f"{protocol}, {mechanism}{who}{ssl_note}")


def _sasl(config: Mapping[str, str | Secret], context: ssl.SSLContext | None,
          has_gssapi: bool | None) -> tuple[str, CredentialsT, str]:
    plural, singular = config.get("sasl.mechanisms"), config.get("sasl.mechanism")
    if plural is not None and singular is not None and str(plural) != str(singular):
        raise UnsupportedSecurity(_cannot("sasl.mechanism",
                                          "differs from sasl.mechanisms; set one"))
    # librdkafka's default mechanism is GSSAPI.
    mechanism = str(plural if plural is not None else singular or "GSSAPI").strip().upper()
    if mechanism in PASSWORD_MECHANISMS:
        username, password = config.get("sasl.username"), config.get("sasl.password")
        if not username or not password:
            raise UnsupportedSecurity(_cannot("sasl.username", f"{mechanism} needs both "
                                              "sasl.username and sasl.password"))
        credentials: CredentialsT = faust.SASLCredentials(
            username=_reveal(username), password=_reveal(password), ssl_context=context,
            mechanism=mechanism)
        return mechanism, credentials, f" as user {_reveal(username)!r}"
    if mechanism == "GSSAPI":
        if has_gssapi is None:
            has_gssapi = importlib.util.find_spec("gssapi") is not None
        if not has_gssapi:
            raise UnsupportedSecurity(_cannot("sasl.mechanisms", "GSSAPI needs the python "
                                              "package `gssapi`, which is not installed"))
        service = _text(config, "sasl.kerberos.service.name", "kafka")
        return mechanism, faust.GSSAPICredentials(kerberos_service_name=service,
                                                  ssl_context=context), f" for service {service!r}"
    hint = _hint("sasl.oauthbearer.") if mechanism == "OAUTHBEARER" else (
        f"expected one of {', '.join((*PASSWORD_MECHANISMS, 'GSSAPI'))}, got {mechanism!r}")
    raise UnsupportedSecurity(_cannot("sasl.mechanisms", hint))


def _ssl_context(config: Mapping[str, str | Secret]) -> tuple[ssl.SSLContext, str]:
    """The client TLS context librdkafka would build, and a printable note about it."""
    ca = _text(config, "ssl.ca.location", "")
    ca_pem = _text(config, "ssl.ca.pem", "") or None
    cafile = capath = None
    if ca and ca != "probe":  # "probe": librdkafka searches the usual paths, as the default does
        if os.path.isdir(ca):
            capath = ca
        else:
            cafile = ca
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile,
                                             capath=capath, cadata=ca_pem)
    except (OSError, ssl.SSLError) as exc:
        raise UnsupportedSecurity(_cannot("ssl.ca.location", f"cannot load {ca}: {exc}")) from None
    note = f", CA {ca}" if ca else ", CA pem" if ca_pem else ", system CAs"
    cert, key = _text(config, "ssl.certificate.location", ""), _text(config, "ssl.key.location", "")
    if key and not cert:
        raise UnsupportedSecurity(_cannot("ssl.key.location", "needs ssl.certificate.location"))
    if cert:
        password = config.get("ssl.key.password")
        try:
            context.load_cert_chain(cert, key or None, _reveal(password) if password else None)
        except (OSError, ssl.SSLError) as exc:
            # The reason never contains the password: ssl reports only what failed.
            raise UnsupportedSecurity(_cannot("ssl.certificate.location",
                                              f"cannot load {cert} / {key or cert}: {exc}")
                                      ) from None
        note += f", client certificate {cert}"
    algorithm = _text(config, "ssl.endpoint.identification.algorithm", "https").lower()
    if algorithm not in ("https", "none"):
        raise UnsupportedSecurity(_cannot("ssl.endpoint.identification.algorithm",
                                          f"expected https or none, got {algorithm!r}"))
    verify = _flag(config, "enable.ssl.certificate.verification", True)
    context.check_hostname = verify and algorithm == "https"
    if not verify:
        context.verify_mode = ssl.CERT_NONE
    ciphers = _text(config, "ssl.cipher.suites", "")
    if ciphers:
        try:
            context.set_ciphers(ciphers)
        except ssl.SSLError:
            raise UnsupportedSecurity(_cannot("ssl.cipher.suites",
                                              f"no cipher matches {ciphers!r}")) from None
    note += ", " + ("hostname checked" if context.check_hostname else
                    "hostname NOT checked" if verify else "certificate NOT verified")
    return context, note


def _flag(config: Mapping[str, str | Secret], key: str, default: bool) -> bool:
    value = _text(config, key, str(default)).lower()
    if value not in ("true", "false", "1", "0"):
        raise UnsupportedSecurity(_cannot(key, f"expected true or false, got {value!r}"))
    return value in ("true", "1")


def _text(config: Mapping[str, str | Secret], key: str, default: str) -> str:
    value = config.get(key)
    return default if value is None else _reveal(value).strip()


def _reveal(value: str | Secret) -> str:
    return value.reveal() if isinstance(value, Secret) else value


def _hint(key: str) -> str:
    for prefix, hint in _UNSUPPORTED_HINTS:
        if key.startswith(prefix):
            return hint
    return "the label sink's Kafka client (faust/aiokafka) has no equivalent"


def _cannot(key: str, reason: str) -> str:
    variable = KAFKA_PREFIX + key.upper().replace(".", "_")
    return f"{key} ({variable}): cannot apply to the label sink: {reason}"
