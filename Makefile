# `make demo` and `make test` set up everything on a bare machine with Python 3.11.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo example test test-all lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mixspec run specs/*.yaml --out reports

# The example report committed under docs/example/ (the demo writes only to reports/, which git ignores).
example: $(STAMP)
	$(VENV)/bin/mixspec run specs/sleepstudy.yaml --out docs/example --no-cache

# pytest exits 5 when it collected nothing: a broken suite, not a pass. Two workers (pytest-xdist):
# the machine's two cores; tests use their own tmp folders, caches and ports.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# ruff (lint) and mypy (types) over runner/, as configured in pyproject.toml; CI runs it after the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check runner tests
	$(VENV)/bin/mypy

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]' || echo "mixedlm not installable: benchmark runs without it"
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .mixspec-cache .pytest_cache
