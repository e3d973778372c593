"""Container health check of the active-stream image: exit 0 iff the service answers /healthz 200.

The image's HEALTHCHECK runs this (python:3.11-slim has no curl). One image runs either service,
so it asks both ports: the scorer's (ACTIVE_STREAM_SCORER_METRICS_PORT, default 9310) and the
label sink's (ACTIVE_STREAM_LABEL_SINK_METRICS_PORT, default 9311). It passes when one of them
answers 200; a 503 (the scorer's loop has not run for a minute, the label sink crashed) or no
answer on either port fails it. It connects to 127.0.0.1, so a service whose `*_METRICS_HOST` is
set to another address than 0.0.0.0 or 127.0.0.1 cannot be checked this way.

Standard library only; proxies from the environment are ignored (a health check is local).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

PORTS = (
    ("ACTIVE_STREAM_SCORER_METRICS_PORT", "9310"),
    ("ACTIVE_STREAM_LABEL_SINK_METRICS_PORT", "9311"),
)
TIMEOUT_S = 3.0


def probe(port: str, timeout: float = TIMEOUT_S) -> tuple[bool, str]:
    """(answered 200, one line saying what happened) for http://127.0.0.1:<port>/healthz."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with opener.open(url, timeout=timeout) as response:
            body = response.read(200).decode("utf-8", "replace").strip()
            return response.status == 200, f"{url}: {response.status} {body}"
    except urllib.error.HTTPError as exc:
        body = exc.read(200).decode("utf-8", "replace").strip()
        return False, f"{url}: {exc.code} {body}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{url}: {reason}"


def main() -> int:
    ports = dict.fromkeys(os.environ.get(name) or default for name, default in PORTS)
    lines = []
    for port in ports:
        ok, line = probe(port)
        if ok:
            print(line)
            return 0
        lines.append(line)
    print("unhealthy: " + "; ".join(lines))
    return 1


if __name__ == "__main__":
    sys.exit(main())
