"""The Label Studio bridge: annotation requests become Label Studio tasks (with the model's
predictions as pre-labels), and annotations come back as labels on al.labels.v1.

- `settings`: `ACTIVE_STREAM_LABEL_STUDIO_*` variables.
- `api`: a small client for the Label Studio HTTP API (only what the bridge needs).
- `tasks` (pure): an annotation request as a task; `labels` (pure): an annotation as a label.
- `bridge`: the service (consumer loop, reconciliation, expiry); `webhook`: the endpoint Label
  Studio calls; `metrics`.
- `server`: a local Label Studio as a peer service (its own venv in ~/.cache/active-stream), for
  the tests and `active-stream demo --label-studio`.
docs/label-studio.md describes the whole.
"""
