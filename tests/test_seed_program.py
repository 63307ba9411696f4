"""The 2018 draft's streaming program, written from the seed's API alone (its ``main()``,
its functions' signatures: ``map_step(start_time, batch)``, ``shuffle(num_reducers,
use_groups, batch)``, ``Reducer.reduce(self, *partitions)``), run on a
``ray.cluster_utils.Cluster`` joined with plain ``ray.init(address=...)`` and no
``irfront.init`` call: the default scheduler (locality) applies."""
from __future__ import annotations

import collections
import gc
import time
from types import SimpleNamespace

import numpy as np
import pytest
import ray

import irfront
import ray_patch
from conftest import NUM_NODES, needs_core
from irfront import Broadcast, InitActors, Map, ReduceActors

pytestmark = [needs_core, pytest.mark.timeout(300)]

NUM_CPUS = 4  # map partitions per node, as in the draft


# ---- the seed's program, as the draft writes it ------------------------------------------
@ray.remote
def generate_dependencies(data_size):
    return np.random.default_rng(0).integers(0, 100, data_size).astype(np.float64)


@ray.remote
def map_step(start_time, batch):
    return batch + 1.0


@ray.remote
def shuffle(num_reducers, use_groups, batch):
    return [float(c.sum()) for c in np.array_split(batch, num_reducers)]


@ray.remote
class Reducer(object):
    def __init__(self, index):
        self.index = index
        self.value = 0.0
        self.latencies = []

    def reduce(self, *partitions):
        self.value += sum(p[self.index] for p in partitions)

    def get(self):
        return self.value

    def get_latencies(self):
        return self.latencies


def main(args):
    reducer_args = [[i] for i in range(args.num_reducers)]
    reducers = InitActors(Reducer, args.num_reducers, reducer_args)
    dependencies = Broadcast(generate_dependencies, args.num_nodes * NUM_CPUS, args.data_size)

    for _ in range(args.num_iterations):
        start = time.time()
        map_ins = dependencies
        maps = []
        for _ in range(args.num_maps):
            map_ins = Map(map_step, map_ins, args=[[start] for _ in range(len(map_ins))])
            maps.append(map_ins)

        shuffle_args = [[args.num_reducers, args.use_groups] for _ in range(len(map_ins))]
        shuffled = Map(shuffle, map_ins, shuffle_args)
        ReduceActors('reduce', reducers, shuffled).eval()

        time.sleep(0.1)

    latencies = ray.get([reducer.get_latencies.remote() for reducer in reducers.eval()])
    return reducers, maps, shuffled, latencies


ARGS = SimpleNamespace(num_reducers=NUM_NODES * 2, num_nodes=NUM_NODES, data_size=1000,
                       num_iterations=3, num_maps=2, use_groups=True)


def expected_sums(args=ARGS):
    x = np.random.default_rng(0).integers(0, 100, args.data_size).astype(np.float64)
    x = x + args.num_maps
    parts = args.num_nodes * NUM_CPUS
    return [args.num_iterations * parts * float(c.sum())
            for c in np.array_split(x, args.num_reducers)]


# ---- the checks ------------------------------------------------------------------------------
@pytest.fixture
def plain_ray(cluster, scheduler_mode):
    """irfront's options at their defaults (no irfront.init). The session's cluster is a
    ray.cluster_utils.Cluster that the driver joined with plain ray.init(address=...)
    (what irfront.cluster.LocalCluster does); reconnecting here would only cost time."""
    assert ray.is_initialized() and len([n for n in ray.nodes() if n["Alive"]]) >= NUM_NODES
    irfront.set_options(irfront.LoweringOptions())
    yield
    gc.collect()
    assert ray_patch.core_group_count() == 0


def nodes_of(node):
    return ray_patch.get_runtime().groups[node.group_id].nodes.tolist()


def test_seed_program_on_the_default_scheduler(plain_ray):
    assert irfront.get_options().scheduler == "locality"
    reducers, maps, shuffled, latencies = main(ARGS)
    totals = ray.get([r.get.remote() for r in reducers.eval()])
    np.testing.assert_allclose(totals, expected_sums(), rtol=1e-12)
    assert latencies == [[] for _ in range(ARGS.num_reducers)]
    # The maps and the shuffle are one fused group (one task per partition), spread evenly.
    counts = shuffled.placement().counts
    assert sorted(counts.values()) == [NUM_CPUS] * NUM_NODES
    # Reducers spread over the nodes: two each.
    assert sorted(reducers.placement().counts.values()) == [2] * NUM_NODES
    # Placed lazily by the first ReduceActors, depending on that batch's shuffle group.
    assert reducers.placement().depends_on is not None


def test_seed_program_unfused_maps_follow_their_producers(plain_ray):
    with irfront.lowering_options(fuse=False):
        reducers, maps, shuffled, _ = main(ARGS)
    totals = ray.get([r.get.remote() for r in reducers.eval()])
    np.testing.assert_allclose(totals, expected_sums(), rtol=1e-12)
    first = nodes_of(maps[0])
    assert sorted(collections.Counter(first).values()) == [NUM_CPUS] * NUM_NODES
    assert nodes_of(maps[1]) == first  # every later Map task on its producer's node
    assert nodes_of(shuffled) == first
    assert sorted(reducers.placement().counts.values()) == [2] * NUM_NODES


# The default scheduler and vanilla Ray in `make test`; the other two in `make test-slow`
# (each run starts its eight reducer actors, a few seconds of CPU on 2 cores).
@pytest.mark.parametrize("scheduler", [
    pytest.param(s, marks=() if s in ("locality", "vanilla") else pytest.mark.slow)
    for s in irfront.SCHEDULERS])
def test_seed_program_under_every_scheduler(plain_ray, scheduler):
    with irfront.lowering_options(scheduler=scheduler):
        reducers, _, shuffled, _ = main(ARGS)
    totals = ray.get([r.get.remote() for r in reducers.eval()])
    np.testing.assert_allclose(totals, expected_sums(), rtol=1e-12)
    assert shuffled.placement().scheduler == scheduler
