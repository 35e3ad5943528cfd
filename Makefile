# Two commands: `make demo` and `make test`.  Each first runs the idempotent set-up.
VENV    ?= .venv
PY      := $(VENV)/bin/python
JOBS    ?= 2

.PHONY: setup demo test layers bench bench-sim fuzz clean clean-cache

setup:
	@scripts/setup.sh

demo: setup
	$(VENV)/bin/sparrow demo

test: setup
	$(PY) -m pytest -n $(JOBS) -q tests

# The import-linter layering contracts of pyproject.toml.  A plain `lint-imports` in this
# folder cannot see sparrow.hw, sw, tb, fpga, bench (they live in top-level folders mapped by
# setuptools' package-dir); the test runs it on one assembled package tree.
layers: setup
	$(PY) -m pytest -q -p no:xdist tests/test_layering.py

bench: setup
	$(PY) -m sparrow.bench.run_all

# Simulation speed (README table) and the long fuzzing profile (MINUTES of it).
MINUTES ?= 10
bench-sim: setup
	$(PY) -m sparrow.bench.bench_sim

fuzz: setup
	$(PY) -m sparrow.bench.bench_fuzz --minutes $(MINUTES)

# Compiled simulators live in $SPARROW_CACHE (default ~/.cache/sparrow): `make clean-cache`.
clean:
	rm -rf build sim_build .pytest_cache

clean-cache:
	rm -rf $${SPARROW_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/sparrow}/sim
