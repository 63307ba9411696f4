"""Bad input, tried at scale (hypothesis): the IR constructors, ray_patch's group
submission and the C++ core's entry points. Every bad call must raise a clear ValueError
or TypeError naming the problem, never crash the process, and never corrupt state: a
valid call right after still gives what it gives on a fresh object.

tests/test_scheduler_properties.py already checks placement properties and eight fixed
bad calls; here the bad calls themselves are generated."""
from __future__ import annotations

import math

import numpy as np
import pytest
import ray
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import irfront
from conftest import needs_core
from irfront import Broadcast, InitActors, IRError, Map, MapActors, ReduceActors

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
FEW = settings(max_examples=12, deadline=None,
               suppress_health_check=[HealthCheck.too_slow,
                                      HealthCheck.function_scoped_fixture])

# Values of the wrong kind, the wrong size and the wrong sign.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.sampled_from([0, -1, 1, 2**63 - 1,
                                                                           -2**63, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5), st.binary(max_size=3),
    st.just(object()), st.just(print),
)
weird = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(st.text(max_size=2),
                                                                            inner, max_size=2)),
    max_leaves=6)


@ray.remote
def task(x=None, *rest):
    return x


@ray.remote
class Actor:
    def __init__(self, *a):
        pass

    def reduce(self, *a):
        return len(a)

    def step(self, *a):
        return a[-1]


def valid_count(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 1


# ---- IR constructors (no Ray calls: nodes are data) ------------------------------------------
def only_ir_errors(build):
    try:
        return build()
    except IRError as e:
        assert "#" in str(e) and ":" in str(e)  # names the node: Kind[name]#uid: ...
        return None


@FUZZ
@given(n=weird)
def test_broadcast_n(n):
    node = only_ir_errors(lambda: Broadcast(task, n))
    assert (node is not None) == valid_count(n)


@FUZZ
@given(task_=weird)
def test_a_non_remote_task_is_refused(task_):
    for build in (lambda: Broadcast(task_, 1), lambda: Map(task_, [1])):
        with pytest.raises(IRError, match="task must be a @ray.remote function"):
            build()
    with pytest.raises(IRError, match="actor_cls must be a @ray.remote class"):
        InitActors(task_, 1)


@FUZZ
@given(objects=weird, args=weird, num_returns=weird)
def test_map_arguments(objects, args, num_returns):
    node = only_ir_errors(lambda: Map(task, objects, args, num_returns=num_returns))
    if node is not None:
        assert isinstance(objects, (list, tuple)) and len(objects) >= 1
        # None: the task's own num_returns (1 for this task).
        assert num_returns is None or valid_count(num_returns)
        k = 1 if num_returns is None else num_returns
        assert node.num_returns == k
        assert args is None or len(args) == len(objects)
        assert len(node) == len(objects) and node.num_objects == len(objects) * k


@FUZZ
@given(n=weird, args=weird)
def test_init_actors_arguments(n, args):
    node = only_ir_errors(lambda: InitActors(Actor, n, args))
    if node is not None:
        assert valid_count(n) and (args is None or len(args) == n)


@FUZZ
@given(method=weird | st.sampled_from(["reduce", "step", "__init__", "nope", ""]),
       n=st.integers(1, 4), objects=weird, args=weird)
def test_actor_calls_arguments(method, n, objects, args):
    actors = InitActors(Actor, n)
    for cls in (ReduceActors, MapActors):
        node = only_ir_errors(lambda: cls(method, actors, objects, args))
        if node is not None:
            assert method in ("reduce", "step") and len(node) == n


@FUZZ
@given(k=st.integers(-3, 6), n=st.integers(1, 5))
def test_shuffle_width_must_match_the_reducers(k, n):
    src = only_ir_errors(lambda: Map(task, [1, 2], num_returns=k))
    if src is None:
        assert k < 1
        return
    node = only_ir_errors(lambda: ReduceActors("reduce", InitActors(Actor, n), src))
    assert (node is None) == (k > 1 and k != n)


# ---- the C++ core's entry points ------------------------------------------------------------
arrays = st.one_of(
    weird,
    st.lists(st.integers(-5, 5), max_size=6),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
    st.builds(np.array, st.lists(st.integers(-2**63, 2**63 - 1), max_size=4),
              dtype=st.just(np.int64)),
    st.builds(lambda n: np.zeros((n, 2)), st.integers(0, 3)),
    st.builds(lambda v: np.array(v, dtype=np.uint64), st.lists(st.integers(0, 2**64 - 1),
                                                               max_size=3)),
    st.builds(lambda v: np.array(v, dtype=object), st.lists(scalars, max_size=3)),
)
CALLS = ["add_node", "update_node", "remove_node", "place", "place_arrays", "group_nodes",
         "free_group"]


def fresh():
    from ray_patch.scheduler import GroupScheduler
    s = GroupScheduler()
    for j, c in enumerate([2, 2, 4]):
        s.add_node(j, c)
    s.update_node(2, alive=False)  # a dead node, for the calls to trip on
    assert s.place(1, [1.0] * 4, policy="spread").feasible
    return s


def reference_call(s):
    """A valid call whose answer must not depend on what bad calls came before."""
    from ray_patch.scheduler import Input
    return s.place(99, [1.0] * 3, [[Input(10, nodes=(0,))], [Input(5, producer=(1, 2))], []],
                   policy="locality")


def snapshot(s):
    return s.nodes(), s.group_count(), [None if s.group_nodes(g) is None else
                                        s.group_nodes(g).tolist() for g in (1, 99)]


def call(s, name, a):
    if name == "add_node":
        return s.add_node(a[0], a[1])
    if name == "update_node":
        return s.update_node(a[0], cpus=a[1], alive=a[2])
    if name == "remove_node":
        return s.remove_node(a[0])
    if name == "place":
        return s.place(a[0], a[1], a[2], depends_on=a[3], policy=a[4])
    if name == "place_arrays":
        return s.place_arrays(*a[:8], depends_on=a[8], policy=a[9])
    if name == "group_nodes":
        return s.group_nodes(a[0])
    return s.free_group(a[0])


policies = st.one_of(st.sampled_from(["pack", "locality", "spread", "actors"]), weird)


@needs_core
@FUZZ
@given(name=st.sampled_from(CALLS), args=st.lists(arrays | policies, min_size=10,
                                                  max_size=10))
def test_core_never_crashes_and_stays_consistent(name, args):
    s = fresh()
    before = snapshot(s)
    try:
        out = call(s, name, args)
    except (ValueError, TypeError) as e:
        assert str(e), "an error must say what is wrong"
        assert snapshot(s) == before, f"{name} raised {e!r} but changed the state"
    else:
        if name == "place_arrays" or name == "place":
            assert out.feasible in (True, False)
            if not out.feasible:
                assert out.reason
    # Whatever happened, the scheduler still answers a valid call, as it should.
    if name in ("update_node", "remove_node", "add_node", "free_group", "place",
                "place_arrays") and snapshot(s) != before:
        return  # a valid membership/placement change: the reference answer may differ
    assert reference_call(s) == reference_call(fresh())


@needs_core
@FUZZ
@given(size=st.one_of(st.integers(-2**63, 2**63 - 1), st.sampled_from([-1, 2**62, 2**63 - 1])),
       cpus=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)),
       node=st.integers(-3, 6))
def test_core_sizes_cpus_and_node_ids(size, cpus, node):
    s = fresh()
    before = snapshot(s)
    try:
        p = s.place_arrays(7, [cpus], [0, 1], [size], [], [], [0, 1], [node])
    except ValueError as e:
        # The core's documented limits: bytes >= 0 and at most 2^50 in all.
        bad = (size < 0 or size > 2**50 or not math.isfinite(cpus) or cpus < 0 or node < 0)
        assert bad or "node" in str(e), e
        assert snapshot(s) == before
    else:
        assert 0 <= size <= 2**50 and math.isfinite(cpus) and cpus >= 0
        if p.feasible:
            assert p.bytes_moved in (0, size)  # no overflow, no garbage
            assert p.nodes.tolist()[0] in (0, 1)  # alive nodes only (2 is dead)
    assert reference_call(s) == reference_call(fresh())


@needs_core
@pytest.mark.parametrize("policy", ["pack", "locality", "spread", "actors"])
def test_core_empty_and_all_dead_clusters(policy):
    from ray_patch.scheduler import GroupScheduler
    s = GroupScheduler()
    with pytest.raises(ValueError, match="empty cluster: add nodes with add_node"):
        s.place(1, [1.0, 1.0], policy=policy)
    assert s.group_count() == 0
    s.add_node(0, 2.0)
    s.update_node(0, alive=False)
    p = s.place(1, [1.0], policy=policy)  # all dead: infeasible, with a reason
    assert not p.feasible and p.reason and s.group_count() == 0
    s.update_node(0, alive=True)
    assert s.place(1, [1.0], policy=policy).feasible


@needs_core
def test_core_huge_group_and_mismatched_huge_arrays():
    s = fresh()
    n = 200_000
    p = s.place_arrays(5, np.ones(n), [], [], [], [], [], [], policy="spread")
    assert p.feasible and len(p.nodes) == n and set(p.counts) == {0, 1}
    with pytest.raises(ValueError):  # n + 1 offsets expected
        s.place_arrays(6, np.ones(n), np.zeros(n, np.int64), [], [], [], [], [])
    s.free_group(5)
    assert reference_call(s) == reference_call(fresh())


# ---- ray_patch group submission (needs Ray: the session cluster, few examples) --------------
group_args = st.one_of(weird, st.lists(st.tuples(st.integers(-3, 3)), max_size=4),
                       st.lists(st.lists(st.integers(0, 3), max_size=3), max_size=3))
opt_ints = st.one_of(st.none(), st.integers(-3, 4), st.sampled_from([2**40, -2**40]), weird)


@needs_core
@pytest.mark.timeout(300)
@FEW
@given(args=group_args, policy=policies, num_returns=opt_ints, dep=opt_ints,
       max_retries=opt_ints, gid=st.one_of(st.none(), st.integers(-2, 3), weird))
# found by a fresh clone's run: two returns declared, one value returned
@example(args=[(1,)], policy="pack", num_returns=2, dep=None, max_retries=None, gid=None)
def test_submit_group_bad_input(cluster, args, policy, num_returns, dep, max_retries, gid):
    import ray_patch
    from ray_patch import GroupError
    start = (ray_patch.group_count(), ray_patch.core_group_count())
    refs = None
    try:
        refs = ray_patch.submit_group(task, args, policy=policy, num_returns=num_returns,
                                      group_dependency=dep, max_retries=max_retries,
                                      group_id=gid)
    except (ValueError, TypeError) as e:  # GroupError is a ValueError
        assert str(e)
        assert (ray_patch.group_count(), ray_patch.core_group_count()) == start, e
    if refs is not None:
        assert isinstance(args, (list, tuple)) and len(refs) == len(args)
        try:
            ray.get([r for x in refs for r in (x if isinstance(x, list) else [x])],
                    timeout=60)
        except ray.exceptions.RayTaskError as e:
            # num_returns > 1 for a task that returns one value: the task fails when it
            # returns, as it does in plain Ray (Ray takes len() of the value)
            assert isinstance(e.cause, TypeError) and isinstance(num_returns, int) \
                and num_returns > 1, e
        finally:
            ray_patch.free_groups([refs.group_id])
    # A valid group right after works, and the bookkeeping is back where it started.
    ok = ray_patch.group_map(task, range(4))
    assert ray.get(ok, timeout=60) == [0, 1, 2, 3]
    ray_patch.free_groups([ok.group_id])
    assert (ray_patch.group_count(), ray_patch.core_group_count()) == start


@needs_core
@pytest.mark.timeout(300)
@FEW
@given(n=opt_ints, args=weird, inputs=weird, policy=policies)
def test_group_actors_bad_input(cluster, n, args, inputs, policy):
    import ray_patch
    start = (ray_patch.group_count(), ray_patch.core_group_count())
    try:
        actors = ray_patch.group_actors(Actor, n, args, inputs=inputs, policy=policy)
    except (ValueError, TypeError) as e:
        assert str(e)
        assert (ray_patch.group_count(), ray_patch.core_group_count()) == start, e
    else:
        ray_patch.free_groups([actors.group_id])
        for a in actors:
            ray.kill(a)
    assert (ray_patch.group_count(), ray_patch.core_group_count()) == start
