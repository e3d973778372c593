"""The dead-letter record: valid against its schema, keeps the original bytes, pure."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest

from services.contracts.dead_letter import DEAD_LETTER, dead_letter_of
from services.streaming import events
from services.streaming.events import ErrorCode, InvalidEvent
from tests.contract.schema_support import EXAMPLE_DIR, validator


def _letter(original: bytes | None, **fields: object) -> dict:
    """The dead letter the one builder makes, as its JSON object."""
    return DEAD_LETTER.to_json(dead_letter_of(original, **fields))  # type: ignore[arg-type]


def test_dead_letter_record_validates_and_keeps_the_bytes() -> None:
    original = b"\xff\x00 not json"
    record = _letter(
        original,
        topic="al.inference-events.v1",
        partition=3,
        offset=77,
        reason="$: not UTF-8 JSON",
        code=ErrorCode.NOT_JSON,
        service="scorer",
        service_version="0.1.0",
        failed_at=1717243260.5,
        key=b"asset-1",
    )
    assert list(validator("dead-letter").iter_errors(record)) == []
    assert base64.b64decode(record["original_b64"], validate=True) == original
    assert base64.b64decode(record["key_b64"], validate=True) == b"asset-1"
    assert events.encode_event(record) == events.encode_event(dict(reversed(record.items())))


def test_dead_letter_of_a_real_rejection_validates() -> None:
    data = (EXAMPLE_DIR / "inference-event" / "invalid-payload-too-large.json").read_bytes()
    with pytest.raises(InvalidEvent) as caught:
        events.decode_inference_event(data)
    bad = caught.value
    record = _letter(
        data, topic="t", partition=0, offset=0, reason=bad.reason + "!" * 5000, code=bad.code,
        service="scorer", service_version="0.1.0", failed_at=0.0,
    )  # fmt: skip
    assert record["key_b64"] is None and len(record["reason"]) == events.MAX_REASON_LENGTH
    assert list(validator("dead-letter").iter_errors(record)) == []


def test_dead_letter_rejects_an_unknown_code() -> None:
    with pytest.raises(ValueError, match="boom"):
        _letter(
            b"", topic="t", partition=0, offset=0, reason="r", code="boom", service="s",
            service_version="1", failed_at=0.0,
        )  # fmt: skip


def test_a_redacted_dead_letter_keeps_hashes_and_sizes_not_the_payload() -> None:
    original, key = b'{"asset_id": "patient-0042.dcm", "timestamp": "x"}', b"patient-0042.dcm"
    letter = events.encode_event(_letter(
        original, topic="t", partition=0, offset=5, reason='timestamp: got "x"',
        code=ErrorCode.WRONG_TYPE, service="scorer", service_version="1", failed_at=1.0,
        key=key))
    redacted = events.redact_dead_letter(letter)
    assert b"patient" not in redacted and b'"x"' not in redacted
    record = orjson.loads(redacted)
    assert list(validator("dead-letter").iter_errors(record)) == []
    assert record["original_b64"] == "" and record["key_b64"] is None and record["redacted"]
    assert record["original_size"] == len(original)
    assert record["original_sha256"] == hashlib.sha256(original).hexdigest()
    assert record["key_sha256"] == hashlib.sha256(key).hexdigest()
    assert record["reason"] == "timestamp: wrong_type (detail redacted)"
    assert events.redact_dead_letter(letter) == redacted
    assert events.redacted_key(key) == hashlib.sha256(key).hexdigest().encode()
