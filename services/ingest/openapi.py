"""Builds services/ingest/openapi.json, the ingest API's contract, from schemas/ (run from a
checkout: `python -m services.ingest.openapi > services/ingest/openapi.json`).

The inference event's JSON Schema is embedded as is, its `$defs` moved to the document's
components (OpenAPI 3.1 speaks JSON Schema 2020-12, so nothing else changes). The limits are the
service's defaults (IngestSettings). tests/contract/test_ingest_openapi.py checks the committed
file equals what this builds, so the document cannot drift from the schemas or the defaults.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

from services.ingest.body import JSON_TYPES, NDJSON_TYPES
from services.ingest.settings import IngestSettings

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
_REF = "#/components/schemas/"


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: (_REF + v.removeprefix("#/$defs/") if k == "$ref" and isinstance(v, str)
                    and v.startswith("#/$defs/") else _rewrite_refs(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_refs(item) for item in node]
    return node


def event_components(schema: dict[str, Any]) -> dict[str, Any]:
    """The inference-event schema as components: `InferenceEvent` plus its `$defs`."""
    event = copy.deepcopy(schema)
    defs = event.pop("$defs")
    for key in ("$schema", "$id"):
        event.pop(key, None)
    return {"InferenceEvent": _rewrite_refs(event), **_rewrite_refs(defs)}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {
        "application/json": {"schema": {"$ref": _REF + "Error"}}}}
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before sending again.",
                                "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
_RESULTS_DOC = ("One result per event, in the order sent: `accepted` (the broker stored it: "
                "partition and offset), `rejected` (the scorer's contract refuses it: its "
                "reason code, the field and a reason; do not resend as is) or `failed` (valid, "
                "but the broker did not acknowledge it: send it again).")


def _result_schemas() -> dict[str, Any]:
    def kind(status: str, required: list[str], props: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": False,
                "required": ["index", "status", *required],
                "properties": {"index": {"type": "integer", "minimum": 0},
                               "status": {"const": status}, **props}}

    text = {"type": "string"}
    return {
        "Accepted": kind("accepted", ["partition", "offset"],
                         {"partition": {"type": "integer", "minimum": 0},
                          "offset": {"type": "integer", "minimum": 0}}),
        "Rejected": kind("rejected", ["code", "field", "reason"], {
            "code": {"type": "string", "pattern": "^[a-z_]+$",
                     "description": "The scorer's reason code, as in the dead-letter schema's "
                                    "`code` (not_json, missing_field, not_normalised, ...)."},
            "field": {**text, "description": "Path of the offending field; `$` for the whole "
                                             "event."},
            "reason": text}),
        "Failed": kind("failed", ["code", "reason"], {"code": {"const": "not_delivered"},
                                                      "reason": text}),
        "IngestResult": {
            "type": "object", "additionalProperties": False, "description": _RESULTS_DOC,
            "required": ["accepted", "rejected", "failed", "results"],
            "properties": {
                "accepted": {"type": "integer", "minimum": 0},
                "rejected": {"type": "integer", "minimum": 0},
                "failed": {"type": "integer", "minimum": 0},
                "results": {"type": "array", "items": {"oneOf": [
                    {"$ref": _REF + name} for name in ("Accepted", "Rejected", "Failed")]}}}},
        "Error": {"type": "object", "additionalProperties": False,
                  "required": ["error", "detail"],
                  "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}},
    }


def build(schemas_dir: Path = SCHEMAS) -> dict[str, Any]:
    event_schema = json.loads((schemas_dir / "inference-event.schema.json").read_text())
    defaults = IngestSettings.__dataclass_fields__
    max_events = defaults["max_events"].default
    max_bytes = defaults["max_body_bytes"].default
    batch = {"type": "array", "minItems": 1, "maxItems": max_events,
             "items": {"$ref": _REF + "InferenceEvent"}}
    content = {media: {"schema": batch} for media in sorted(JSON_TYPES)}
    content.update({media: {"schema": batch} for media in sorted(NDJSON_TYPES)})
    post = {
        "operationId": "postInferenceEvents",
        "summary": "Produce inference events to al.inference-events.v1",
        "description": (
            "A JSON array of inference events, or NDJSON (one event per line; blank lines are "
            f"skipped). At most {max_events} events and {max_bytes} bytes by default "
            "(ACTIVE_STREAM_INGEST_MAX_EVENTS, ..._MAX_BODY_BYTES). Each event is checked by "
            "the scorer's own decoder and produced, byte for byte as sent, keyed by its "
            "asset_id. The answer comes after the broker acknowledged every accepted event."),
        "security": [{"bearer": []}],
        "requestBody": {"required": True, "content": content},
        "responses": {
            "200": {"description": "Every valid event is stored. " + _RESULTS_DOC,
                    "content": {"application/json": {"schema": {"$ref": _REF + "IngestResult"}}}},
            "400": _error("The body is not a JSON array of events / has no NDJSON line."),
            "401": _error("Missing or wrong bearer token.", {"WWW-Authenticate": {
                "description": "`Bearer`.", "schema": {"type": "string"}}}),
            "408": _error("The body did not arrive within the read timeout."),
            "413": _error("Body over the byte limit, or more events than the limit."),
            "415": _error("Content-Type is neither JSON nor NDJSON."),
            "429": _error("Too many events await the broker's acknowledgement: nothing of this "
                          "request was produced; send it again after Retry-After.", _RETRY_AFTER),
            "503": {"description": "Some valid events were not acknowledged (`failed`): send "
                                   "those again. " + _RESULTS_DOC,
                    "headers": _RETRY_AFTER,
                    "content": {"application/json": {"schema": {"$ref": _REF + "IngestResult"}}}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "active-stream HTTP ingest", "version": "1.0.0",
                 "description": "Inference events over HTTP, with the scorer's contract "
                                "(docs/ingest.md)."},
        "paths": {
            "/v1/inference-events": {"post": post},
            "/openapi.json": {"get": {
                "operationId": "getOpenapi", "summary": "This document", "security": [],
                "responses": {"200": {"description": "The OpenAPI document.", "content": {
                    "application/json": {"schema": {"type": "object"}}}}}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {**event_components(event_schema), **_result_schemas()},
        },
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(build()))
