"""IR optimisations (irfront/passes/ and node-batched groups): same reducer sums as vanilla under every switch
combination; fusion runs one task per partition; shuffle-by-node writes one object per
node; pre-scheduled (gated) batches through the stream driver."""
from __future__ import annotations

import gc
import itertools
import operator
import os
import sys

import numpy as np
import pytest
import ray

import irfront
import ray_patch
import ray_patch.executors as executors
from conftest import NUM_NODES, ROOT, needs_core
from irfront import Broadcast, InitActors
from irfront import Batch, MicroBatchStream, options_for

sys.path.insert(0, os.path.join(ROOT, "bench"))
import stream_workload as wl  # noqa: E402

pytestmark = [needs_core, pytest.mark.timeout(180)]

PARTS = NUM_NODES * 2
REDUCERS = NUM_NODES + 2  # 2, 2, 1, 1 per node: per-node objects of one and two parts
MAPS = 2
DATA_MB = 0.01
BATCHES = 3


@pytest.fixture(autouse=True)
def clean(cluster, scheduler_mode):
    ray.cloudpickle.register_pickle_by_value(wl)
    yield
    gc.collect()
    assert ray_patch.group_count() == 0, ray_patch.get_runtime().groups
    assert ray_patch.core_group_count() == 0


def run_pipeline(opts, ahead=False, combine=None):
    """BATCHES micro-batches of the benchmark's program; the reducers' totals."""
    with irfront.lowering_options(opts):
        reducers = InitActors(wl.Reducer, REDUCERS, [(i,) for i in range(REDUCERS)])
        deps = Broadcast(wl.generate_dependencies, PARTS, DATA_MB, 3)

        def submit(start):
            return wl.build_batch(deps, reducers, MAPS, REDUCERS, start,
                                  combine=combine).eval()

        stream = MicroBatchStream(interval_s=0.02, max_in_flight=2)
        stream.run([Batch(submit, ahead=ahead) for _ in range(BATCHES)])
        stream.close()
        return ray.get([h.get_total.remote() for h in reducers.eval()])


@pytest.fixture(scope="module")
def vanilla_totals(cluster):
    ray.cloudpickle.register_pickle_by_value(wl)
    return run_pipeline(options_for("vanilla"))


COMBOS = [f"locality{'' if f else '-nofuse'}{'' if s else '-noshuffle'}"
          for f, s in itertools.product((True, False), repeat=2)]


# In `make test-slow` (each run here creates its reducer actors, a few seconds on 2 cores):
# two or more switches away from a default, and the single switches that `make test`'s
# short chaos matrix (tests/test_chaos.py) already runs, with exact sums, under faults.
IN_CHAOS = [("locality-nofuse", False), ("locality-noshuffle", False),
            ("locality-nobatch", False), ("locality-noexec", False),
            ("locality-noplan", False), ("locality-nocombine/combine", False),
            ("locality+ahead", True)]
COMPOUND = [("locality-nofuse-noshuffle+batch", False), ("locality+ahead-noexec", True),
            ("locality-nobatch-noplan", False), ("locality-nobatch/combine", False),
            ("locality-noexec/combine", False), ("pack+fuse+shuffle+batch", False),
            ("locality-nofuse-noshuffle+ahead", True)]


@pytest.mark.parametrize("name,ahead", [
    (c, False) for c in COMBOS if (c, False) not in IN_CHAOS] + [
    ("locality/combine", False), ("locality+ahead/combine", True),
    ("vanilla/combine", False),
    ("pack+fuse+shuffle", False), ("vanilla+fuse", False)] + [
    pytest.param(n, a, marks=pytest.mark.slow) for n, a in IN_CHAOS + COMPOUND])
def test_reducer_sums_equal_vanilla(name, ahead, vanilla_totals):
    combine = None
    if name.endswith("/combine"):  # the program declares its reducers' merge
        name, combine = name[:-len("/combine")], operator.add
    opts = options_for(name)
    totals = run_pipeline(opts, ahead=ahead, combine=combine)
    x = np.random.default_rng(3).random(int(DATA_MB * (1 << 20)) // 8)
    expect = [BATCHES * PARTS * float(c.sum()) for c in np.array_split(x, REDUCERS)]
    np.testing.assert_allclose(vanilla_totals, expect, rtol=1e-12)
    np.testing.assert_allclose(totals, vanilla_totals, rtol=1e-12)


def test_the_switches_left_to_test_slow_run_under_faults_in_make_test():
    """IN_CHAOS's switches are lowering configurations of the short chaos matrix."""
    from test_chaos import FAST
    under_faults = {(c.options, c.ahead) for c, _ in FAST}
    for name, ahead in IN_CHAOS:
        assert (name.split("/")[0], ahead) in under_faults, name


def test_defaults_on_under_locality_only():
    for s in ("fuse", "shuffle_by_node"):
        assert irfront.LoweringOptions(scheduler="locality").enabled(s)
    for s in ("fuse", "shuffle_by_node", "preschedule"):
        assert not irfront.LoweringOptions(scheduler="vanilla").enabled(s)
        assert not irfront.LoweringOptions(scheduler="pack").enabled(s)
    # Pre-scheduling is opt-in (its p99 cost on a quiet machine: docs/BENCHMARKS.md).
    assert not irfront.LoweringOptions(scheduler="locality").enabled("preschedule")
    assert irfront.LoweringOptions(scheduler="locality", preschedule=True).enabled("preschedule")
    assert irfront.LoweringOptions(scheduler="locality").enabled("executors")
    assert not irfront.LoweringOptions(scheduler="pack").enabled("executors")
    with pytest.raises(ValueError, match="executors needs a grouped scheduler"):
        irfront.LoweringOptions(scheduler="vanilla", executors=True)
    assert irfront.LoweringOptions(scheduler="locality").enabled("plan_cache")
    assert not options_for("locality-noplan").enabled("plan_cache")
    assert options_for("pack+plan").plan_cache is True
    with pytest.raises(ValueError, match="plan_cache needs a grouped scheduler"):
        irfront.LoweringOptions(scheduler="vanilla", plan_cache=True)
    opts = options_for("locality-nofuse+ahead")
    assert (opts.fuse, opts.shuffle_by_node, opts.preschedule) == (False, True, True)
    assert options_for("locality-plain").fuse is False
    assert options_for("vanilla+fuse").fuse is True
    with pytest.raises(ValueError, match="unknown scheduler variant"):
        options_for("locality-nofusion")


def _group_record(gid):
    return ray_patch.get_runtime().groups[gid]


def test_fused_chain_is_one_group_of_one_task_per_partition():
    irfront.init(scheduler="locality", shuffle_by_node=False)
    deps = Broadcast(wl.generate_dependencies, PARTS, DATA_MB, 1)
    m1 = irfront.Map(wl.map_step, deps, [(0.0,)] * PARTS)
    m2 = irfront.Map(wl.map_step, m1, [(0.0,)] * PARTS)
    sh = irfront.Map(wl.shuffle, m2, [(4,)] * PARTS, num_returns=4)
    out = sh.get()
    x = np.random.default_rng(1).random(int(DATA_MB * (1 << 20)) // 8)
    assert out == [[float(c.sum()) for c in np.array_split(x, 4)]] * PARTS
    rec = _group_record(sh.group_id)
    assert rec.name == "map_step+map_step+shuffle" and len(rec.nodes) == PARTS
    p = sh.placement()
    assert p.depends_on == deps.group_id and sum(p.counts.values()) == PARTS
    assert not m1.evaluated and not m2.evaluated  # fused away, never submitted
    # A Map used twice is not fused into either consumer.
    m3 = irfront.Map(wl.map_step, deps, [(0.0,)] * PARTS)
    both = irfront.ReduceActors("reduce", InitActors(wl.Reducer, 2, [(0,), (1,)]),
                                irfront.Map(wl.map_step, m3, [(0.0,)] * PARTS),
                                [(0.0, None)] * 2)
    assert [len(x) for x in [both.eval()]] == [2]


@pytest.mark.parametrize("batch", [False, True])
def test_shuffle_by_node_writes_one_object_per_node(batch):
    irfront.init(scheduler="locality", batch_tasks=batch)
    n = NUM_NODES * 2
    reducers = InitActors(wl.Reducer, n, [(i,) for i in range(n)])
    deps = Broadcast(wl.generate_dependencies, PARTS, DATA_MB, 2)
    red = wl.build_batch(deps, reducers, MAPS, n, 0.0)
    red.get()
    sh = red.objects
    assert not sh.evaluated and sh.group_id is not None  # group, no per-actor futures
    rec = _group_record(sh.group_id)
    nodes = len(reducers.placement().counts)
    assert sorted(reducers.placement().counts.values()) == [2] * NUM_NODES  # balanced
    if batch:  # one task per node, one object per (source node, destination node)
        assert len(rec.keys) == NUM_NODES * nodes
        assert rec.name.endswith("@node")
    else:  # one object per (task, destination node), not per reducer
        assert len(rec.keys) == PARTS * nodes
    assert red.placement().depends_on == sh.group_id


def test_executors_run_each_nodes_share_as_an_actor_call():
    """locality (executors on): one persistent executor actor per node, reused by every
    batch; the shuffle's objects are still one per (source node, destination node)."""
    irfront.set_options(options_for("locality"))
    n = NUM_NODES * 2
    reducers = InitActors(wl.Reducer, n, [(i,) for i in range(n)])
    deps = Broadcast(wl.generate_dependencies, PARTS, DATA_MB, 2)
    for _ in range(3):
        red = wl.build_batch(deps, reducers, MAPS, n, 0.0)
        red.get()
    rt = ray_patch.get_runtime()
    alive = set(rt.alive_nodes())
    pinned = executors.executor_nodes(rt)
    assert len(alive) == NUM_NODES and alive <= set(pinned)
    # Each executor runs on the node it was pinned to (Ray ignores a soft affinity for a
    # request of no resources: the executor asks for one byte of memory).
    for hexid in alive:
        got = ray.get(pinned[hexid].__ray_call__.remote(
            lambda self: ray.get_runtime_context().get_node_id()), timeout=60)
        assert got == hexid
    rec = _group_record(red.objects.group_id)
    assert len(rec.keys) == NUM_NODES * len(reducers.placement().counts)
    assert sorted(reducers.placement().counts.values()) == [2] * NUM_NODES
    x = np.random.default_rng(2).random(int(DATA_MB * (1 << 20)) // 8)
    want = [3 * PARTS * float(c.sum()) for c in np.array_split(x, n)]
    got = ray.get([h.get_total.remote() for h in reducers.eval()])
    np.testing.assert_allclose(got, want, rtol=1e-12)


@ray.remote
def tagged(k, tag, x):
    """Per-partition arguments that differ: the output depends on each call's own."""
    return x * k + tag


@ray.remote
def split3(k, x):
    return float(x.sum()) * k, float(x.min()), k


@pytest.mark.parametrize("name", ["locality", "locality-nobatch", "locality-nofuse",
                                  "pack+batch", "spread+batch", "locality-noexec",
                                  "locality-noplan", "pack+plan"])
def test_each_optimisation_gives_vanilla_results_with_differing_arguments(name):
    def program():
        deps = Broadcast(wl.generate_dependencies, PARTS, DATA_MB, 4)
        a = irfront.Map(tagged, deps, [(i + 1, 10.0 * i) for i in range(PARTS)])
        b = irfront.Map(split3, a, [(i,) for i in range(PARTS)], num_returns=3)
        return [[x.tolist() if hasattr(x, "tolist") else x for x in r] for r in b.get()]

    with irfront.lowering_options(scheduler="vanilla", fuse=False, shuffle_by_node=False):
        want = program()
    with irfront.lowering_options(options_for(name)):
        got = program()
    assert got == want
    assert [r[2] for r in got] == list(range(PARTS))  # each call's outputs, in call order


def test_batched_group_keeps_every_output_addressable_and_placed():
    irfront.init(scheduler="locality", fuse=False)
    deps = Broadcast(wl.generate_dependencies, PARTS, DATA_MB, 5)
    m = irfront.Map(tagged, deps, [(1, float(i)) for i in range(PARTS)])
    refs = m.eval()
    assert len(refs) == PARTS and len({r.binary() for r in refs}) == PARTS
    counts = m.placement().counts
    assert sum(counts.values()) == PARTS and len(counts) == NUM_NODES
    # A later group reads the batched outputs by their producer: it follows them.
    after = irfront.Map(tagged, m, [(1, 0.0)] * PARTS)
    after.eval()
    assert _group_record(after.group_id).nodes.tolist() == \
        _group_record(m.group_id).nodes.tolist()


def test_plan_cache_reuses_placements_until_the_node_table_changes():
    """The same stage of the next batch (same shape, inputs on the same nodes) reuses the
    first batch's placement, recorded in the core; per-partition arguments still differ
    per batch; a reported failure invalidates every plan (the next batch solves)."""
    seen, stats = [], []
    ray_patch.configure(plan_max_age_s=600.0)  # no expiry by age on a slow machine
    try:
        with irfront.lowering_options(options_for("locality-nofuse-nobatch")):
            deps = Broadcast(wl.generate_dependencies, PARTS, DATA_MB, 6)
            x = ray.get(deps.eval()[0])
            for k in range(4):
                a = irfront.Map(tagged, deps, [(k + i, float(i)) for i in range(PARTS)])
                b = irfront.Map(split3, a, [(i,) for i in range(PARTS)], num_returns=3)
                got = b.get()
                want = [float((x * (k + i) + float(i)).sum()) * i for i in range(PARTS)]
                assert [r[0] for r in got] == pytest.approx(want, rel=1e-12)
                # Reused or solved, the last group is recorded in the core (its load)
                core_nodes = ray_patch.get_runtime().scheduler.group_nodes(
                    b.placement().group_id)
                assert core_nodes is not None and len(core_nodes) == PARTS
                seen.append((a.placement().counts, b.placement().counts))
                stats.append(ray_patch.plan_stats())
                if k == 1:
                    ray_patch.node_failed()  # nothing died, but every plan is dropped
                a.free()
                b.free()
            deps.free()
    finally:
        ray_patch.configure(plan_max_age_s=5.0)
    hits = [st["hits"] for st in stats]
    version = [st["version"] for st in stats]
    # Batch 2 solves both groups after the reported failure; batches 1 and 3 reuse both,
    # unless the node table itself changed in between (another test's node, seen late:
    # the reasons are in the stats).
    assert version[2] > version[1] and hits[2] == hits[1], stats
    clean = [k for k in (1, 3) if version[k] == version[k - 1]]
    assert clean, f"the node table changed during every batch: {stats}"
    for k in clean:
        assert hits[k] - hits[k - 1] == 2, (k, stats)
        assert seen[k] == seen[k - 1], (k, seen)  # a reused plan: the same nodes


@ray.remote
class CountingReducer:
    """Sums its partials and remembers how many each call got."""

    def __init__(self):
        self.total, self.counts = 0.0, []

    def reduce(self, start, tag, *partials):
        self.total += sum(partials)
        self.counts.append(len(partials))

    def seen(self):
        return self.total, self.counts


@pytest.mark.parametrize("name,per_call", [("locality", NUM_NODES),
                                           ("locality-nocombine", PARTS),
                                           ("locality-nobatch", PARTS)])
def test_combine_merges_each_nodes_partials_per_reducer(name, per_call):
    """With combine=operator.add a grouped shuffle run per node sends each reducer one
    merged partial per source node; the sums are the same as one per partition."""
    with irfront.lowering_options(options_for(name)):
        deps = Broadcast(wl.generate_dependencies, PARTS, DATA_MB, 7)
        reducers = InitActors(CountingReducer, REDUCERS)
        for _ in range(2):
            wl.build_batch(deps, reducers, MAPS, REDUCERS, 0.0, combine=operator.add).get()
        seen = ray.get([h.seen.remote() for h in reducers.eval()])
    x = np.random.default_rng(7).random(int(DATA_MB * (1 << 20)) // 8)
    want = [2 * PARTS * float(c.sum()) for c in np.array_split(x, REDUCERS)]
    np.testing.assert_allclose([t for t, _ in seen], want, rtol=1e-12)
    # the partitions are spread over every node, so each node sends one merged partial
    assert [c for _, counts in seen for c in counts] == [per_call] * (2 * REDUCERS)


def test_combine_is_checked_where_the_node_is_built():
    deps = Broadcast(wl.generate_dependencies, PARTS, DATA_MB, 7)
    reducers = InitActors(wl.Reducer, REDUCERS, [(i,) for i in range(REDUCERS)])
    shuffled = irfront.Map(wl.shuffle, deps, [(REDUCERS,)] * PARTS, num_returns=REDUCERS)
    with pytest.raises(irfront.IRError, match="combine must be a plain function"):
        irfront.ReduceActors("reduce", reducers, shuffled, [(0.0, None)] * REDUCERS,
                             combine="sum")

    @ray.remote
    class Fixed:
        def reduce(self, a, b, c, d, e, f, g, h):
            return 0

    fixed = InitActors(Fixed, REDUCERS)
    irfront.ReduceActors("reduce", fixed, shuffled)  # 8 partials: fine without combine
    with pytest.raises(irfront.IRError, match=r"take them as \*partials"):
        irfront.ReduceActors("reduce", fixed, shuffled, combine=operator.add)
