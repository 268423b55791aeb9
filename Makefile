# The README's two commands: `make run` and `make test`. Both do all set-up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= config/kravmottak.toml

.PHONY: run test lint venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## run: start the daemon on the embedded default (SQLite ledger, ./var folders)
run: $(STAMP)
	$(BIN)/kravmottak --config $(CONFIG) run

## test: lint and run the whole test suite
test: $(STAMP)
	$(BIN)/ruff check daemon tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check daemon tests benchmarks
	$(BIN)/ruff format --check daemon tests benchmarks

clean:
	rm -rf $(VENV) var .pytest_cache
