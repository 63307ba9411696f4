"""Shared fixtures: one local Ray cluster (4 nodes x 2 CPUs, all on 127.0.0.1) per test
session, torn down at the end. Tests that need Ray take the ``cluster`` fixture. The
first worker node also has the custom resource ``SPECIAL_RESOURCES`` (tasks that demand
it may run only there; no other task asks for it)."""
from __future__ import annotations

import os
import sys

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before ray is imported

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
for p in (os.path.join(ROOT, "python"), ROOT, TESTS):
    if p not in sys.path:
        sys.path.insert(0, p)

import pytest  # noqa: E402
import ray  # noqa: E402

NUM_NODES = 4
CPUS_PER_NODE = 2
SPECIAL_RESOURCES = {"special": 2}  # on the first worker node only


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: a long test (minutes) that `make test` leaves out; `make test-slow` "
                   "runs it")


def special_node() -> str:
    """Ray hex id of the session cluster's node with SPECIAL_RESOURCES."""
    return next(n["NodeID"] for n in ray.nodes()
                if n["Alive"] and n["Resources"].get("special"))


_SESSION_CLUSTERS: list = []


def pytest_sessionfinish(session, exitstatus):
    session.config._irf_exitstatus = int(exitstatus)


_REAPER = """
import os, signal, sys, time
parent, pids = int(sys.argv[1]), [int(p) for p in sys.argv[2:]]
def alive(p):
    try:
        os.kill(p, 0)
        return True
    except OSError:
        return False
deadline = time.monotonic() + 60
while alive(parent) and time.monotonic() < deadline:
    time.sleep(0.05)
for sig in (signal.SIGTERM, signal.SIGKILL):
    for p in pids:
        if alive(p):
            try:
                os.kill(p, sig)
            except OSError:
                pass
    end = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.1)
"""


def pytest_unconfigure(config):
    """The session cluster stops here, after pytest has printed its summary, and the
    exit status is the tests'. Ray's core worker can end the driver process while it
    shuts down (a Ray object released from another thread against the torn-down
    worker), so the driver does not shut Ray down in-process: it exits, and a reaper
    process it starts ends the cluster's processes by pid once it is gone."""
    if not _SESSION_CLUSTERS:
        return
    import subprocess
    status = getattr(config, "_irf_exitstatus", None)
    pids = [p for c in _SESSION_CLUSTERS for p in c.process_ids()]
    subprocess.Popen([sys.executable, "-c", _REAPER, str(os.getpid()),
                      *map(str, pids)], start_new_session=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if status is None else status)


@pytest.fixture(scope="session")
def cluster():
    """A running 4-node local cluster with the driver connected to it (stopped after
    the session's summary, ``pytest_unconfigure``)."""
    from irfront.cluster import LocalCluster

    class SessionCluster(LocalCluster):
        def _node_args(self, cpus: int) -> dict:
            args = super()._node_args(cpus)
            if self._cluster is not None and not self.worker_nodes:  # the first worker
                args["resources"] = dict(SPECIAL_RESOURCES)
            return args

    if ray.is_initialized():
        ray.shutdown()
    # Workers import the test modules (tasks defined there) from tests/. Metrics are
    # exported every 2 s (Ray's default: 10 s), so test_metrics waits less for them.
    c = SessionCluster(num_nodes=NUM_NODES, cpus_per_node=CPUS_PER_NODE,
                       object_store_mb=200, pythonpath=[TESTS],
                       system_config={"metrics_report_interval_ms": 2000})
    _SESSION_CLUSTERS.append(c)
    yield c


@pytest.fixture
def scheduler_mode():
    """Restores the IR's lowering options after a test that changes them."""
    import irfront
    old = irfront.get_options()
    yield
    irfront.set_options(old)


def has_core() -> bool:
    try:
        from ray_patch.scheduler import GroupScheduler  # noqa: F401
        return True
    except Exception:
        return False


needs_core = pytest.mark.skipif(not has_core(), reason="ray_patch._scheduler not built "
                                "(run: python setup.py build_ext --inplace)")
