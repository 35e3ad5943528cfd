# Two commands: `make demo` and `make test`.  Each first runs the idempotent set-up.
VENV    ?= .venv
PY      := $(VENV)/bin/python
JOBS    ?= 2

.PHONY: setup demo test bench clean

setup:
	@scripts/setup.sh

demo: setup
	$(VENV)/bin/sparrow demo

test: setup
	$(PY) -m pytest -n $(JOBS) -q tests

bench: setup
	$(PY) -m sparrow.bench.run_all

clean:
	rm -rf build sim_build .pytest_cache
