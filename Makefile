# Two commands on a fresh machine (see README):
#   make demo   install everything, then run `cocoon demo` on the embedded chain
#   make test   install everything, check the contract artifacts, run the test suite
#               (the README's test command, which .ci/run runs)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
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
	for b in chain stake escrow reputation lifecycle; do $(BIN)/python benchmarks/$$b.py || exit 1; done
