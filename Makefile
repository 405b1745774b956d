.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install demo test check lint typecheck clean

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
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff
	$(BIN)/ruff check kanthorq tests examples
	$(BIN)/ruff format --check kanthorq tests examples

typecheck: $(STAMP) ## mypy --strict
	$(BIN)/mypy

check: lint typecheck ## ruff and strict mypy

clean: ## remove the virtualenv and the embedded server's data
	rm -rf $(VENV) .kanthorq .pytest_cache .mypy_cache .ruff_cache
