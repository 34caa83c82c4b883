# Two entry points for a fresh clone: `make demo` and `make test`.
# Each creates .venv itself (pip resolves torch/torchvision from the local wheel cache here).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format clean

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

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .cache runs .pytest_cache .ruff_cache
