"""ray_patch: group-aware submission of plain Ray functions and actors, without the IR."""
from __future__ import annotations

import collections

import pytest
import ray

import ray_patch
from conftest import NUM_NODES, SPECIAL_RESOURCES, needs_core, special_node

pytestmark = [needs_core, pytest.mark.timeout(120)]


@ray.remote
def where(x=None):
    ctx = ray.get_runtime_context()
    return ctx.get_node_id(), ctx.get_task_name()


@ray.remote
def add(x, y):
    return x + y


@ray.remote
def pair(x):
    return x, x + 1


@ray.remote
class Probe:
    def __init__(self, i):
        self.i = i

    def node(self):
        return ray.get_runtime_context().get_node_id()


def plain(x):
    return x


@pytest.fixture(autouse=True)
def no_groups_left(cluster):
    yield
    assert ray_patch.core_group_count() == 0


def test_group_map_spreads_a_group_evenly_and_names_its_tasks(cluster):
    # 8 tasks with no inputs on 4 nodes x 2 CPUs: two per node, names carry the group.
    refs = ray_patch.group_map(where, range(8))
    out = ray.get(refs)
    counts = collections.Counter(n for n, _ in out)
    assert sorted(counts.values()) == [2] * NUM_NODES
    assert [name for _, name in out] == [f"where[g{refs.group_id}]"] * 8
    assert ray_patch.placement(refs.group_id) == dict(counts)
    ray_patch.free_groups([refs.group_id])


def test_dependent_group_runs_where_its_producers_ran(cluster):
    first = ray_patch.group_map(where, range(8))
    # Each task of the second group reads one output of the first: it runs on that
    # output's node, and names the first group as its dependency.
    second = ray_patch.group_map(where, first)
    got_first = [n for n, _ in ray.get(first)]
    got_second = [n for n, _ in ray.get(second)]
    assert got_second == got_first
    assert ray_patch.get_runtime().groups[second.group_id].depends_on == first.group_id
    ray_patch.free_groups([first.group_id, second.group_id])
    assert ray_patch.group_count() == 0


def test_following_group_is_pinned_task_by_task(cluster):
    src = ray_patch.group_map(pair, range(8), num_returns=2)
    assert all(len(r) == 2 for r in src)
    nxt = ray_patch.group_map(where, [r[0] for r in src])
    rt = ray_patch.get_runtime()
    assert list(rt.groups[nxt.group_id].nodes) == list(rt.groups[src.group_id].nodes)
    assert rt.groups[nxt.group_id].depends_on == src.group_id
    ray_patch.free_groups([src.group_id, nxt.group_id])


def test_grouped_wrapper_is_a_one_line_change(cluster):
    plain_refs = [add.remote(x, 1) for x in range(4)]
    g = ray_patch.grouped(add)
    group_refs = g.starmap([(x, 1) for x in range(4)])
    assert ray.get(group_refs) == ray.get(plain_refs) == [1, 2, 3, 4]
    one = g.remote(41, 1)
    assert ray.get(one) == 42
    assert ray_patch.group_count() >= 2
    ray_patch.free_groups([group_refs.group_id])
    ray_patch.free_groups(list(ray_patch.get_runtime().groups))
    assert ray_patch.group_count() == 0


def test_actor_group_is_balanced(cluster):
    actors = ray_patch.group_actors(Probe, 4, [(i,) for i in range(4)])
    nodes = ray.get([a.node.remote() for a in actors])
    assert len(set(nodes)) == NUM_NODES
    calls = ray_patch.call_actors(actors, "node", [()] * 4)
    assert ray.get(calls) == nodes
    ray_patch.free_groups([actors.group_id, calls.group_id])
    assert ray_patch.group_count() == 0


def test_free_groups_twice_and_unknown_ids_are_fine(cluster):
    refs = ray_patch.group_starmap(add, [(1, 2), (3, 4)])
    ray_patch.free_groups([refs.group_id])
    ray_patch.free_groups([refs.group_id, 10**9])
    assert ray_patch.group_count() == 0


def test_plain_function_is_rejected_with_the_fix(cluster):
    with pytest.raises(ray_patch.GroupError, match="plain function 'plain'; decorate it "
                       "with @ray.remote"):
        ray_patch.group_map(plain, [1])
    with pytest.raises(ray_patch.GroupError, match="use group_actors"):
        ray_patch.group_map(Probe, [1])
    with pytest.raises(ray_patch.GroupError, match=r"args\[0\] is int 1; each entry must be a tuple or list"):
        ray_patch.group_starmap(add, [1, 2])
    with pytest.raises(ray_patch.GroupError, match="2 argument tuples for 3 actors"):
        ray_patch.group_actors(Probe, 3, [(1,), (2,)])


def test_group_submission_adds_one_placement_and_no_ray_round_trip(cluster, monkeypatch):
    """What a group submission adds over plain ``.remote()`` is counted here, not timed (a
    time measures the machine's load; bench/submit_overhead.py has the figure): n tasks
    are n Ray submissions, the whole group is placed once, and nothing blocks on Ray."""
    import ray_patch.submit as submit
    n = 64
    ray.get([add.remote(i, 0) for i in range(n)])  # warm workers
    counts = collections.Counter()

    def counting(name, real):
        def call(*a, **kw):
            counts[name] += 1
            return real(*a, **kw)
        return call

    monkeypatch.setattr(ray.remote_function.RemoteFunction, "_remote",
                        counting("submit", ray.remote_function.RemoteFunction._remote))
    monkeypatch.setattr(submit, "place", counting("place", submit.place))
    for name in ("get", "wait", "put"):
        monkeypatch.setattr(ray, name, counting(name, getattr(ray, name)))
    refs = ray_patch.group_starmap(add, [(i, 0) for i in range(n)])
    assert dict(counts) == {"submit": n, "place": 1}
    monkeypatch.undo()
    assert ray.get(list(refs)) == list(range(n))
    ray_patch.free_groups([refs.group_id])


# ---- Ray's task options --------------------------------------------------------------------
@ray.remote(max_retries=0)
def no_retry(x):
    return x + 1


def test_options_wrappers_are_accepted_and_kept(cluster):
    """f.options(...) is a group like f; its options (and a user's max_retries) are kept."""
    # Every submission, with or without .options(), ends in RemoteFunction._remote with
    # the task's options merged: watch what reaches it.
    seen = []
    real = ray.remote_function.RemoteFunction._remote

    def spy(self, args=None, kwargs=None, **kw):
        seen.append(kw)
        return real(self, args=args, kwargs=kwargs, **kw)

    ray.remote_function.RemoteFunction._remote = spy
    try:
        refs = ray_patch.group_starmap(add.options(max_retries=1, retry_exceptions=False),
                                       [(1, 2), (3, 4)])
        assert ray.get(refs) == [3, 7]
        kept = [kw for kw in seen if "scheduling_strategy" in kw]
        assert kept and kept[-1]["max_retries"] == 1 and kept[-1]["retry_exceptions"] is False
        seen.clear()
        refs2 = ray_patch.group_map(no_retry, [1, 2])  # the decorator's max_retries=0
        assert ray.get(refs2) == [2, 3]
        pinned = [kw for kw in seen if "scheduling_strategy" in kw]
        assert pinned and all(kw["max_retries"] == 0 for kw in pinned)
    finally:
        ray.remote_function.RemoteFunction._remote = real
    ray_patch.free_groups([refs.group_id, refs2.group_id])


def test_a_users_own_strategy_is_not_overwritten(cluster):
    refs = ray_patch.group_map(where.options(scheduling_strategy="SPREAD"), range(4))
    assert len(ray.get(refs)) == 4
    assert ray_patch.placement(refs.group_id) == {"unpinned": 4}
    ray_patch.free_groups([refs.group_id])


# ---- GPUs and custom resources: placed by the core, only where they are ----------------------
@pytest.mark.parametrize("policy", ["locality", "pack", "spread"])
def test_a_custom_resource_demand_is_pinned_only_where_the_resource_is(cluster, policy):
    """One node has {"special": 2}: a group demanding special=1 per task is placed by the
    core on that node alone, pinned (not left to Ray), with correct results."""
    special = special_node()
    refs = ray_patch.group_starmap(add.options(resources={"special": 1}),
                                   [(i, 1) for i in range(6)], policy=policy)
    assert ray.get(refs, timeout=60) == [i + 1 for i in range(6)]
    assert ray_patch.placement(refs.group_id) == {special: 6}
    ran = ray_patch.group_map(where.options(resources={"special": 1}), range(3),
                              policy=policy)
    assert {node for node, _ in ray.get(ran, timeout=60)} == {special}
    ray_patch.free_groups([refs.group_id, ran.group_id])


def test_a_dependent_group_with_a_demand_leaves_its_producers_nodes(cluster):
    special = special_node()
    first = ray_patch.group_starmap(add, [(i, 0) for i in range(NUM_NODES * 2)])
    assert len(ray_patch.placement(first.group_id)) == NUM_NODES  # spread over all
    second = ray_patch.group_map(where.options(resources={"special": 1}), first)
    assert {node for node, _ in ray.get(second, timeout=60)} == {special}
    assert ray_patch.placement(second.group_id) == {special: NUM_NODES * 2}
    ray_patch.free_groups([first.group_id, second.group_id])


def test_actors_with_a_custom_resource_start_where_it_is(cluster):
    special = special_node()
    actors = ray_patch.group_actors(Probe.options(num_cpus=0, resources={"special": 1}), 2,
                                    [(i,) for i in range(2)])
    try:
        assert set(ray.get([a.node.remote() for a in actors], timeout=60)) == {special}
        assert ray_patch.placement(actors.group_id) == {special: 2}
    finally:  # they hold the node's "special" units: let later tests have them
        for a in actors:
            ray.kill(a)
    ray_patch.free_groups([actors.group_id])


def test_no_node_with_the_resource_is_an_error_naming_it(cluster):
    with pytest.raises(ray_patch.GroupError, match=r"nowhere 1\).*node 0: nowhere 0 < 1"):
        ray_patch.group_map(add.options(resources={"nowhere": 1}), [1])
    with pytest.raises(ray_patch.GroupError, match=r"special 3"):
        ray_patch.group_map(add.options(resources={"special": 3}), [1])
    assert SPECIAL_RESOURCES["special"] < 3


def test_a_users_own_actor_strategy_means_unpinned_actors(cluster):
    actors = ray_patch.group_actors(Probe.options(num_cpus=0, scheduling_strategy="SPREAD"),
                                    2, [(i,) for i in range(2)])
    nodes = ray.get([a.node.remote() for a in actors], timeout=60)
    # Ray placed them; the group reports where they started.
    assert ray_patch.placement(actors.group_id) == dict(collections.Counter(nodes))
    assert ray_patch.get_runtime().groups[actors.group_id].policy == "unpinned"
    for a in actors:
        ray.kill(a)
    ray_patch.free_groups([actors.group_id])
