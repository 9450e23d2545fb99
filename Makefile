# pforte: `make run` starts the whole system on its embedded defaults, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: venv run test lint bench bench-docs docs clean

$(STAMP): setup.cfg setup.py pyproject.toml services/sip/_cscan.c services/http/_chead.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,lint,bench]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/python scripts/run_all.py

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check proxyd services manager netconf tests bench scripts
	$(BIN)/mypy proxyd services netconf
	$(BIN)/lint-imports

# `make bench` ≤ 10 min, `make bench QUICK=1` ≤ 2 min (bench/plans.py); each run -> bench/results/*.json
bench: $(STAMP)
	$(BIN)/python bench/run.py $(if $(filter-out 0,$(QUICK)),--quick)

# docs/benchmarks.md's generated figures and plots from the newest full run in bench/results/
bench-docs: $(STAMP)
	$(BIN)/python -m bench.docs

clean:
	rm -rf $(VENV) build *.egg-info .state

docs: $(STAMP)
	$(BIN)/python -m proxyd.config_doc > docs/config.md
