.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_VENV := .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.installed

.PHONY: help install demo test test-reliability bench check lint typecheck clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install kanthorq with its dev and embedded extras

# The demo's own environment holds only what the demo needs: kanthorq and the embedded
# server. It is installed with uv: the one on PATH, else one that this Python's pip installs
# from PyPI into the new venv (pip >= 22.3: --python); plain pip only when neither works.
# A checkout that ran `make install` uses .venv instead.
$(DEMO_STAMP): pyproject.toml
	rm -rf $(DEMO_VENV)
	@if command -v uv >/dev/null 2>&1; then \
		echo "installing the demo's packages with uv"; \
		uv venv -q --python $(PYTHON) $(DEMO_VENV) && \
		uv pip install -q --python $(DEMO_VENV)/bin/python -e '.[embedded]'; \
	elif $(PYTHON) -m venv --without-pip $(DEMO_VENV) && \
		$(PYTHON) -m pip --python $(DEMO_VENV)/bin/python install -q uv >/dev/null 2>&1; then \
		echo "installing the demo's packages with uv (from PyPI)"; \
		$(DEMO_VENV)/bin/uv pip install -q --python $(DEMO_VENV)/bin/python -e '.[embedded]'; \
	else \
		echo "installing the demo's packages with pip (uv is not available)"; \
		rm -rf $(DEMO_VENV) && $(PYTHON) -m venv $(DEMO_VENV) && \
		$(DEMO_VENV)/bin/pip install -q -e '.[embedded]'; \
	fi
	touch $(DEMO_STAMP)

demo: ## run the quickstart (on KANTHORQ_DSN, else the embedded server); installs only what it needs
	@if [ -f $(STAMP) ]; then \
		$(BIN)/python examples/quickstart.py; \
	else \
		$(MAKE) --no-print-directory $(DEMO_STAMP) && $(DEMO_VENV)/bin/python examples/quickstart.py; \
	fi

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

clean: ## remove the virtualenvs and the embedded server's data
	rm -rf $(VENV) $(DEMO_VENV) .kanthorq .pytest_cache .mypy_cache .ruff_cache
