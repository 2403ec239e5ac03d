# One command per intent. Each target installs what it needs (idempotently) into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: install demo test lint check bench mutation clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP) $(DEMO_STAMP)

# The demo needs Argosy and what the demo pipeline imports, not the test toolchain.
$(DEMO_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[demo]"
	touch $(DEMO_STAMP)

install: $(STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/argosy run examples/demo.py:breast_cancer

# Two test processes (pytest-xdist; TEST_JOBS=1 for one): most tests wait on processes they
# started, so two keep both cores busy. A file's tests stay together (its fixtures start once).
TEST_JOBS ?= 2
test: $(STAMP)
	bash scripts/install-test-deps.sh
	$(PY) -m pytest -m "not external and not live_k8s" -n $(TEST_JOBS) --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/ruff format --check src tests examples benchmarks
	$(VENV)/bin/mypy

check: lint test

bench: $(STAMP)
	$(PY) benchmarks/run.py

# Mutation testing of the security core (mutmut; configured in pyproject's [tool.mutmut]).
# Bounded to 30 minutes; prints the score and the surviving mutants (docs/testing.md lists
# each with its reason). Not part of 'make test'.
mutation: $(STAMP)
	rm -rf mutants
	timeout 1800 $(VENV)/bin/mutmut run --max-children $(or $(MUTATION_JOBS),2)
	$(VENV)/bin/mutmut export-cicd-stats
	$(PY) scripts/mutation_score.py mutants/mutmut-cicd-stats.json
	$(VENV)/bin/mutmut results

clean:
	rm -rf $(VENV) .argosy .pytest_cache .mypy_cache .ruff_cache
