# Two commands do all the set-up on a fresh machine (Python 3.11+):
#   make run    build .venv if needed, get MNIST, convert it to Zarr, cluster it on a LocalCluster
#   make test   build .venv if needed, run the test suite
#   make check  lint (ruff check), formatting (ruff format --check) and types (mypy); CI runs it first
#   make test-fast  the tests not marked slow (a few minutes): the loop while editing; CI runs make test
# MNIST_SOURCE=DIR uses a local folder of IDX files instead of downloading (e.g. ../shared/data/mnist).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test test-fast check setup clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m job $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

check: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

clean:
	rm -rf $(VENV) data runs .pytest_cache
