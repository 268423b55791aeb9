# The README's two commands: `make run` and `make test`. Both do all set-up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= config/kravmottak.toml

.PHONY: run test lint venv clean mutate

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

## mutate: mutation testing of the money and trust paths (not part of `make test`; slow)
##   make mutate                      a sample of 40 mutants per target
##   make mutate ARGS="--sample 0"    every mutant;  ARGS="logs files": some targets
mutate: $(STAMP)
	$(BIN)/python -m tests.mutation $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check daemon tests benchmarks
	$(BIN)/ruff format --check daemon tests benchmarks

clean:
	rm -rf $(VENV) var .pytest_cache mutants build/mutation
