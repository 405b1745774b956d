.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install demo test test-reliability bench check lint typecheck clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install kanthorq with its dev and embedded extras

demo: $(STAMP) ## run the quickstart (on KANTHORQ_DSN, else the embedded server) until every task is final
	$(BIN)/python examples/quickstart.py

test: $(STAMP) ## run the test suite (KANTHORQ_TEST_DSN, else the embedded server)
	$(BIN)/pytest --ignore=tests/reliability $(PYTEST_ARGS)

test-reliability: $(STAMP) ## the reliability battery: crashes, restarts, hostile input (soak: PYTEST_ARGS="-m soak")
	$(BIN)/pytest tests/reliability -m "not soak" $(PYTEST_ARGS)

$(VENV)/.bench: $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e '.[dev,embedded,bench]'
	touch $(VENV)/.bench

bench: $(VENV)/.bench ## benchmarks: kanthorq, pgqueuer, procrastinate and raw asyncpg, side by side
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

lint: $(STAMP) ## ruff
	$(BIN)/ruff check kanthorq tests examples benchmarks
	$(BIN)/ruff format --check kanthorq tests examples benchmarks

typecheck: $(STAMP) ## mypy --strict
	$(BIN)/mypy

check: lint typecheck ## ruff and strict mypy

clean: ## remove the virtualenv and the embedded server's data
	rm -rf $(VENV) .kanthorq .pytest_cache .mypy_cache .ruff_cache
