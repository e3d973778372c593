"""Structured logs: one JSON object per line for services (what log pipelines ingest), plain text
for a person at a terminal. `ACTIVE_STREAM_LOG_FORMAT=json|text` overrides the choice, and
`ACTIVE_STREAM_LOG_LEVEL` sets the level (default INFO)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

FORMAT_ENV = "ACTIVE_STREAM_LOG_FORMAT"
LEVEL_ENV = "ACTIVE_STREAM_LOG_LEVEL"
# Attributes every LogRecord has; anything else was passed with `extra=` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...extra fields, "exc"}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(environ: Mapping[str, str]) -> None:
    """Set up the root logger once, from the environment (see the module docstring)."""
    chosen = environ.get(FORMAT_ENV) or ("text" if sys.stderr.isatty() else "json")
    handler = logging.StreamHandler()
    if chosen == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(environ.get(LEVEL_ENV, "INFO").upper())
