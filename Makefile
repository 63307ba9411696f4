# irfront: the two commands a user needs are `make demo` and `make test`.
# Both install what they need first: Debian packages (scripts/install_system_deps.sh; the demo
# needs no Bazel/JDK), a venv in .venv (rebuilt when half-made), the Python packages pinned by
# constraints.txt (`make demo`: ray[default] for the dashboard; `make test`: the test tools and
# ray[default] for the metrics agents),
# and the C++ extension.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pip byte-compiles what it installs: Ray's workers (hundreds of processes in `make test`)
# import Ray from those files, and with PYTHONDONTWRITEBYTECODE set nothing else would.
PIP := $(PY) -m pip
PIP_INSTALL := $(PIP) install -q
CONSTRAINTS := constraints.txt
# One stamp per install; each is remade when an input of the install changes.
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test
INSTALL_INPUTS := pyproject.toml setup.py $(CONSTRAINTS) requirements-build.txt
# Holds the pid of the make that is installing into the venv: one that failed or was cut short
# leaves it behind (its pid gone), and the next run rebuilds the venv instead of installing over
# whatever it left.
PENDING := $(VENV)/.install-pending
PENDING_LIVE_SH := [ -e $(PENDING) ] && kill -0 "$$(cat $(PENDING) 2>/dev/null)" 2>/dev/null
VENV_WHOLE_SH := [ -f $(VENV)/pyvenv.cfg ] && { [ ! -e $(PENDING) ] || { $(PENDING_LIVE_SH); }; } \
	&& $(PY) -c 'import pip' >/dev/null 2>&1

# A venv that is not whole (no pyvenv.cfg, no working python or pip, an install cut short)
# makes both stamps out of date, whatever their times say.
ifneq ($(shell $(VENV_WHOLE_SH) && echo yes),yes)
VENV_REBUILD := FORCE
endif

.PHONY: all setup build test test-cpp test-py test-slow test-all demo bench chaos check-wheel bench-placement bench-stream cluster-demo clean FORCE

all: build

FORCE:

# (Re)make $(VENV) unless it is whole. Only removes a directory that looks like a venv
# (pyvenv.cfg) or is empty.
define ensure_venv
	@if $(PENDING_LIVE_SH); then \
	  echo "another make (pid $$(cat $(PENDING))) is installing into $(VENV): wait for it" >&2; exit 1; fi
	@if [ -d $(VENV) ] && ! { $(VENV_WHOLE_SH); }; then \
	  if [ -f $(VENV)/pyvenv.cfg ] || [ -z "$$(ls -A $(VENV))" ]; then \
	    echo "$(VENV) is half-made (no working python or pip, or an install was cut short): rebuilding it"; \
	    rm -rf $(VENV); \
	  else echo "$(VENV) exists and is not a venv: remove it or set VENV=..." >&2; exit 1; fi; \
	fi
	@[ -d $(VENV) ] || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }; }
	@echo $$PPID > $(PENDING)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -c $(CONSTRAINTS) -r requirements-build.txt
endef

# `make demo`: the package with the demo's extras (ray[default], matplotlib, tqdm); no Bazel.
$(DEMO_STAMP): $(INSTALL_INPUTS) $(VENV_REBUILD)
	PYTHON=$(PYTHON) ./scripts/install_system_deps.sh demo
	$(ensure_venv)
	IRFRONT_SKIP_EXTENSION=1 $(PIP_INSTALL) -c $(CONSTRAINTS) --no-build-isolation -e ".[demo]"
	rm -f $(PENDING)
	touch $@

# `make test`: Bazel and googletest, iproute2, the package with the test and bench extras.
$(TEST_STAMP): $(INSTALL_INPUTS) $(VENV_REBUILD)
	PYTHON=$(PYTHON) ./scripts/install_system_deps.sh test
	$(ensure_venv)
	IRFRONT_SKIP_EXTENSION=1 $(PIP_INSTALL) -c $(CONSTRAINTS) --no-build-isolation -e ".[test,bench]"
	rm -f $(PENDING)
	touch $@

setup: $(TEST_STAMP)

# Rebuild the pybind11 extension in place when C++ sources change, and byte-compile the
# checkout's own modules: with PYTHONDONTWRITEBYTECODE set, every Ray worker that imports
# irfront or a test module would compile it from source again (about 0.13 CPU-s each,
# hundreds of workers in `make test`). compileall writes the .pyc files whatever that
# variable says, and skips those already up to date.
COMPILE_OWN := $(PY) -m compileall -q python ray_patch tests bench scripts >/dev/null
build: setup
	$(PY) setup.py -q build_ext --inplace
	$(COMPILE_OWN)

# Compiled actions are kept in a disk cache outside the checkout (a fresh clone on a machine
# that has built them before skips the compiles, about a minute on 2 cores); the tests
# themselves always run (--nocache_test_results).
BAZEL_CACHE ?= $(HOME)/.cache/irfront-bazel
test-cpp: $(TEST_STAMP)
	bazel test --disk_cache=$(BAZEL_CACHE) --nocache_test_results //src/scheduler/... --test_output=errors

# The sixty slowest tests are printed at the end, so the budget (10 minutes for `make test`
# from a fresh clone on a 2-core machine) stays visible. Tests marked `slow` (the wheel in
# a fresh venv, the network-namespace cluster, the short chaos matrix's other node-fault
# runs, the corpus's actor-heavy programs, the single lowering switches whose sums the
# chaos matrix checks under faults here, the seed program under pack and spread, the
# compiled-graph baseline) run in `make test-slow`, not here.
test-py: build
	$(PY) -m pytest tests -q -m "not slow" --durations=60

test: test-cpp test-py

# The long tests that CI need not run on every change (tests marked `slow`).
test-slow: build
	$(PY) -m pytest tests -q -m slow --durations=10

test-all: test test-slow

# The streaming benchmark's demo preset on an embedded 4-node x 2-CPU local cluster (about
# 3 minutes on a 2-core machine): vanilla Ray (in a phase of its own, at the rate it
# sustains), fusion alone, irfront, the same pipeline in plain Ray under irfront.infer,
# the best hand-written Ray and the Ray Compiled Graph;
# a summary at the end; plots in bench/results/demo.
demo: $(DEMO_STAMP)
	$(PY) setup.py -q build_ext --inplace
	$(COMPILE_OWN)
	$(PY) bench/stream.py --demo --json bench/results/demo/stream.json --plots bench/results/demo

# The long fault matrix (about 30-40 minutes on a 2-core machine): every lowering
# configuration x every fault kind, faults at random moments from another thread, seeded
# (bench/chaos.py); docs/RELIABILITY.md's table is written from a run's JSON
# (scripts/doc_figures.py). `make test` runs the short one.
chaos: build
	$(PY) bench/chaos.py --seed 1 --runs 2 --faults-per-run 4 --json bench/results/chaos.json

# The long benchmarks (tens of minutes): every streaming series and the placement core.
bench: bench-stream bench-placement

# The wheel: build it (pip wheel), install it into a fresh venv, import it, run the seed example
# from it (tests/test_packaging.py, also part of `make test-slow`; about a minute).
check-wheel: build
	$(PY) -m pytest tests/test_packaging.py -q

# Every streaming series (long); vanilla and pack, saturated at one
# batch per 100 ms here, run in phases of their own at the rate each sustains.
bench-stream: build
	$(PY) bench/stream.py --sizes 1,2,4,8,16 --schedulers vanilla,vanilla+fuse,pack,locality,locality-noresident,locality-nofuse,locality-noshuffle,locality-nobatch,locality+ahead,locality-plain \
		--alone vanilla,pack --json bench/results/stream.json --plots bench/results/stream
	$(PY) bench/resident_rebuild.py --json bench/results/resident_rebuild.json

# A 4-host Ray cluster of network namespaces on this machine (root; scripts/netcluster.py,
# docs/NETCLUSTER.md), links shaped to 1 Gbit/s: the streaming benchmark and the data-moving
# workload run inside the head's namespace; the cluster comes down on success, failure or Ctrl-C.
NETCLUSTER := $(PY) scripts/netcluster.py
cluster-demo: build
	@trap '$(NETCLUSTER) down' EXIT; trap 'exit 130' INT TERM; set -e; \
	$(NETCLUSTER) down >/dev/null; \
	$(NETCLUSTER) up --hosts 4 --cpus 1 --object-store-mb 400 --rate 1gbit; \
	$(NETCLUSTER) exec -- bash -c '$(PY) bench/stream.py --address "$$IRF_NETCLUSTER_ADDRESS" \
		--sizes 1,4,8 --schedulers vanilla,pack,locality --baselines none --iterations 30 --no-progress \
		--json bench/results/cluster/stream.json --plots bench/results/cluster'; \
	$(NETCLUSTER) exec -- bash -c '$(PY) bench/datamove.py --address "$$IRF_NETCLUSTER_ADDRESS" \
		--sizes 1,4,8 --iterations 20 \
		--json bench/results/cluster/datamove.json --plots bench/results/cluster'

bench-placement: build
	$(PY) bench/placement.py --json bench/results/placement.json

clean:
	rm -rf build dist python/irfront/*.so ray_patch/*.so *.egg-info
	-bazel clean
