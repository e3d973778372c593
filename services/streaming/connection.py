"""Why a librdkafka client cannot reach the cluster, in one line.

A wrong password, an unknown CA or a plaintext client on a TLS port make librdkafka retry for
as long as it is allowed and log a line each time; the caller only sees a timeout. `Errors`
watches what librdkafka reports (its `error_cb`, and its log, where the most telling hint -- a
plaintext client talking to a TLS listener -- only appears) and keeps the report that settles the
matter; `explain` turns it into a sentence naming the setting to check (never a secret's value).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

from confluent_kafka import KafkaError

_AUTH = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED})
# librdkafka's hint when a plaintext client meets a TLS listener (older versions), and what
# 2.16 logs instead: the broker hangs up while the client asks which API versions it speaks.
_PLAINTEXT_ON_TLS = "incorrect security.protocol"
_HUNG_UP_AT_HELLO = "in state APIVERSION_QUERY"


class Report(NamedTuple):
    code: int
    text: str


class Errors(logging.Handler):
    """librdkafka's `error_cb` and a log handler for its `logger`: remembers the last error and
    the first one no retry will fix (thread-safe)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)  # librdkafka logs its connection failures at INFO
        self._guard = threading.Lock()
        self.last: Report | None = None
        self.settled: Report | None = None
        self._hang_ups = 0  # a broker restarting can hang up once; a TLS listener always does

    def __call__(self, err: KafkaError) -> None:
        self._note(Report(err.code(), err.str()))

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if _PLAINTEXT_ON_TLS in text or (_HUNG_UP_AT_HELLO in text and "Disconnected" in text):
            self._note(Report(KafkaError._TRANSPORT, text))

    def _note(self, report: Report) -> None:
        with self._guard:
            self.last = report
            if _HUNG_UP_AT_HELLO in report.text:
                self._hang_ups += 1
            if self.settled is None and (report.code in _AUTH or report.code == KafkaError._SSL
                                         or _PLAINTEXT_ON_TLS in report.text
                                         or self._hang_ups >= 3):
                self.settled = report

    def logger(self, name: str) -> logging.Logger:
        """A logger for librdkafka's `logger` setting: its lines go to the service's log (as
        any other line) and through this handler."""
        log = logging.getLogger(name)
        if log.level == logging.NOTSET:
            log.setLevel(logging.INFO)  # its connection failures come at INFO
        if self not in log.handlers:
            log.addHandler(self)
        return log


def explain(report: Report | None, config: Mapping[str, Any]) -> str:
    """One line: what failed and which setting to look at."""
    where = config.get("bootstrap.servers", "?")
    if report is None:
        return f"no answer from {where} (is KAFKA_BOOTSTRAP_SERVERS right, is the broker up?)"
    protocol = str(config.get("security.protocol", "plaintext")).upper()
    if report.code in _AUTH:
        user = config.get("sasl.username", "?")
        return (f"{where} refused the credentials of SASL user {user!r} ({report.text}): check "
                "ACTIVE_STREAM_KAFKA_SASL_USERNAME, _SASL_PASSWORD and _SASL_MECHANISMS")
    if report.code == KafkaError._SSL:
        return (f"TLS with {where} failed ({report.text}): check that "
                "ACTIVE_STREAM_KAFKA_SSL_CA_LOCATION names the CA that signed the broker's "
                "certificate, and that the address is one the certificate names")
    if _PLAINTEXT_ON_TLS in report.text or (_HUNG_UP_AT_HELLO in report.text
                                            and "SSL" not in protocol):
        return (f"{where} does not speak {protocol}: it hung up at the first request, as a TLS "
                "listener does to a plaintext client; check ACTIVE_STREAM_KAFKA_SECURITY_PROTOCOL "
                "against the listener at that address")
    return f"cannot reach {where}: {report.text}"
