# The README's two commands: `make serve` (install + serve the embedded model on :8000) and
# `make test` (install test tools + run the whole suite against live servers).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: serve test lint bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

tests/js/node_modules/.installed: tests/js/package.json
	cd tests/js && npm install --no-audit --no-fund --loglevel=error
	touch $@

serve: $(VENV)/.installed
	$(VENV)/bin/openlisten serve

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check server tests bench
	$(VENV)/bin/ruff format --check server tests bench

test: $(VENV)/.installed tests/js/node_modules/.installed lint
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)
