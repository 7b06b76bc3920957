# Every target sets itself up: a local virtualenv in .venv, rebuilt when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck docs bench clean help

help:
	@echo "make demo   run the example research pipeline with live progress (no network)"
	@echo "make test   lint, type-check, layer contract, tests, docs build"
	@echo "make bench  benchmarks against a bare-asyncio scheduler"
	@echo "make lint   ruff + mypy + import-linter only"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "stageflow needs Python 3.11+; set PYTHON=python3.11 (or newer)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check stageflow tests benchmarks examples
	$(BIN)/ruff format --check stageflow tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

test: lint $(STAMP)
	$(BIN)/pytest --cov --cov-report=term
	$(BIN)/python benchmarks/run.py --quick --json /tmp/stageflow-bench-smoke.json
	$(MAKE) --no-print-directory docs

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache .coverage

# make crash N=500: the crash soak alone, N SIGKILLed drivers per backend (default 500;
# `make test` runs it with 50). STAGEFLOW_CRASH_SEED=... reuses a soak's graphs and kill delays.
.PHONY: crash
crash: $(STAMP)
	STAGEFLOW_CRASH_KILLS=$(or $(N),500) $(BIN)/pytest tests/crash/test_crash_resume.py tests/crash/test_dynamic_crash.py tests/crash/test_declarative_crash.py -s -q
