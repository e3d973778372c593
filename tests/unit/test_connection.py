"""One line for a cluster that refuses the scorer (services/streaming/connection.py)."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError

from services.streaming.connection import Errors, Report, explain

CONFIG = {"bootstrap.servers": "k:9093", "security.protocol": "SASL_SSL",
          "sasl.username": "scorer", "sasl.password": "s3cret-never-shown"}


def test_a_refused_password_settles_it_and_names_the_settings_not_the_secret() -> None:
    errors = Errors()
    errors(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    assert errors.settled is None  # a broker that is down may come back: keep trying
    errors(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: bad creds"))
    line = explain(errors.settled, CONFIG)
    assert "refused the credentials of SASL user 'scorer'" in line
    assert "_SASL_PASSWORD" in line and "s3cret" not in line


def test_a_tls_failure_points_at_the_ca() -> None:
    line = explain(Report(KafkaError._SSL, "certificate verify failed"), CONFIG)
    assert "SSL_CA_LOCATION" in line and "certificate verify failed" in line


def test_a_plaintext_client_hung_up_on_three_times_is_told_so() -> None:
    errors = Errors()
    log = errors.logger("test.librdkafka.hangup")
    hang_up = ("k:9093/bootstrap: Disconnected: connection closed by peer: receive 0 after "
               "POLLIN (after 5ms in state APIVERSION_QUERY)")
    for _ in range(2):
        log.info(hang_up)
    assert errors.settled is None  # a restarting broker hangs up once or twice
    log.info(hang_up)
    line = explain(errors.settled, {"bootstrap.servers": "k:9093"})
    assert "does not speak PLAINTEXT" in line and "SECURITY_PROTOCOL" in line
    log.removeHandler(errors)
    logging.getLogger("test.librdkafka.hangup").handlers.clear()


def test_no_report_at_all_says_where_it_tried() -> None:
    assert "no answer from k:9093" in explain(None, CONFIG)


FENCED = KafkaError(KafkaError._FATAL, "Fatal error: Broker: Static consumer fenced by other "
                    "consumer with same group.instance.id: OffsetCommit failed")


def test_a_fence_right_after_the_own_session_timed_out_is_a_self_fence() -> None:
    """A broker restart longer than the session: librdkafka rejoins under the same static id and
    the broker fences the old membership. That is SessionLost (the scorer rejoins in-process);
    a fence without a lost session is another process with the same id (InstanceReplaced)."""
    import pytest

    from services.scorer.errors import raise_if_replaced
    from services.scorer.service import InstanceReplaced, SessionLost

    errors = Errors()
    log = errors.logger("librdkafka.test-self-fence")
    try:
        with pytest.raises(InstanceReplaced) as other:
            raise_if_replaced(FENCED, errors)
        assert not isinstance(other.value, SessionLost)
        log.warning("SESSTMOUT [rdkafka#consumer-1] [thrd:main]: Consumer group session timed "
                    "out (in join-state steady) after 6005 ms")
        assert errors.session_lost_within(60)
        with pytest.raises(SessionLost):
            raise_if_replaced(FENCED, errors)
        raise_if_replaced(KafkaError(KafkaError._TRANSPORT), errors)  # not a fence
    finally:
        errors.detach("librdkafka.test-self-fence")
    assert errors not in logging.getLogger("librdkafka.test-self-fence").handlers
