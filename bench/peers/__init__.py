"""Peers of the scorer, measured beside it by bench/scorer.py (`--peers`): the same events, the
same broker, the same selection rule (least-confidence; 2% of the stream).

Each peer is a module run as its own process (`python -m bench.peers.<name> ...`), so it owns its
GIL and event loop as it would in production; it prints one `RESULT {json}` line (common.py).
Install them with the bench extra: `.venv/bin/pip install -e '.[bench]'` (not part of
`make install`: quix-streams pins confluent-kafka below the service's own floor, see
bench/README.md).
"""
