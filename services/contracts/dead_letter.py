"""The dead letter, declared once: its typed form (`DeadLetter`), its fields (`DEAD_LETTER`,
from which schemas/dead-letter.schema.json is generated) and the one helper every service builds
its dead letters with (`dead_letter_of`; `encode_dead_letter` for its bytes, which is what
every service produces)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from services.contracts.inference import EPOCH_SECONDS, VERSION
from services.contracts.tokens import BASE64, SHA256_HEX, Const, Enum, Pattern
from services.contracts.typed import compiled_init
from services.contracts.vocabulary import Event, Field, Integer, Record, Text
from services.streaming.event_fields import (
    MAX_OFFSET,
    MAX_PARTITION,
    MAX_TOPIC_LENGTH,
    SCHEMA_VERSION,
    ErrorCode,
)

MAX_REASON_LENGTH = 4096
"""Longest dead-letter `reason`, in characters (longer ones are cut)."""
MAX_SERVICE_LENGTH = 64


@compiled_init
@dataclass(frozen=True, slots=True)
class DeadLetterSource:
    """Kafka coordinates of the record that failed."""

    topic: str
    partition: int
    offset: int


@compiled_init
@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record a service could not process, with why (schemas/dead-letter.schema.json).
    The `original_sha256`... fields are set only in a redacted dead letter (`redacted`)."""

    schema_version: int
    original_b64: str
    key_b64: str | None
    source: DeadLetterSource
    reason: str
    code: str
    service: str
    service_version: str
    failed_at: float
    redacted: bool | None = None
    original_sha256: str | None = None
    original_size: int | None = None
    key_sha256: str | None = None


SOURCE = Record((
    Field("topic", Text(MAX_TOPIC_LENGTH), "Topic the record was consumed from, "
          f"1-{MAX_TOPIC_LENGTH} characters (Kafka's limit)."),
    Field("partition", Integer(0, MAX_PARTITION), "Partition number, >= 0."),
    Field("offset", Integer(0, MAX_OFFSET), "Offset of the record in the partition, >= 0."),
), cls=DeadLetterSource)

_CODES = ", ".join(f"`{code.value}`{_why}" for code, _why in (
    (ErrorCode.NOT_JSON, " (not UTF-8 JSON)"), (ErrorCode.TOO_LARGE, " (over the byte limit)"),
    (ErrorCode.UNKNOWN_VERSION, " (schema_version not understood)"),
    (ErrorCode.MISSING_FIELD, ""), (ErrorCode.WRONG_TYPE, ""),
    (ErrorCode.OUT_OF_RANGE, " (number or length outside its bounds)"),
    (ErrorCode.NOT_NORMALISED, " (scores do not sum to 1)"),
    (ErrorCode.EMPTY, " (empty string, list or object)"),
    (ErrorCode.NOT_FINITE, " (number not representable as a finite double)"),
    (ErrorCode.UNKNOWN_FIELD, ""),
    (ErrorCode.CONFLICT, " (mutually exclusive fields both present)"),
    (ErrorCode.DUPLICATE_KEY, " (an object repeats a key)"),
    (ErrorCode.TIMESTAMP_OUT_OF_RANGE, " (the scorer: event time too far ahead of its "
                                       "partition's watermark)")))
_REDACTED = ("original_sha256", "original_size", "key_sha256")

DEAD_LETTER = Event(
    name="dead-letter",
    title="Dead letter",
    description=(
        "A record a service could not process, with why, produced to the `.dlq` topic of the "
        "topic it came from (e.g. al.inference-events.v1.dlq). Holds the original bytes so the "
        "record can be inspected and replayed after a fix. No size limit is declared: the "
        "record is about 4/3 of the original's size, so a DLQ topic needs max.message.bytes of "
        "at least 4/3 of its source topic's."),
    max_bytes=None,
    record=Record((
        VERSION,
        Field("original_b64", BASE64, "The record's value exactly as consumed (not necessarily "
              "UTF-8 or JSON), standard base64 (RFC 4648, with padding); empty string for an "
              "empty value, and in a redacted dead letter (`redacted`)."),
        Field("key_b64", Pattern(BASE64.pattern, nullable=True, content_encoding="base64"),
              "The record's key as consumed, standard base64 with padding; null when the "
              "record had no key, and in a redacted dead letter."),
        Field("source", SOURCE, "Kafka coordinates of the failed record."),
        Field("reason", Text(MAX_REASON_LENGTH), "Human-readable reason naming the offending "
              "field path, e.g. `predictions[0].scores.cat: probability 1.3 outside [0, 1]`; "
              f"1-{MAX_REASON_LENGTH} characters."),
        Field("code", Enum(tuple(code.value for code in ErrorCode)), "Stable machine-readable "
              f"reason, the label value of the services' invalid-events metric: {_CODES}."),
        Field("service", Text(MAX_SERVICE_LENGTH), "Service that gave up on the record, e.g. "
              f"`scorer` or `label-sink`; 1-{MAX_SERVICE_LENGTH} characters."),
        Field("service_version", Text(MAX_SERVICE_LENGTH), "Version of that service (package "
              f"version), 1-{MAX_SERVICE_LENGTH} characters."),
        Field("failed_at", EPOCH_SECONDS, "When processing failed, Unix epoch seconds in [0, "
              "1e10]. The scorer writes the source record's Kafka timestamp here, so that a "
              "crash replay reproduces a byte-identical dead letter; the label sink writes its "
              "wall clock."),
        Field("redacted", Const(True), "Present (true) when the service keeps payloads out of "
              "its dead letters (streams with personal data): `original_b64` is empty, "
              "`key_b64` null, the reason keeps only the field path, and `original_sha256`, "
              "`original_size` and `key_sha256` describe what was left out.", required=False),
        Field("original_sha256", SHA256_HEX, "Redacted dead letters: SHA-256 of the original "
              "value, lowercase hex.", required=False),
        Field("original_size", Integer(0), "Redacted dead letters: size of the original value "
              "in bytes.", required=False),
        Field("key_sha256", Pattern(SHA256_HEX.pattern, nullable=True), "Redacted dead "
              "letters: SHA-256 of the original key, lowercase hex; null when the record had no "
              "key.", required=False),
    ), cls=DeadLetter, depends=(("redacted", _REDACTED),)),
)

_CODE_VALUES = frozenset(code.value for code in ErrorCode)


def dead_letter_of(
    original: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    reason: str,
    code: str,
    service: str,
    service_version: str,
    failed_at: float,
    key: bytes | None = None,
) -> DeadLetter:
    """The dead letter for a record that could not be processed: the one builder every service
    uses. Pure: `failed_at` (epoch seconds) is passed in. `original`/`key` are the record's
    value/key bytes exactly as consumed (a None value, i.e. a tombstone, is stored as empty).
    `reason` is cut to MAX_REASON_LENGTH characters. Raises ValueError for a `code` outside
    `ErrorCode`: that is a bug in the caller, not bad input."""
    if code not in _CODE_VALUES:
        raise ValueError(f"dead-letter code {code!r} is not one of {sorted(_CODE_VALUES)}")
    if len(reason) > MAX_REASON_LENGTH:
        reason = reason[: MAX_REASON_LENGTH - 1] + "…"
    # By position, in DeadLetter's field order: a class called with keywords gets them as a
    # dict, ~0.6 us more per dead letter (bench/encoders.py).
    return DeadLetter(
        SCHEMA_VERSION,  # schema_version
        base64.b64encode(original or b"").decode("ascii"),  # original_b64
        None if key is None else base64.b64encode(key).decode("ascii"),  # key_b64
        DeadLetterSource(topic, partition, offset),  # source
        reason, str(code), service, service_version, failed_at)


def encode_dead_letter(
    original: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    reason: str,
    code: str,
    service: str,
    service_version: str,
    failed_at: float,
    key: bytes | None = None,
) -> bytes:
    """`dead_letter_of(...)` as the bytes to produce to the `.dlq` topic (`DEAD_LETTER.encode`:
    deterministic, so a crash replay writes an identical dead letter)."""
    return DEAD_LETTER.encode(dead_letter_of(
        original, topic=topic, partition=partition, offset=offset, reason=reason, code=code,
        service=service, service_version=service_version, failed_at=failed_at, key=key))
