# imagegate tasks. `make run` and `make test` work on a fresh clone with Python 3.11+:
# they create the virtualenv and the database schema themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format typecheck unit migrate bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("imagegate needs Python 3.11+") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## Run the gateway on the embedded default (SQLite, in-process cache, simulator).
run: $(STAMP)
	$(BIN)/imagegate serve

## Lint, type-check and run the whole suite (SQLite and PostgreSQL + Redis).
test: $(STAMP) lint typecheck
	scripts/ensure-chromium
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy app

migrate: $(STAMP)
	$(BIN)/imagegate migrate

## Benchmarks (never part of the test suite); writes bench/reports/.
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .imagegate .mypy_cache .ruff_cache
