# Two commands for a newcomer: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
EXTRAS := embedded,dev,demo,peers

.PHONY: install test demo lint typecheck bench clean broker

install: $(STAMP)

# Re-install only when the dependency list changes; the package itself is installed editable.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	@touch $(STAMP)

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/active-stream demo

broker: install
	$(BIN)/active-stream broker

lint: install
	$(BIN)/ruff check services tests bench

typecheck: install
	$(BIN)/mypy services

bench: install
	$(BIN)/python bench/selector.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache .ruff_cache *.egg-info
