"""HTTP ingest: inference events over HTTP for teams whose model service has no Kafka producer.

`POST /v1/inference-events` (a JSON array or NDJSON) checks each event with the scorer's own
decoders and produces the valid ones to al.inference-events.v1, keyed by asset_id and partitioned
as the rest of the loop partitions; the answer comes after the broker acknowledged them.
docs/ingest.md describes the API; services/ingest/openapi.json is its contract.
"""
