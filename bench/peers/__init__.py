"""Peers of the scorer, measured beside it by bench/scorer.py (`--peers`): the same events, the
same broker, the same selection rule (least-confidence; 2% of the stream).

Each peer is a module run as its own process (`python -m bench.peers.<name> ...`), so it owns its
GIL and event loop as it would in production; it prints one `RESULT {json}` line (common.py).
Install them into a venv of their own with `make bench-peers` (requirements.txt here), not into
`.venv` (quix-streams pins confluent-kafka below the version the service and its tests need),
and run bench/scorer.py with `--peer-python` (bench/README.md).
"""
