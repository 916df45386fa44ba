# Every target bootstraps its own virtual environment; nothing global is needed but python3.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help demo test test-unit test-integration lint typecheck fmt check clean

# Feature areas keep their own targets in mk/*.mk (emulators, deploy checks, benchmarks, …).
# A fragment adds what `make test` needs installed first with `TEST_DEPS += target`.
TEST_DEPS :=
.DEFAULT_GOAL := help
include $(wildcard mk/*.mk)

help:
	@echo "make demo    run the whole service end to end on an embedded moto backend"
	@echo "make test    run the whole test suite (unit + integration on local endpoints)"
	@echo "make check   lint + format check + mypy --strict"

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m consumer demo

# The process tests mostly wait (on workers, leases, emulators): three pytest processes keep
# two cores busy. tests/conftest.py starts the slowest files first and an idle process steals
# queued tests from a busy one (measured: 559 s in one process, 250 s in three). TEST_WORKERS=0:
# one process.
TEST_WORKERS ?= 3

test: $(STAMP) $(TEST_DEPS)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

test-integration: $(STAMP) $(TEST_DEPS)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal tests/integration

lint: $(STAMP)
	$(VENV)/bin/ruff check consumer producer kernel devkit tests
	$(VENV)/bin/ruff format --check consumer producer kernel devkit tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy consumer producer kernel devkit tests

check: lint typecheck

fmt: $(STAMP)
	$(VENV)/bin/ruff format consumer producer kernel devkit tests
	$(VENV)/bin/ruff check --fix consumer producer kernel devkit tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
