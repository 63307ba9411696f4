"""irfront.cluster: the local cluster is on loopback; a dead node's tasks are re-placed."""
from __future__ import annotations

import collections

import pytest
import ray

import ray_patch
from conftest import NUM_NODES, needs_core
from irfront.cluster import _AGENTS, check_loopback

pytestmark = pytest.mark.timeout(180)


@ray.remote
def where(x=None):
    return ray.get_runtime_context().get_node_id()


def test_cluster_is_on_loopback_with_the_asked_shape(cluster):
    # Ray keeps removed nodes in ray.nodes() (Alive=False): every node, dead or alive, is
    # on loopback; the shape is that of the alive ones (tests that add a node remove it).
    assert set(check_loopback()) == {"127.0.0.1"}
    alive = [n for n in ray.nodes() if n["Alive"]]
    assert [n["NodeManagerAddress"] for n in alive] == ["127.0.0.1"] * NUM_NODES
    assert len(cluster.node_ids()) == NUM_NODES
    assert {n["Resources"]["CPU"] for n in alive} == {2.0}
    assert "running" in repr(cluster)


@needs_core
def test_tasks_pinned_to_a_dead_node_are_replaced(cluster):
    extra = cluster.add_node()
    try:
        _dead_node_test(cluster, extra)
    finally:  # leave the shared cluster in its asked shape, whatever happened
        if extra in cluster.worker_nodes:
            cluster.remove_node(extra)
        ray_patch.refresh_nodes()
    assert len(cluster.node_ids()) == NUM_NODES


def _dead_node_test(cluster, extra):
    extra_id = extra.node_id
    ray_patch.refresh_nodes()
    refs = ray_patch.group_map(where, range(10))
    assert extra_id in ray_patch.placement(refs.group_id)  # some tasks went there
    ray.get(refs)
    cluster.remove_node(extra)
    # Within the refresh interval the node table still lists the dead node; soft pins
    # let the tasks run elsewhere, and the next refresh drops the node.
    again = ray_patch.group_map(where, range(10))
    nodes = ray.get(again, timeout=60)
    assert extra_id not in nodes
    ray_patch.refresh_nodes()
    later = ray_patch.group_map(where, range(8))
    assert extra_id not in ray_patch.placement(later.group_id)
    assert sorted(collections.Counter(ray.get(later)).values()) == [2] * NUM_NODES
    ray_patch.free_groups([refs.group_id, again.group_id, later.group_id])
    assert ray_patch.group_count() == 0


def test_process_ids_name_every_nodes_agents(cluster):
    """What the session's reaper kills by pid includes the agents each raylet started
    (Ray 2.60's agents can outlive a SIGKILLed raylet): no process is left behind."""
    import psutil
    ids = set(cluster.process_ids())
    agents = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.cmdline()[:1] and p.cmdline()[0] in _AGENTS:
                agents.append(p.pid)
        except psutil.Error:
            continue
    assert agents, "no agent found: ray[default] is installed for the tests"
    assert set(agents) <= ids, sorted(set(agents) - ids)
