# irfront: the two commands a user needs are `make demo` and `make test`.
# Both install everything they need first (Debian packages, a venv in .venv, the C++ extension).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-installed

.PHONY: all setup build test test-cpp test-py demo bench-placement bench-stream clean

all: build

$(STAMP): requirements-dev.txt setup.py
	./scripts/install_system_deps.sh
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-build-isolation -e .
	touch $@

setup: $(STAMP)

# Rebuild the pybind11 extension in place when C++ sources change.
build: setup
	$(PY) setup.py -q build_ext --inplace

test-cpp: setup
	bazel test //src/scheduler/... --test_output=errors

test-py: build
	$(PY) -m pytest tests -q

test: test-cpp test-py

# The streaming benchmark on an embedded 4-node x 2-CPU local cluster (a few minutes).
demo: build
	$(PY) bench/stream.py --sizes 1,4,16 --schedulers vanilla,pack,locality,locality+ahead \
		--iterations 40 --json bench/results/stream_demo.json --plots bench/results/demo

bench-stream: build
	$(PY) bench/stream.py --sizes 1,2,4,8,16 --schedulers vanilla,pack,locality,locality-nofuse,locality-noshuffle,locality+ahead,locality-plain \
		--json bench/results/stream.json --plots bench/results/stream

bench-placement: build
	$(PY) bench/placement.py --json bench/results/placement.json

clean:
	rm -rf build python/irfront/*.so *.egg-info
	-bazel clean
