"""``irfront.infer``: plain Ray programs, unchanged, run through the IR.

The seed's streaming app written in plain Ray (``map_step(start_time, batch)``,
``shuffle(num_reducers, batch)``, ``Reducer.reduce(self, *partitions)``) gives the same
reducer state as plain Ray and as the IR version, is recognised as Broadcast, Map, Map,
Map, ReduceActors, and is placed as the IR places it. Programs it cannot infer run
unchanged and say why; random small programs give identical results with and without it.
"""
from __future__ import annotations

import collections
import gc
import threading
import time

import numpy as np
import pytest
import ray
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import irfront
import ray_patch
from conftest import NUM_NODES, needs_core
from irfront.inference import patch
from test_seed_program import generate_dependencies, map_step

pytestmark = [needs_core, pytest.mark.timeout(600)]

PARTS = NUM_NODES * 4  # map partitions: four per node, as in the draft
REDUCERS = NUM_NODES * 2


# ---- the seed's app, in plain Ray ------------------------------------------------------------
# generate_dependencies and map_step are the seed's own (tests/test_seed_program.py); the
# shuffle here returns its list without the draft's use_groups flag.
@ray.remote
def shuffle(num_reducers, batch):
    """One list per batch: a partial sum per reducer."""
    return [float(c.sum()) for c in np.array_split(batch, num_reducers)]


@ray.remote
def shuffle_k(num_reducers, batch):
    """The same, as one return per reducer (called with num_returns=num_reducers)."""
    return tuple(float(c.sum()) for c in np.array_split(batch, num_reducers))


@ray.remote
class Reducer:
    def __init__(self, index):
        self.index = index
        self.value = 0.0

    def reduce(self, *partitions):
        if partitions and isinstance(partitions[0], list):
            self.value += sum(p[self.index] for p in partitions)
        else:
            self.value += sum(partitions)

    def get(self):
        return self.value


def seed_app(iterations=3, num_maps=2, data_size=1000, returns="list"):
    """The draft's streaming loop as a Ray user writes it, with no irfront in it."""
    reducers = [Reducer.remote(i) for i in range(REDUCERS)]
    deps = generate_dependencies.remote(data_size)
    for _ in range(iterations):
        start = time.time()
        map_ins = [deps] * PARTS
        for _ in range(num_maps):
            map_ins = [map_step.remote(start, x) for x in map_ins]
        if returns == "list":
            shuffled = [shuffle.remote(REDUCERS, x) for x in map_ins]
            for r in reducers:
                r.reduce.remote(*shuffled)
        else:
            shuffled = [shuffle_k.options(num_returns=REDUCERS).remote(REDUCERS, x)
                        for x in map_ins]
            for i, r in enumerate(reducers):
                r.reduce.remote(*[s[i] for s in shuffled])
        time.sleep(0.01)
    return reducers, ray.get([r.get.remote() for r in reducers])


def ir_app(iterations=3, num_maps=2, data_size=1000):
    """The same pipeline written with the IR."""
    reducers = irfront.InitActors(Reducer, REDUCERS, [[i] for i in range(REDUCERS)])
    deps = irfront.Broadcast(generate_dependencies, PARTS, data_size)
    for _ in range(iterations):
        start = time.time()
        x = deps
        for _ in range(num_maps):
            x = irfront.Map(map_step, x, [[start]] * PARTS)
        irfront.ReduceActors("reduce", reducers, irfront.Map(shuffle, x, [[REDUCERS]] * PARTS)
                             ).eval()
    return ray.get([r.get.remote() for r in reducers.eval()])


@pytest.fixture
def defaults(cluster, scheduler_mode):
    irfront.set_options(irfront.LoweringOptions())
    yield
    assert patch.current() is None  # no block left recording
    with irfront.infer():  # the last session (explain_inferred) holds nothing now
        pass
    gc.collect()
    assert ray_patch.core_group_count() == 0  # inferred groups end with their nodes


def nodes_of(node):
    return ray_patch.get_runtime().groups[node.group_id].nodes.tolist()


def flush_nodes(session, i):
    return {n.kind + ":" + n.name: n for n in session.flushes[i].ir}


@pytest.fixture(scope="module")
def plain_and_ir_sums(cluster):
    """The seed app's reducer sums, plainly and as the IR: computed once for the module
    (each run starts 8 actor processes). Both shuffle shapes give each reducer the same
    partial sums, so one plain run is the reference for both."""
    with irfront.lowering_options(irfront.LoweringOptions()):
        _, plain = seed_app(returns="list")
        ir = ir_app()
    gc.collect()  # the IR app's nodes, and so its groups, end here
    return plain, ir


@pytest.mark.parametrize("returns", ["list", "num_returns"])
def test_seed_app_inferred_equals_plain_ray_and_the_ir(defaults, plain_and_ir_sums, returns):
    plain, ir = plain_and_ir_sums
    inferred = irfront.infer(seed_app)
    reducers, sums = inferred(returns=returns)
    np.testing.assert_allclose(sums, plain, rtol=1e-12)
    np.testing.assert_allclose(sums, ir, rtol=1e-12)
    # What comes back from the function is real Ray.
    assert all(isinstance(r, ray.actor.ActorHandle) for r in reducers)
    s = inferred.session
    first = [k for k in s.flushes[0].kinds]
    assert first == ["InitActors", "Broadcast", "Map", "Map", "Map", "ReduceActors"]
    # One evaluation per batch, when its graph closed (before the sleep), then the gets.
    batches = [f for f in s.flushes if f.nodes]
    assert len(batches) == 3
    assert all("graph closing" in f.why for f in batches)
    assert [k for f in batches[1:] for k in f.kinds] == ["Map", "Map", "Map",
                                                         "ReduceActors"] * 2
    text = inferred.explain()
    assert "Broadcast[generate_dependencies]" in text and "ReduceActors[reduce]" in text
    assert "plain Ray: Reducer.get x8 (no object arguments)" in text
    assert irfront.explain_inferred() == text


def test_seed_app_inferred_is_placed_as_the_ir_places_it(defaults):
    inferred = irfront.infer(seed_app, keep_nodes=True)
    inferred()
    nodes = flush_nodes(inferred.session, 0)
    # The fused chain (map_step, map_step, shuffle): one task per partition, spread evenly.
    counts = nodes["Map:shuffle"].placement().counts
    assert sorted(counts.values()) == [PARTS // NUM_NODES] * NUM_NODES
    assert sorted(nodes["InitActors:Reducer"].placement().counts.values()) == \
        [REDUCERS // NUM_NODES] * NUM_NODES
    # Unfused, every later stage runs on its producer's node.
    with irfront.lowering_options(fuse=False):
        inferred()
    nodes = flush_nodes(inferred.session, 0)
    first = nodes_of(nodes["Map:map_step"])
    assert sorted(collections.Counter(first).values()) == [PARTS // NUM_NODES] * NUM_NODES
    assert nodes_of(nodes["Map:shuffle"]) == first


# ---- programs it cannot infer run unchanged, and say why ----------------------------------
@ray.remote
def src(v):
    return np.array([v, v + 1.0])


@ray.remote
def inc(c, x):
    return x + c


@ray.remote
def scale(c, x):
    return x * c


@ray.remote
def join(x, y):
    return x + y


@ray.remote
def split2(x):
    return x[:1].copy(), x[1:].copy()


@ray.remote
def boom(c, x):
    raise ValueError(f"boom {c}")


@ray.remote
def nested(c, x):
    """Submits tasks from inside a task (plain Ray in the worker)."""
    return ray.get(inc.remote(c, x)) * 2


def branching():
    x = src.remote(1.0)
    if ray.get(x)[0] > 0:  # data-dependent branching on a result
        ys = [inc.remote(i, x) for i in range(int(ray.get(x)[1]) + 1)]  # dynamic fan-out
    else:
        ys = [scale.remote(2, x)]
    return ray.get(ys)


def test_branching_and_dynamic_fanout_run_unchanged_and_say_why(defaults):
    plain = branching()
    f = irfront.infer(branching)
    np.testing.assert_allclose(f(), plain)
    text = f.explain()
    assert "ray.get" in text
    assert "a single task that no stage reads" in text  # the branch's source task
    assert "Map[inc]" in text  # the fan-out, over the evaluated source


def test_unrecognised_calls_run_plainly_with_their_reason(defaults):
    @irfront.infer
    def prog():
        xs = [src.remote(float(i)) for i in range(3)]  # a stage over plain values
        ys = [join.remote(x, x) for x in xs]  # two references, last: a Join
        ys = [join.remote(x=y, y=y) for y in ys]  # references as keywords: plain
        zs = [inc.remote(c=1, x=y) for y in ys]  # keyword arguments: a Map
        ws = [inc.options(num_cpus=0.5).remote(1, z) for z in zs]  # resources: a Map
        vs = [inc.options(name="mine").remote(1, w) for w in ws]  # other task options
        return ray.get(vs)

    with irfront.infer():
        pass  # an empty block is fine
    got = prog()
    want = prog.__wrapped__()  # the function itself: plain Ray
    np.testing.assert_allclose(got, want)
    text = prog.explain()
    for reason in ("a join whose references are not its last positional arguments",
                   "task options ['name']"):
        assert reason in text
    # src, the join, inc (keywords), inc
    assert prog.session.kinds() == ["Map", "Join", "Map", "Map"]


def test_errors_refs_wait_threads_and_nested_tasks_keep_ray_semantics(defaults):
    def prog():
        xs = [src.remote(1.0)] * 3
        bad = [boom.remote(i, x) for i, x in enumerate(xs)]
        good = [nested.remote(i, x) for i, x in enumerate(xs)]
        return bad, good

    with pytest.raises(ValueError, match="boom 1") as plain_err:
        ray.get(prog()[0][1])
    bad, good = irfront.infer(prog)()
    assert all(isinstance(r, ray.ObjectRef) for r in bad + good)
    with pytest.raises(ValueError, match="boom 1") as err:
        ray.get(bad[1])
    # Ray makes a RayTaskError(ValueError) class per error: compare what it wraps.
    assert type(err.value.cause) is type(plain_err.value.cause) is ValueError
    assert str(err.value.cause) == str(plain_err.value.cause)
    np.testing.assert_allclose(ray.get(good), [[2, 4], [4, 6], [6, 8]])

    with irfront.infer():
        ys = [inc.remote(1, x) for x in [src.remote(2.0)] * 4]
        assert irfront.is_deferred(ys[0]) and not isinstance(ys[0], ray.ObjectRef)
        ready, rest = ray.wait(ys, num_returns=4, timeout=60)
        assert sorted(map(id, ready)) == sorted(map(id, ys)) and rest == []
        other = []
        t = threading.Thread(target=lambda: other.append(inc.remote(1, src.remote(0.0))))
        t.start()
        t.join(60)
        assert isinstance(other[0], ray.ObjectRef)  # another thread: plain Ray
        assert isinstance(ys[0].hex(), str)  # a real ref's method: resolves it
    np.testing.assert_allclose(ray.get(ys), [[3, 4]] * 4)


def test_bad_arguments_say_what_to_pass():
    with pytest.raises(TypeError, match="decorates a function"):
        irfront.infer(3)
    with pytest.raises(ValueError, match="max_pending"):
        irfront.infer(max_pending=0)


# ---- property: random small programs, with and without infer --------------------------------
@ray.remote
class Acc:
    def __init__(self, i):
        self.i, self.total = i, 0.0

    def add(self, *xs):
        self.total += sum(float(np.sum(x)) for x in xs)
        return self.total

    def one(self, x):
        self.total += float(np.sum(x)) * (self.i + 1)
        return self.total

    def get(self):
        return self.total


def random_program(ops):
    """A small DAG of Ray calls from ``ops`` (triples of small ints)."""
    lists = [[src.remote(1.0)] * 3]
    actors, outs = [], []
    for op, a, b in ops:
        xs = lists[a % len(lists)]
        if op == 0:
            lists.append([inc.remote(b, x) for x in xs])
        elif op == 1:
            lists.append([scale.remote(b % 3 + 1, x) for x in xs])
        elif op == 2:
            lists.append([src.remote(float(b))] * (b % 4 + 1))
        elif op == 3:
            ys = lists[b % len(lists)]
            lists.append([join.remote(x, y) for x, y in zip(xs, ys)])
        elif op == 4:
            parts = [split2.options(num_returns=2).remote(x) for x in xs]
            lists += [[p[0] for p in parts], [p[1] for p in parts]]
        elif op == 5:
            actors = [Acc.remote(i) for i in range(b % 3 + 1)]
        elif op == 6 and actors:
            outs += [act.add.remote(*xs) for act in actors]
        elif op == 7 and actors and len(xs) == len(actors):
            outs += [act.one.remote(x) for act, x in zip(actors, xs)]
        elif op == 8:
            lists.append([inc.remote(1, xs[b % len(xs)])])
    values = ray.get([x for xs in lists for x in xs])
    return ([v.tolist() for v in values], ray.get(outs),
            ray.get([act.get.remote() for act in actors]))


OPS = st.lists(st.tuples(st.integers(0, 8), st.integers(0, 5), st.integers(0, 5)),
               min_size=1, max_size=8)


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_random_programs_give_what_plain_ray_gives(defaults, ops):
    want = random_program(ops)
    got = irfront.infer(random_program)(ops)
    assert got == want
