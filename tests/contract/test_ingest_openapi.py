"""The ingest API's OpenAPI document (services/ingest/openapi.json): committed, served, and the
same contract as schemas/inference-event.schema.json."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from services.ingest import openapi
from services.ingest.app import PATH, openapi_document
from services.ingest.settings import IngestSettings
from tests.contract.schema_support import EXAMPLE_DIR, load_schema

COMMITTED = Path(openapi.__file__).with_name("openapi.json")


def test_the_committed_document_is_what_the_schemas_and_defaults_build() -> None:
    assert COMMITTED.read_text() == openapi.render(openapi.build()), (
        "services/ingest/openapi.json is stale: python -m services.ingest.openapi > "
        "services/ingest/openapi.json")


def test_the_service_serves_the_committed_document_with_its_own_batch_limit() -> None:
    assert openapi_document() == COMMITTED.read_bytes()
    served = orjson.loads(openapi_document(max_events=7))
    committed = orjson.loads(COMMITTED.read_bytes())
    content = served["paths"][PATH]["post"]["requestBody"]["content"]
    assert {media["schema"]["maxItems"] for media in content.values()} == {7}
    for media in committed["paths"][PATH]["post"]["requestBody"]["content"].values():
        media["schema"]["maxItems"] = 7
    assert served == committed


def test_the_documented_limits_are_the_defaults() -> None:
    document = orjson.loads(COMMITTED.read_bytes())
    content = document["paths"][PATH]["post"]["requestBody"]["content"]
    assert {m["schema"]["maxItems"] for m in content.values()} == {
        IngestSettings.__dataclass_fields__["max_events"].default}


@pytest.mark.parametrize("example", sorted((EXAMPLE_DIR / "inference-event").glob("*.json")),
                         ids=lambda p: p.name)
def test_the_embedded_event_schema_judges_every_example_as_the_schema_file_does(
    example: Path,
) -> None:
    document = orjson.loads(COMMITTED.read_bytes())
    embedded = Draft202012Validator({"$ref": "#/components/schemas/InferenceEvent",
                                     "components": document["components"]})
    original = Draft202012Validator(load_schema("inference-event"))
    instance = orjson.loads(example.read_bytes())
    assert embedded.is_valid(instance) == original.is_valid(instance)
