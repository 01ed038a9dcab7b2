# Two commands do all the set-up on a fresh machine (Python 3.11+):
#   make run    build .venv if needed, get MNIST, convert it to Zarr, cluster it on a LocalCluster
#   make test   build .venv if needed, run the test suite
# MNIST_SOURCE=DIR uses a local folder of IDX files instead of downloading (e.g. ../shared/data/mnist).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test setup clean

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

clean:
	rm -rf $(VENV) data runs .pytest_cache
