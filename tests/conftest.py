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


def pytest_unconfigure(config):
    """The session cluster stops here, after pytest has printed its summary: Ray's
    core worker can end the process while it shuts down (a Ray object released from
    another thread against the torn-down worker), which must not hide the summary or
    change the exit status."""
    if not _SESSION_CLUSTERS:
        return
    status = getattr(config, "_irf_exitstatus", None)
    sys.stdout.flush()
    sys.stderr.flush()
    for c in _SESSION_CLUSTERS:
        c.shutdown()
    if status is not None:
        os._exit(status)


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
    # Workers import the test modules (tasks defined there) from tests/.
    c = SessionCluster(num_nodes=NUM_NODES, cpus_per_node=CPUS_PER_NODE,
                       object_store_mb=200, pythonpath=[TESTS])
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
