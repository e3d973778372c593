"""Access to the ops endpoints over real sockets: the open default, basic auth, a bearer token,
loopback binding, the secrets kept out of `active-stream config`, and slow clients bounded by
the read timeout and the connection cap."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from prometheus_client import CollectorRegistry, Counter

from services.streaming.ops import OpsAccess, OpsServer
from services.streaming.settings import LabelSinkSettings, ScorerSettings, Secret, SettingsError
from tests.integration.kafka_support import wait_for

PATHS = ("/metrics", "/healthz", "/readyz")
BASE_ENV = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
PASSWORD = "pw-7f3a9c1e-never-printed"
TOKEN = "tok-2b8d4e6f-never-printed"


def get(port: int, path: str, authorization: str | None = None,
        host: str = "127.0.0.1") -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(f"http://{host}:{port}{path}")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@contextmanager
def serving(access: OpsAccess | None = None, host: str = "127.0.0.1",
            **options: float) -> Iterator[OpsServer]:
    registry = CollectorRegistry()
    Counter("demo_events_consumed_total", "Events consumed.", registry=registry).inc(3)
    server = OpsServer(registry, host, 0, access=access, **options).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


def scorer_access(**env: str) -> OpsAccess:
    variables = {f"ACTIVE_STREAM_SCORER_{k.upper()}": v for k, v in env.items()}
    return OpsAccess.of(ScorerSettings.from_env(BASE_ENV | variables))


def test_the_default_is_open_on_every_interface_and_documented_as_such() -> None:
    for settings in (ScorerSettings.from_env(BASE_ENV), LabelSinkSettings.from_env(BASE_ENV)):
        assert (settings.metrics_host, settings.metrics_auth) == ("0.0.0.0", "none")
        assert OpsAccess.of(settings) == OpsAccess()
    with serving(OpsAccess.of(ScorerSettings.from_env(BASE_ENV))) as server:
        for path in PATHS:
            assert get(server.port, path)[0] == 200, path
    readme = open(os.path.join(os.path.dirname(__file__), "../../README.md")).read()
    assert "ACTIVE_STREAM_SCORER_METRICS_AUTH" in readme


def test_basic_auth_refuses_without_or_with_wrong_credentials() -> None:
    access = scorer_access(metrics_auth="basic", metrics_user="prometheus",
                           metrics_password=PASSWORD)
    with serving(access) as server:
        for path in PATHS:
            status, headers, _ = get(server.port, path)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Basic"), path
            for wrong in (basic("prometheus", "nope"), basic("grafana", PASSWORD),
                          basic("prometheus", PASSWORD + "x"), "Basic !!!not-base64",
                          "Basic " + base64.b64encode(b"no-colon").decode(),
                          f"Bearer {PASSWORD}", PASSWORD):
                assert get(server.port, path, wrong)[0] == 401, (path, wrong)
            assert get(server.port, path, basic("prometheus", PASSWORD))[0] == 200, path
        status, _, body = get(server.port, "/metrics", basic("prometheus", PASSWORD))
        assert "demo_events_consumed_total 3.0" in body
        assert get(server.port, "/nope", basic("prometheus", PASSWORD))[0] == 404


def test_bearer_token_refuses_without_or_with_a_wrong_token() -> None:
    with serving(scorer_access(metrics_auth="bearer", metrics_token=TOKEN)) as server:
        for path in PATHS:
            status, headers, _ = get(server.port, path)
            assert status == 401 and headers["WWW-Authenticate"] == "Bearer", path
            for wrong in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer ",
                          basic("x", TOKEN), TOKEN):
                assert get(server.port, path, wrong)[0] == 401, (path, wrong)
            assert get(server.port, path, f"Bearer {TOKEN}")[0] == 200, path
            assert get(server.port, path, f"bearer {TOKEN}")[0] == 200, path


def test_scope_metrics_leaves_the_probes_open() -> None:
    access = scorer_access(metrics_auth="bearer", metrics_token=TOKEN,
                           metrics_auth_scope="metrics")
    with serving(access) as server:
        assert get(server.port, "/metrics")[0] == 401
        assert get(server.port, "/metrics", f"Bearer {TOKEN}")[0] == 200
        assert get(server.port, "/healthz")[0] == 200
        assert get(server.port, "/readyz")[0] == 200


def test_bound_to_loopback_it_is_not_reachable_on_another_address() -> None:
    # All of 127/8 is loopback on Linux: a server bound to 127.0.0.1 alone refuses 127.0.0.2,
    # while one bound to every interface (the control) answers there.
    with serving(host="0.0.0.0") as server:
        assert get(server.port, "/healthz", host="127.0.0.2")[0] == 200
    with serving(host="127.0.0.1") as server:
        assert get(server.port, "/healthz")[0] == 200
        with pytest.raises(urllib.error.URLError):
            get(server.port, "/healthz", host="127.0.0.2")


@pytest.mark.parametrize("env, names", [
    ({"METRICS_AUTH": "digest"}, ["METRICS_AUTH"]),
    ({"METRICS_AUTH_SCOPE": "probes"}, ["METRICS_AUTH_SCOPE"]),
    ({"METRICS_AUTH": "basic", "METRICS_PASSWORD": PASSWORD}, ["METRICS_USER"]),
    ({"METRICS_AUTH": "basic", "METRICS_USER": "a:b", "METRICS_PASSWORD": PASSWORD},
     ["METRICS_USER"]),
    ({"METRICS_AUTH": "basic", "METRICS_USER": "prometheus"}, ["METRICS_PASSWORD"]),
    ({"METRICS_AUTH": "bearer", "METRICS_PASSWORD": PASSWORD}, ["METRICS_TOKEN"]),
])
def test_incomplete_access_settings_stop_start_up_naming_the_variable(
    env: dict[str, str], names: list[str],
) -> None:
    for cls, prefix in ((ScorerSettings, "ACTIVE_STREAM_SCORER_"),
                        (LabelSinkSettings, "ACTIVE_STREAM_LABEL_SINK_")):
        with pytest.raises(SettingsError) as caught:
            cls.from_env(BASE_ENV | {prefix + k: v for k, v in env.items()})
        message = str(caught.value)
        assert all(prefix + name in message for name in names), message
        assert PASSWORD not in message


@pytest.mark.parametrize("service, prefix", [("scorer", "ACTIVE_STREAM_SCORER_"),
                                             ("label-sink", "ACTIVE_STREAM_LABEL_SINK_")])
def test_active_stream_config_never_prints_the_secrets(service: str, prefix: str) -> None:
    for mode, variables in (("basic", {"METRICS_USER": "prometheus", "METRICS_PASSWORD": PASSWORD}),
                            ("bearer", {"METRICS_TOKEN": TOKEN})):
        env = {**os.environ, **BASE_ENV, prefix + "METRICS_AUTH": mode,
               **{prefix + k: v for k, v in variables.items()}}
        out = subprocess.run([sys.executable, "-m", "services.cli", "config", service], env=env,
                             capture_output=True, text=True, timeout=60, check=True)
        assert f'"metrics_auth": "{mode}"' in out.stdout
        assert PASSWORD not in out.stdout + out.stderr and TOKEN not in out.stdout + out.stderr
        assert "**********" in out.stdout
    assert str(Secret(PASSWORD)) == repr(Secret(PASSWORD)) == "Secret('**********')"


# -- slow clients ------------------------------------------------------------------------------

def ops_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "ops-conn")


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed `sock` (EOF or reset) without answering; False when
    nothing happened within the socket's own timeout."""
    try:
        data = sock.recv(1024)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    assert not data.startswith(b"HTTP/"), data
    return data == b""


def test_a_client_that_sends_nothing_is_dropped_after_the_read_timeout() -> None:
    with serving(read_timeout_s=0.5) as server:
        silent = socket.create_connection(("127.0.0.1", server.port))
        silent.settimeout(30)  # generous: the server's own deadline is 0.5 s
        assert closed_by_server(silent)
        silent.close()
        wait_for(lambda: ops_threads() == 0, 30, "the connection's thread was not released")
        assert get(server.port, "/healthz")[0] == 200


def test_a_client_dripping_its_request_cannot_stretch_it_past_the_deadline() -> None:
    # One byte every 0.1 s never lets a per-recv timeout of 0.5 s expire; only a deadline over
    # the whole request ends it. Without one, this client would be read from for all of 30 s
    # (the drip's own limit), and the server would close only once it stopped.
    with serving(read_timeout_s=0.5) as server:
        drip = socket.create_connection(("127.0.0.1", server.port))
        request = b"GET /metrics HTTP/1.0\r\nX-Pad: " + b"a" * 300 + b"\r\n\r\n"
        dropped = False
        give_up = time.monotonic() + 30
        for byte in request:
            try:
                drip.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                dropped = True  # a send after the server closed: refused by a reset
                break
            if time.monotonic() > give_up:
                break
            time.sleep(0.1)
        drip.close()
        assert dropped, "the server kept reading a request dripped byte by byte"


def test_slow_clients_hold_at_most_max_connections_threads() -> None:
    # A 5 s deadline leaves the stalled connections in place while the extra ones are tried.
    with serving(read_timeout_s=5.0, max_connections=3) as server:
        stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        wait_for(lambda: ops_threads() == 3, 30, "the stalled connections were not accepted")
        extra = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
        for sock in extra:  # refused at accept: closed at once, not queued for a thread
            sock.settimeout(30)
            assert closed_by_server(sock)
            sock.close()
        assert ops_threads() == 3
        for sock in stalled:  # the stalled ones end at their deadline and free their slots
            sock.settimeout(30)
            assert closed_by_server(sock)
            sock.close()
        wait_for(lambda: ops_threads() == 0, 30, "threads not released")
        assert get(server.port, "/healthz")[0] == 200


@pytest.mark.broker
def test_both_services_apply_their_access_settings(broker: object) -> None:
    """The settings reach the servers the services really run: the scorer behind a bearer
    token on every endpoint, the label sink behind basic auth on /metrics only."""
    from tests.integration.label_sink_support import SinkProcess
    from tests.integration.scorer_support import ScorerProcess, private_loop, scorer_env

    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    prefix = private_loop(bootstrap, partitions=1)
    scorer = ScorerProcess({**scorer_env(bootstrap, prefix, f"g-{prefix}"),
                            "ACTIVE_STREAM_SCORER_METRICS_AUTH": "bearer",
                            "ACTIVE_STREAM_SCORER_METRICS_TOKEN": TOKEN}).start()
    sink = SinkProcess(bootstrap, f"sink-{prefix}", prefix, metrics_auth="basic",
                       metrics_user="prometheus", metrics_password=PASSWORD,
                       metrics_auth_scope="metrics").start()
    try:
        def up(port: int, authorization: str) -> bool:
            try:
                return get(port, "/readyz", authorization)[0] == 200
            except OSError:
                return False
        wait_for(lambda: up(scorer.port, f"Bearer {TOKEN}"), 60, "scorer not ready")
        wait_for(lambda: up(sink.port, ""), 90, "sink not ready")
        for path in PATHS:
            assert get(scorer.port, path)[0] == 401, path
            assert get(scorer.port, path, "Bearer wrong")[0] == 401, path
            assert get(scorer.port, path, f"Bearer {TOKEN}")[0] == 200, path
        assert get(sink.port, "/metrics")[0] == 401
        status, _, text = get(sink.port, "/metrics", basic("prometheus", PASSWORD))
        assert status == 200 and "label_sink_requests_total" in text
        assert get(sink.port, "/healthz")[0] == 200  # probes stay open with scope "metrics"
    finally:
        assert scorer.stop() == 0, scorer.tail()
        assert sink.stop() == 0, sink.tail()
    for log in (scorer.tail(500), sink.tail(500)):
        assert TOKEN not in log and PASSWORD not in log
