"""Structured logs: one parseable JSON object per line, extra fields and tracebacks kept."""

from __future__ import annotations

import io
import logging

import orjson
import pytest

from services.streaming import logs


def _capture(environ: dict[str, str]) -> tuple[io.StringIO, logging.Logger]:
    logs.configure(environ)
    stream = io.StringIO()
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    return stream, logging.getLogger("services.scorer.test")


@pytest.fixture(autouse=True)
def _restore_root_logger() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_with_extra_fields_and_tracebacks() -> None:
    stream, log = _capture({"ACTIVE_STREAM_LOG_FORMAT": "json"})
    log.info("partition %d: resuming at offset %d", 3, 1200, extra={"partition": 3})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("batch failed")
    first, second = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "partition 3: resuming at offset 1200"
    assert (first["level"], first["logger"], first["partition"]) == (
        "info", "services.scorer.test", 3)
    assert first["ts"].endswith("+00:00")
    assert second["level"] == "error" and "ValueError: boom" in second["exc"]


def test_text_format_and_level_from_the_environment() -> None:
    stream, log = _capture({"ACTIVE_STREAM_LOG_FORMAT": "text",
                            "ACTIVE_STREAM_LOG_LEVEL": "warning"})
    log.info("hidden")
    log.warning("shown")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("WARNING services.scorer.test shown")
