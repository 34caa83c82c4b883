# Two entry points for a fresh clone: `make demo` and `make test`.
# Each creates .venv itself (pip resolves torch/torchvision from the local wheel cache here).
# Beside them: `make test-fast` while developing, `make tensorboard` to look at the demo run.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast tensorboard lint format clean

RUN ?= runs/demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Train the demo model on the built-in small-object dataset, evaluate, print the size table.
demo: $(STAMP)
	$(VENV)/bin/smalldet train --config configs/demo.yaml --output runs/demo --overwrite

## Run the whole test suite (ruff included).
test: $(STAMP)
	$(PY) -m pytest -q

## The quick subset for development: every test not marked `slow` (pytest -m "not slow"; the
## slow ones train, spawn torch subprocesses or build full-size models).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

## TensorBoard on the demo run, or on another one: make tensorboard RUN=runs/other
tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir $(RUN)/tb

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .cache runs .pytest_cache .ruff_cache
