"""Shared fixtures: one local Ray cluster (4 nodes x 2 CPUs, all on 127.0.0.1) per test
session, torn down at the end. Tests that need Ray take the ``cluster`` fixture."""
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


@pytest.fixture(scope="session")
def cluster():
    """A running 4-node local cluster with the driver connected to it."""
    from irfront.cluster import LocalCluster
    if ray.is_initialized():
        ray.shutdown()
    # Workers import the test modules (tasks defined there) from tests/.
    c = LocalCluster(num_nodes=NUM_NODES, cpus_per_node=CPUS_PER_NODE,
                     object_store_mb=200, pythonpath=[TESTS])
    try:
        yield c
    finally:
        c.shutdown()


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
