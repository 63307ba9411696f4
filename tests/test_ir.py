"""The IR: the seed's pipeline under every scheduler, placement, errors, group lifetime."""
from __future__ import annotations

import collections
import gc
import re

import numpy as np
import pytest
import ray

import irfront
import ray_patch
from conftest import NUM_NODES, needs_core, special_node
from irfront import Broadcast, InitActors, IRError, Map, MapActors, ReduceActors
from irfront.ir.nodes import FusedMap
from irfront.passes import fusion

pytestmark = [needs_core, pytest.mark.timeout(120)]

NUM_PARTS = NUM_NODES * 2
NUM_REDUCERS = 4


@ray.remote
def generate(size, seed):
    return np.random.default_rng(seed).random(size)


@ray.remote
def map_step(k, x):  # the 2018 convention: arguments first, the object last
    return x * 2.0 + k


@ray.remote
def shuffle(num_reducers, x):
    # Partial sums, one per reducer (the draft's tiny shuffle outputs).
    return tuple(float(x[i::num_reducers].sum()) for i in range(num_reducers))


@ray.remote
def where(x=None):
    return ray.get_runtime_context().get_node_id()


@ray.remote
def fails(x):
    raise ZeroDivisionError("boom")


@ray.remote
class Reducer:
    def __init__(self, index):
        self.index = index
        self.total = 0.0

    def reduce(self, *partials):  # every object as a separate argument
        self.total += sum(partials)
        return self.total

    def reduce_scaled(self, scale, *partials):
        self.total += scale * sum(partials)
        return self.total

    def get(self):
        return self.total

    def node(self, x=None):
        return ray.get_runtime_context().get_node_id()


def plain(x):
    return x


@pytest.fixture(autouse=True)
def clean(cluster, scheduler_mode):
    yield
    gc.collect()
    assert ray_patch.group_count() == 0, ray_patch.get_runtime().groups
    assert ray_patch.core_group_count() == 0


def expected_sums(size, num_maps, iterations):
    x = np.random.default_rng(7).random(size)
    for k in range(num_maps):
        x = x * 2.0 + k
    return [iterations * float(x[i::NUM_REDUCERS].sum()) * NUM_PARTS
            for i in range(NUM_REDUCERS)]


@pytest.mark.parametrize("scheduler", ["vanilla", "pack", "locality"])
def test_seed_pipeline_gives_the_plain_python_sums(scheduler):
    irfront.init(scheduler=scheduler)
    size, num_maps, iterations = 10_000, 2, 3
    reducers = InitActors(Reducer, NUM_REDUCERS, [[i] for i in range(NUM_REDUCERS)])
    deps = Broadcast(generate, NUM_PARTS, size, 7)
    for _ in range(iterations):
        map_ins = deps
        for k in range(num_maps):
            map_ins = Map(map_step, map_ins, args=[[k] for _ in range(len(map_ins))])
        shuffled = Map(shuffle, map_ins, [[NUM_REDUCERS]] * len(map_ins),
                       num_returns=NUM_REDUCERS)
        ReduceActors("reduce", reducers, shuffled).eval()
    totals = ray.get([r.get.remote() for r in reducers.eval()])
    np.testing.assert_allclose(totals, expected_sums(size, num_maps, iterations), rtol=1e-9)
    assert reducers.placement().scheduler == scheduler


def test_locality_spreads_a_broadcast_fed_map_and_follows_producers():
    irfront.init(scheduler="locality")
    deps = Broadcast(generate, NUM_PARTS, 1000, 1)
    first = Map(where, deps)
    nodes = first.get()
    counts = collections.Counter(nodes)
    assert sorted(counts.values()) == [NUM_PARTS // NUM_NODES] * NUM_NODES
    assert first.placement().counts == dict(counts)
    second = Map(where, first)  # each task on its producer's node
    assert second.get() == nodes
    assert second.placement().depends_on == first.group_id


def test_actors_are_placed_lazily_and_balanced():
    irfront.init(scheduler="locality")
    reducers = InitActors(Reducer, NUM_REDUCERS, [(i,) for i in range(NUM_REDUCERS)])
    shuffled = Map(shuffle, Broadcast(generate, NUM_PARTS, 100, 2),
                   [(NUM_REDUCERS,)] * NUM_PARTS, num_returns=NUM_REDUCERS)
    assert not reducers.evaluated
    red = ReduceActors("reduce_scaled", reducers, shuffled, args=[(1.0,)] * NUM_REDUCERS)
    assert not reducers.evaluated  # constructing a node evaluates nothing
    red.eval()
    assert reducers.evaluated
    placement = reducers.placement()
    assert placement.depends_on == shuffled.group_id  # inherited from ReduceActors
    nodes = ray.get([r.node.remote() for r in reducers.eval()])
    assert len(set(nodes)) == NUM_NODES
    assert placement.counts == {n: 1 for n in nodes}
    # MapActors: actor i gets object i.
    per_actor = MapActors("node", reducers, Map(where, Broadcast(generate, NUM_REDUCERS,
                                                                 10, 3)))
    assert per_actor.get() == nodes


def test_reduce_actors_gets_the_ith_return_of_every_task():
    irfront.init(scheduler="pack")
    reducers = InitActors(Reducer, 2, [(0,), (1,)])
    parts = Map(shuffle, Broadcast(generate, 3, 10, 5), [(2,)] * 3, num_returns=2)
    red = ReduceActors("reduce", reducers, parts)
    x = np.random.default_rng(5).random(10)
    assert red.get() == pytest.approx([3 * x[0::2].sum(), 3 * x[1::2].sum()])
    assert [len(p) for p in parts.get()] == [2, 2, 2]


def test_same_program_same_results_under_each_scheduler():
    results = {}
    for s in ("vanilla", "pack", "locality"):
        with irfront.lowering_options(scheduler=s):
            m = Map(map_step, Broadcast(generate, 4, 50, 9), [(1.0,)] * 4)
            results[s] = [a.tolist() for a in m.get()]
            assert m.placement().scheduler == s
    assert results["vanilla"] == results["pack"] == results["locality"]


def test_repr_shows_the_node_and_its_dag():
    m = Map(map_step, Broadcast(generate, 2, 10, 0), [(1,), (2,)])
    assert m.label.startswith("Map[map_step]#") and len(m.label.split("#")[1]) == 4
    assert repr(m) == f"{m.label}({m.objects.label})"
    assert m.objects.label.startswith("Broadcast[generate]#")
    assert "not evaluated" in m.explain()


def test_eval_is_memoised_and_free_releases_the_group():
    irfront.init(scheduler="locality")
    m = Map(where, Broadcast(generate, 4, 10, 0))
    refs = m.eval()
    assert m.eval() is refs
    gid = m.group_id
    assert ray_patch.placement(gid) is not None
    m.free()
    m.free()  # twice is fine
    assert ray_patch.placement(gid) is None
    with pytest.raises(IRError, match=rf"{re.escape(m.label)}: evaluated after its group g{gid} was "
                       r"freed.*build a new Map\(\.\.\.\) node"):
        m.eval()
    m.objects.free()


def test_dropping_nodes_frees_their_groups():
    irfront.init(scheduler="locality", fuse=False)  # one group per Map (fusion: one per chain)
    deps = Broadcast(generate, 4, 10, 0)
    for _ in range(3):
        m = Map(map_step, Map(map_step, deps, [(1,)] * 4), [(2,)] * 4)
        m.get()
    assert ray_patch.group_count() >= 3
    del m, deps
    gc.collect()
    assert ray_patch.group_count() == 0


# ---- errors --------------------------------------------------------------------------------
def test_args_that_do_not_match_the_objects():
    deps = Broadcast(generate, 4, 10, 0)
    with pytest.raises(IRError, match=r"Map\[map_step\]#[0-9a-f]{4}: got 3 argument tuples "
                       r"for 4 objects; pass one per object, e\.g\. args=\[\(x,\)"):
        Map(map_step, deps, [(1,)] * 3)
    with pytest.raises(IRError, match=r"args\[0\] is int 1; each entry must be a tuple or "
                       r"list"):
        Map(map_step, deps, [1, 2, 3, 4])
    with pytest.raises(IRError, match=r"ReduceActors\[reduce\]#.*got 1 argument tuples for "
                       r"2 actors"):
        ReduceActors("reduce", InitActors(Reducer, 2), deps, [(1,)])


def test_non_remote_function_and_class():
    with pytest.raises(IRError, match=r"Map\[plain\]#[0-9a-f]{4}: task must be a @ray\.remote "
                       r"function; got plain function 'plain'; decorate it with @ray\.remote"):
        Map(plain, [1, 2])
    with pytest.raises(IRError, match=r"Broadcast\[Reducer\]#.*got actor class 'Reducer'; "
                       r"use InitActors"):
        Broadcast(Reducer, 2)

    class Local:
        pass

    with pytest.raises(IRError, match=r"InitActors\[Local\]#.*got plain class 'Local'; "
                       r"decorate the class with @ray\.remote"):
        InitActors(Local, 2)


def test_unknown_actor_method_and_wrong_shapes():
    actors = InitActors(Reducer, 2)
    deps = Broadcast(generate, 4, 10, 0)
    with pytest.raises(IRError, match=r"ReduceActors\[redcue\]#.*actor class 'Reducer' has no "
                       r"method 'redcue'; pass one of: get, node, reduce, reduce_scaled"):
        ReduceActors("redcue", actors, deps)
    with pytest.raises(IRError, match=r"num_returns=3 but there are 2 actors; pass "
                       r"num_returns=2 to the Map"):
        ReduceActors("reduce", actors, Map(shuffle, deps, [(3,)] * 4, num_returns=3))
    with pytest.raises(IRError, match=r"MapActors\[node\]#.*got 4 objects for 2 actors"):
        MapActors("node", actors, deps)
    with pytest.raises(IRError, match=r"actors must be an InitActors node"):
        ReduceActors("reduce", [1, 2], deps)
    with pytest.raises(IRError, match=r"n must be a positive int; got 0"):
        Broadcast(generate, 0)


def test_ray_not_initialised(monkeypatch):
    m = Map(where, Broadcast(generate, 2, 10, 0))
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(IRError, match=r"Map\[where\]#.*Ray is not initialised; "
                       r"call irfront\.init\(address=\.\.\.\) or ray\.init\(\) first"):
        m.eval()


def test_empty_cluster(monkeypatch):
    irfront.init(scheduler="locality")
    ray_patch.reset()
    monkeypatch.setattr(ray, "nodes", lambda: [])
    m = Broadcast(generate, 2, 10, 0)
    try:
        with pytest.raises(IRError, match=r"Broadcast\[generate\]#.*no alive node with "
                           r"CPUs; add nodes"):
            m.eval()
    finally:
        monkeypatch.undo()
        ray_patch.reset()


def test_task_failure_names_the_node():
    irfront.init(scheduler="locality")
    m = Map(fails, Broadcast(generate, 2, 10, 0))
    with pytest.raises(ZeroDivisionError) as info:
        m.get()
    assert isinstance(info.value, ray.exceptions.RayTaskError)
    assert any(m.label in n for n in info.value.__notes__)
    with pytest.raises(ZeroDivisionError) as info:
        irfront.get(m.eval())
    assert any(f"fails[g{m.group_id}:" in n for n in info.value.__notes__)


def test_placement_before_eval_says_what_to_do():
    with pytest.raises(IRError, match=r"not evaluated yet; call node\.eval\(\)"):
        Broadcast(generate, 2, 10, 0).placement()


def test_a_method_that_cannot_take_the_call_is_refused_at_construction():
    actors = InitActors(Reducer, 2)
    deps = Broadcast(generate, 4, 10, 0)
    with pytest.raises(IRError, match=r"ReduceActors\[get\]#.*method 'Reducer\.get' "
                       r"\(self, args\[i\], then 4 objects\) takes \(self\)"):
        ReduceActors("get", actors, deps)
    ok = ReduceActors("reduce_scaled", actors, deps, [(1.0,)] * 2)  # scale, *partials
    assert len(ok) == 2


# ---- Ray's options on nodes: f.options(...) / Cls.options(...) -------------------------------
SPECIAL = {"special": 1}


def test_nodes_take_options_wrappers_and_keep_their_options():
    m = Map(map_step.options(num_cpus=2, max_retries=1), [1.0, 2.0], [(0,), (0,)])
    assert m.function is map_step and m.task_options == {"num_cpus": 2, "max_retries": 1}
    assert m.ray_options["num_cpus"] == 2 and m.label.startswith("Map[map_step]#")
    assert Map(shuffle.options(num_returns=3), [1.0], [(3,)]).num_returns == 3
    b = Broadcast(generate.options(resources=SPECIAL), 4, 10, 1)
    assert b.task_options == {"resources": SPECIAL} and len(b) == 4
    actors = InitActors(Reducer.options(num_cpus=0, resources=SPECIAL), 2, [(0,), (1,)])
    assert actors.actor_options == {"num_cpus": 0, "resources": SPECIAL}
    assert actors.ray_options["resources"] == SPECIAL and actors.name == "Reducer"
    ReduceActors("reduce", actors, b)  # methods are checked on the class behind the wrapper
    with pytest.raises(IRError, match="got actor class 'Reducer'"):
        Map(Reducer.options(num_cpus=0), [1.0])
    with pytest.raises(IRError, match="got remote function 'map_step'"):
        InitActors(map_step.options(num_cpus=1), 1)
    with pytest.raises(IRError, match=r"takes \(k, x\)"):
        Map(map_step.options(num_cpus=1), [1.0])  # the signature behind the wrapper


def test_fusion_compares_effective_options():
    done = lambda n: False  # noqa: E731
    src = [1.0, 2.0]
    same = Map(map_step.options(num_cpus=1), Map(map_step, src, [(0,)] * 2), [(1,)] * 2)
    assert isinstance(fusion.apply(same, done), FusedMap)  # num_cpus=1 is the default
    other = Map(map_step, Map(map_step.options(resources=SPECIAL), src, [(0,)] * 2),
                [(1,)] * 2)
    assert not isinstance(fusion.apply(other, done), FusedMap)  # different shapes
    both = Map(map_step.options(resources={"special": 1.0}),
               Map(map_step.options(resources=SPECIAL), src, [(0,)] * 2), [(1,)] * 2)
    fused = fusion.apply(both, done)
    assert isinstance(fused, FusedMap) and fused.ray_options["resources"] == {"special": 1.0}


@pytest.mark.parametrize("scheduler", ["locality", "pack", "spread", "vanilla"])
def test_a_map_demanding_a_custom_resource_runs_only_where_it_is(scheduler):
    """The session cluster's first worker has {"special": 2}: a Map whose task options
    demand special=1 is placed (pinned) by the core on that node alone, fused chains
    included, and gives the plain results."""
    irfront.init(scheduler=scheduler)
    special = special_node()
    deps = Broadcast(generate, NUM_PARTS, 100, 3)
    stepped = Map(map_step.options(resources=SPECIAL), deps, [(1,)] * NUM_PARTS)
    chained = Map(map_step.options(resources=SPECIAL), stepped, [(2,)] * NUM_PARTS)
    want = (np.random.default_rng(3).random(100) * 2.0 + 1) * 2.0 + 2
    for got in chained.get(timeout=60):
        np.testing.assert_allclose(got, want)
    nodes = Map(where.options(resources=SPECIAL), chained).get(timeout=60)
    assert set(nodes) == {special}
    if scheduler != "vanilla":
        assert chained.placement().counts == {special: NUM_PARTS}
    chained.free(), stepped.free(), deps.free()


def test_actors_with_options_are_placed_where_their_resource_is():
    irfront.init(scheduler="locality")
    special = special_node()
    reducers = InitActors(Reducer.options(num_cpus=0, resources=SPECIAL), 2, [(0,), (1,)])
    parts = Broadcast(generate, 4, 10, 5)
    ReduceActors("reduce", reducers, parts).eval()
    handles = reducers.eval()
    try:
        assert set(ray.get([h.node.remote() for h in handles], timeout=60)) == {special}
        assert reducers.placement().counts == {special: 2}
    finally:  # they hold the node's "special" units: let later tests have them
        for h in handles:
            ray.kill(h)


def test_a_resource_no_node_has_is_an_error_naming_it():
    irfront.init(scheduler="locality")
    node = Map(map_step.options(resources={"nowhere": 1}), [1.0], [(0,)])
    with pytest.raises(IRError, match=r"no alive node has the resources each task needs "
                                      r"\(nowhere 1\)"):
        node.eval()


def test_a_users_own_strategy_on_a_node_means_unpinned():
    irfront.init(scheduler="locality")
    node = Map(where.options(scheduling_strategy="SPREAD"), [1, 2, 3, 4])
    assert len(node.get(timeout=60)) == 4
    assert node.placement().counts == {"unpinned": 4}


@ray.remote
class _Adder:
    @irfront.combines(__import__("operator").add)
    def reduce(self, *partials):
        self.total = getattr(self, "total", 0) + sum(int(np.asarray(p).sum())
                                                     for p in partials)

    def plain(self, *partials):
        pass


@ray.remote
def _three(x):
    return x, x, x


def test_a_method_declares_its_combine_once():
    """``@irfront.combines`` on the actor method is what ``combine=`` would say, for every
    ReduceActors on that method (IR or inferred); another method gets none, and an
    explicit ``combine=`` wins."""
    import operator
    actors = InitActors(_Adder, 3)
    parts = Map(_three, [ray.ObjectRef.nil()] * 2, num_returns=3)
    assert ReduceActors("reduce", actors, parts).combine is operator.add
    assert ReduceActors("plain", actors, parts).combine is None
    assert ReduceActors("reduce", actors, parts, combine=max).combine is max
    with pytest.raises(TypeError, match="plain function"):
        irfront.combines(_three)
