# The README's two commands: `make run` and `make test`. Both do all set-up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= config/kravmottak.toml
# Exact versions with their hashes, made by `make lock` (pip-tools) from pyproject.toml:
# requirements.lock is what the service installs, requirements-test.lock adds the test
# tools at the same versions.
LOCK      := requirements.lock
TEST_LOCK := requirements-test.lock
LOCK_VENV := .venv-lock
COMPILE   := $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras \
             --no-emit-index-url --no-emit-find-links

.PHONY: run test lint venv lock clean mutate

# the dependencies from the lock (hashes checked), then the project itself without any
$(STAMP): pyproject.toml $(LOCK) $(TEST_LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r $(TEST_LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	@$(BIN)/pip check || { echo "pyproject.toml needs what the lock lacks: run 'make lock'" >&2; exit 1; }
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

## lock: re-resolve the dependencies of pyproject.toml into the two lock files (commit them)
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || \
	  ($(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet 'pip-tools>=7.4')
	$(COMPILE) --upgrade --output-file $(LOCK) pyproject.toml
	$(COMPILE) --upgrade --extra test --constraint $(LOCK) --output-file $(TEST_LOCK) pyproject.toml

clean:
	rm -rf $(VENV) $(LOCK_VENV) var .pytest_cache mutants build/mutation
