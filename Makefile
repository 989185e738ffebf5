# Two commands for a new user:  `make demo`  and  `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision move together (see pyproject.toml); pip is given the same
# pins in every command so that it never swaps torch for another build.
PINS := torch==2.14.1 torchvision==0.29.1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180
export PYTHONUNBUFFERED := 1
# `python` in dvc.yaml's stage commands must be the virtualenv's.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: demo test install bench clean-data

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(PINS) -e '.[test]'
	@touch $@

install: $(VENV)/.installed

## The whole demo on the embedded default world: retrain flow (every stage), nightly flow, gallery.
demo: install
	$(PY) -m flows.demo .

## Run the test suite (installs first if needed). Two xdist workers, one per core: most tests wait on
## subprocesses (DVC stages, servers), so the two overlap; the tests on the trained project share one worker.
test: install
	$(PY) -m pytest -q -ra -n 2 --dist loadgroup

## Benchmarks (slow; results go to BENCHMARKS.md by hand).
bench: install
	$(PY) benchmarks/ingest.py

clean-data:
	rm -rf data/02_tables data/metrics mlruns.db mlartifacts
