# Two commands on a fresh machine (see README):
#   make demo   install everything, then run `cocoon demo`
#   make test   install everything, check the contract artifacts, run the test suite
#               (the README's test command, which .ci/run runs)
# The first install compiles llama.cpp (llama-cpp-python has no wheel on PyPI): 5 to 10 minutes on
# two cores, with progress shown; pip caches the built wheel, so later installs take seconds.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
LLAMA := llama-cpp-python==0.3.36

.PHONY: install demo test bench

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@echo "installing $(LLAMA): compiles llama.cpp from source unless pip has the wheel cached (5-10 min on 2 cores)"
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(BIN)/pip install -v '$(LLAMA)' 2>&1 | $(PY) scripts/pip_progress.py $(VENV)/llama-install.log
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: install
	$(BIN)/cocoon demo

test: install
	$(BIN)/cocoon build --check
	$(BIN)/pytest -q -n 2

bench: install
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done
