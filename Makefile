# Two commands do all the set-up on a fresh machine with Python 3.11 and git:
#   make quickstart   - install into .venv, run the `quick` suite end to end, build the leaderboard
#   make test-all     - install into .venv, run the whole test suite (what CI runs: .ci/run)
#   make test         - the developer's fast lane: lint, types, then all but the slow end-to-end, Ray and PostgreSQL tests
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/constraints.txt | cksum | cut -d' ' -f1)

.PHONY: install quickstart test test-all lint bench ui clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=/path/to/python3.11 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[dev,ray,server]"
	rm -f $(VENV)/.installed-*
	touch $@

quickstart: install
	$(BIN)/xbench run suite quick
	$(BIN)/xbench leaderboard build --suite quick
	@echo "Results: ./xbench.db (browse: $(BIN)/xbench ui --suite quick --open) - leaderboard: leaderboard/site/index.html"

test-all: lint
	$(BIN)/python -m pytest -q

test: lint
	$(BIN)/python -m pytest -q -m "not slow"

# Part of both test lanes (so of CI): lint, formatting and types (mypy: strict on core, plan, analyse, present, store, human; pyproject.toml).
lint: install
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/ruff format --check src tests benchmarks docs
	$(BIN)/mypy

bench: install
	$(BIN)/python -m pytest benchmarks --benchmark-only --benchmark-json=benchmarks/results.json

ui: install
	$(BIN)/xbench ui

clean:
	rm -rf $(VENV) leaderboard/site .pytest_cache
