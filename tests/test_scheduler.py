"""ray_patch.scheduler through the C++ binding: each policy's basic behaviour, errors with
their messages, group records, dead nodes, infeasible requests."""
from __future__ import annotations

import numpy as np
import pytest

from ray_patch.scheduler import GroupScheduler, Input, Placement, Policy

ALL_POLICIES = list(Policy)


def cluster(*cpus: float) -> GroupScheduler:
    """A scheduler with nodes 0..len(cpus)-1 of the given CPUs."""
    s = GroupScheduler()
    for node_id, c in enumerate(cpus):
        s.add_node(node_id, c)
    return s


def ones(n: int) -> list[float]:
    return [1.0] * n


# -- membership -------------------------------------------------------------------------

def test_nodes_sorted_by_id_with_cpus_and_liveness():
    s = GroupScheduler()
    s.add_node(5, 2.0)
    s.add_node(1, 4)
    s.update_node(5, alive=False)
    s.update_node(1, cpus=8)
    assert s.nodes() == [(1, 8.0, True), (5, 2.0, False)]
    s.remove_node(5)
    assert s.nodes() == [(1, 8.0, True)]


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.add_node(0, 1.0),          # duplicate id
        lambda s: s.add_node(9, -1.0),         # negative cpus
        lambda s: s.add_node(9, float("nan")),  # NaN cpus
        lambda s: s.update_node(9, cpus=1.0),  # unknown id
        lambda s: s.update_node(0, cpus=-2.0),
        lambda s: s.remove_node(9),            # unknown id
    ],
    ids=["duplicate", "negative-cpus", "nan-cpus", "update-unknown", "update-negative",
         "remove-unknown"],
)
def test_membership_errors_are_value_errors(call):
    s = cluster(4.0)
    with pytest.raises(ValueError):
        call(s)
    assert s.nodes() == [(0, 4.0, True)]  # unchanged


def test_update_unknown_node_names_it():
    with pytest.raises(ValueError, match="9"):
        cluster(1.0).update_node(9, alive=False)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: s.add_node("0", 1.0), "node_id must be an int"),
        (lambda s: s.add_node(1, "4"), "cpus must be a number"),
        (lambda s: s.add_node(True, 1.0), "node_id must be an int"),
        (lambda s: s.update_node(0, alive="yes"), "alive must be a bool"),
    ],
)
def test_membership_type_errors(call, message):
    with pytest.raises(TypeError, match=message):
        call(cluster(1.0))


# -- policies ---------------------------------------------------------------------------

def test_locality_puts_each_task_with_its_data():
    s = cluster(4, 4, 4)
    inputs = [[Input(100, nodes=(2,))], [Input(50, nodes=(0,))], [Input(70, nodes=(1,))]]
    p = s.place(1, ones(3), inputs, policy="locality")
    assert isinstance(p, Placement) and p.feasible and p.reason == ""
    assert p.nodes.dtype == np.int64
    assert p.nodes.tolist() == [2, 0, 1]
    assert p.bytes_moved == 0
    assert p.counts == {0: 1, 1: 1, 2: 1}
    assert p.solve_ms >= 0.0


def test_locality_is_the_default_policy_and_moves_the_small_input():
    # Two tasks want node 0 but its share is 1 of 2: the task with less data there moves.
    s = cluster(1, 1)
    p = s.place(1, ones(2), [[Input(10, nodes=(0,))], [Input(1000, nodes=(0,))]])
    assert p.nodes.tolist() == [1, 0]
    assert p.bytes_moved == 10


def test_locality_follows_producer_tasks():
    s = cluster(2, 2, 2, 2)
    first = s.place(1, ones(4), policy="spread")
    assert sorted(first.nodes.tolist()) == [0, 1, 2, 3]
    # Task i of group 2 reads the output of task 3 - i of group 1.
    inputs = [[Input(1000, producer=(1, 3 - i))] for i in range(4)]
    second = s.place(2, ones(4), inputs, depends_on=1, policy=Policy.LOCALITY)
    assert second.nodes.tolist() == first.nodes[::-1].tolist()
    assert second.bytes_moved == 0


def test_locality_counts_bytes_of_inputs_held_elsewhere():
    s = cluster(1, 1)
    # Task 0 reads 300 B on node 0 and 200 B on node 1: one of them must move.
    p = s.place(1, ones(1), [[Input(300, nodes=(0,)), Input(200, nodes=(1,))]])
    assert p.nodes.tolist() == [0]
    assert p.bytes_moved == 200


def test_spread_balances_and_ignores_data():
    s = cluster(4, 4, 4, 4)
    inputs = [[Input(10_000, nodes=(0,))] for _ in range(8)]
    p = s.place(1, ones(8), inputs, policy="spread")
    assert p.counts == {0: 2, 1: 2, 2: 2, 3: 2}
    assert p.bytes_moved == 6 * 10_000  # 2 of the 8 tasks land on node 0


def test_spread_is_proportional_to_cpus():
    p = cluster(2, 6).place(1, ones(8), policy=Policy.SPREAD)
    assert p.counts == {0: 2, 1: 6}


def test_pack_fills_nodes_in_id_order():
    p = cluster(2, 2, 2).place(1, ones(4), policy="pack")
    assert p.nodes.tolist() == [0, 0, 1, 1]
    assert p.counts == {0: 2, 1: 2}


def test_pack_starts_on_the_nodes_of_the_group_it_depends_on():
    s = cluster(4, 4, 4)
    s.update_node(0, alive=False)
    s.update_node(1, alive=False)
    s.place(1, ones(1), policy="pack")  # group 1 on node 2, the only alive node
    s.update_node(0, alive=True)
    s.update_node(1, alive=True)
    assert s.group_nodes(1).tolist() == [2]
    p = s.place(2, ones(2), depends_on=1, policy="pack")
    assert p.nodes.tolist() == [2, 2]
    # Without the dependency, pack starts at the lowest id.
    assert s.place(3, ones(2), policy="pack").nodes.tolist() == [0, 0]


def test_pack_puts_a_task_with_one_producer_where_the_producer_went():
    s = cluster(4, 4, 4)
    first = s.place(1, ones(3), policy="spread")
    inputs = [[Input(1, producer=(1, 2))], [Input(1, producer=(1, 1))]]
    p = s.place(2, ones(2), inputs, depends_on=1, policy="pack")
    assert p.nodes.tolist() == [first.nodes[2], first.nodes[1]]


def test_pack_uses_the_least_loaded_node_when_all_are_full():
    p = cluster(1, 1).place(1, ones(5), policy="pack")
    counts = sorted(p.counts.values())
    assert sum(counts) == 5 and counts[-1] - counts[0] <= 1


def test_actors_are_balanced_and_placed_with_their_data():
    s = cluster(4, 4)
    inputs = [[Input(100, nodes=(1,))], [Input(100, nodes=(0,))],
              [Input(100, nodes=(1,))], [Input(100, nodes=(0,))]]
    p = s.place(1, ones(4), inputs, policy="actors")
    assert p.nodes.tolist() == [1, 0, 1, 0]
    assert p.bytes_moved == 0


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_every_policy_places_every_task_on_a_known_node(policy):
    s = cluster(1, 2, 4)
    p = s.place(3, ones(10), policy=policy)
    assert p.feasible and len(p.nodes) == 10
    assert set(p.nodes.tolist()) <= {0, 1, 2}
    assert sum(p.counts.values()) == 10
    assert s.group_nodes(3).tolist() == p.nodes.tolist()


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_empty_group(policy):
    p = cluster(1).place(1, [], policy=policy)
    assert p.feasible and p.nodes.shape == (0,) and p.counts == {} and p.bytes_moved == 0


# -- dead nodes, infeasible -------------------------------------------------------------

@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_dead_node_is_never_used_even_when_it_holds_the_data(policy):
    s = cluster(4, 4, 4)
    s.update_node(1, alive=False)
    inputs = [[Input(1 << 20, nodes=(1,))] for _ in range(6)]
    p = s.place(1, ones(6), inputs, policy=policy)
    assert p.feasible and 1 not in p.nodes.tolist()
    assert p.bytes_moved == 6 << 20


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_removed_node_is_never_used(policy):
    s = cluster(4, 4)
    s.place(1, ones(2), policy="spread")  # one task on node 0
    s.remove_node(0)
    p = s.place(2, ones(3), [[Input(5, producer=(1, 0))]] * 3, policy=policy)
    assert p.nodes.tolist() == [1, 1, 1]
    assert p.bytes_moved == 15  # the producer's node is gone


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_task_larger_than_every_node_is_infeasible_and_not_recorded(policy):
    s = cluster(2, 4)
    p = s.place(1, [1.0, 8.0], policy=policy)
    assert not p.feasible
    assert p.reason  # says why
    assert p.nodes.shape == (0,)
    assert s.group_count() == 0 and s.group_nodes(1) is None


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_no_alive_node_is_infeasible(policy):
    # Nodes that all died are a cluster state, not bad input: infeasible, nothing recorded.
    s = cluster(4)
    s.update_node(0, alive=False)
    p = s.place(1, ones(2), policy=policy)
    assert not p.feasible and "no alive node" in p.reason
    assert s.group_count() == 0
    s.update_node(0, alive=True)
    assert s.place(1, ones(2), policy=policy).feasible


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_empty_cluster_is_a_value_error(policy):
    with pytest.raises(ValueError, match="empty cluster: add nodes with add_node"):
        GroupScheduler().place(1, ones(1), policy=policy)


def test_infeasible_place_keeps_an_earlier_record_of_the_same_group():
    s = cluster(2)
    first = s.place(1, ones(2))
    assert not s.place(1, [4.0]).feasible
    assert s.group_nodes(1).tolist() == first.nodes.tolist()


# -- group records ----------------------------------------------------------------------

def test_free_group_and_group_count():
    s = cluster(2, 2)
    assert s.group_count() == 0
    s.place(1, ones(2))
    s.place(2, ones(3))
    assert s.group_count() == 2
    s.place(2, ones(1))  # replaces the record of group 2
    assert s.group_count() == 2 and len(s.group_nodes(2)) == 1
    s.free_group(1)
    assert s.group_count() == 1 and s.group_nodes(1) is None
    s.free_group(1)   # already freed: no-op
    s.free_group(42)  # unknown: no-op
    assert s.group_count() == 1


def test_freeing_a_group_releases_its_load():
    s = cluster(2, 2)
    a = s.place(1, ones(2), policy="pack")
    assert a.nodes.tolist() == [0, 0]
    assert s.place(2, ones(2), policy="pack").nodes.tolist() == [1, 1]  # node 0 is full
    s.free_group(1)
    s.free_group(2)
    assert s.place(3, ones(2), policy="pack").nodes.tolist() == [0, 0]


def test_group_nodes_survive_the_removal_of_their_node():
    s = cluster(1, 1)
    p = s.place(1, ones(2), policy="spread")
    s.remove_node(0)
    assert s.group_nodes(1).tolist() == p.nodes.tolist()


# -- the bulk form ----------------------------------------------------------------------

def test_place_arrays_matches_place():
    inputs = [[Input(10, nodes=(1,)), Input(20, nodes=(0, 2))], [], [Input(30, nodes=(2,))]]
    a = cluster(2, 2, 2).place(1, ones(3), inputs)
    b = cluster(2, 2, 2).place_arrays(
        1,
        np.ones(3),
        np.array([0, 2, 2, 3]),
        np.array([10, 20, 30]),
        np.array([], dtype=np.int64),
        np.array([], dtype=np.int64),
        np.array([0, 1, 3, 4]),
        np.array([1, 0, 2, 2]),
    )
    assert a == b
    assert a.nodes.tolist() == b.nodes.tolist()


def test_place_arrays_accepts_lists_and_other_integer_dtypes():
    p = cluster(1, 1).place_arrays(
        7, [1, 1], np.array([0, 1, 2], dtype=np.int32), [5, 6], [-1, -1], [-1, -1],
        np.array([0, 1, 2], dtype=np.uint16), [1, 0],
    )
    assert p.nodes.tolist() == [1, 0] and p.group_id == 7


# -- argument errors --------------------------------------------------------------------

def test_unknown_policy_name():
    with pytest.raises(ValueError) as err:
        cluster(1).place(1, ones(1), policy="foo")
    assert str(err.value) == (
        "policy must be one of 'pack', 'locality', 'spread', 'actors'; got 'foo'"
    )


def test_policy_of_the_wrong_type():
    with pytest.raises(TypeError, match="policy must be a Policy"):
        cluster(1).place(1, ones(1), policy=1)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"task_cpus": "1.0"}, TypeError, "task_cpus must be a 1-D numpy array"),
        ({"task_cpus": 3}, TypeError, "task_cpus must be a 1-D numpy array"),
        ({"task_cpus": np.ones((2, 2))}, ValueError, r"task_cpus must be 1-D; got .*\(2, 2\)"),
        ({"task_cpus": ["a"]}, TypeError, "task_cpus must hold numbers"),
        ({"input_bytes": np.array([1.5])}, TypeError, "input_bytes must hold integers"),
        ({"input_offsets": {0: 1}}, TypeError, "input_offsets must be a 1-D numpy array"),
        ({"location_nodes": [[0], [1]]}, ValueError, "location_nodes must be 1-D"),
        ({"group_id": 1.0}, TypeError, "group_id must be an int"),
        ({"depends_on": "1"}, TypeError, "depends_on must be an int"),
    ],
)
def test_place_arrays_python_side_errors(kwargs, error, message):
    args = {
        "group_id": 1, "task_cpus": [1.0], "input_offsets": [0, 1], "input_bytes": [5],
        "input_producer_group": [], "input_producer_task": [], "location_offsets": [0, 1],
        "location_nodes": [0],
    }
    args.update(kwargs)
    depends_on = args.pop("depends_on", None)
    with pytest.raises(error, match=message):
        cluster(1).place_arrays(**args, depends_on=depends_on)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_bytes": [-5]},                  # negative size
        {"input_offsets": [0, 2]},              # points past the inputs
        {"input_offsets": [0]},                 # wrong length (n + 1 = 2)
        {"input_offsets": [1, 1]},              # does not start at 0
        {"location_offsets": [0, 2]},           # points past the locations
        {"location_offsets": [0]},              # wrong length (m + 1 = 2)
        {"input_producer_group": [0, 0]},       # wrong length (m = 1)
        {"input_producer_group": [0], "input_producer_task": []},  # one without the other
        {"task_cpus": [-1.0]},                  # negative demand
        {"task_cpus": [float("nan")]},
        {"input_producer_group": [1], "input_producer_task": [-3]},  # negative task
        {"group_id": -2},                       # negative group id
    ],
)
def test_place_arrays_core_errors_are_value_errors(kwargs):
    args = {
        "group_id": 1, "task_cpus": [1.0], "input_offsets": [0, 1], "input_bytes": [5],
        "input_producer_group": [], "input_producer_task": [], "location_offsets": [0, 1],
        "location_nodes": [0],
    }
    args.update(kwargs)
    s = cluster(1)
    with pytest.raises(ValueError):
        s.place_arrays(**args)
    assert s.group_count() == 0


def test_place_input_list_errors():
    s = cluster(1)
    with pytest.raises(ValueError, match="got 1 input lists for 2 tasks"):
        s.place(1, ones(2), [[]])
    with pytest.raises(TypeError, match=r"inputs\[0\] must be a list of Input"):
        s.place(1, ones(1), [Input(1)])
    with pytest.raises(TypeError, match=r"inputs\[0\]\[1\] must be an Input"):
        s.place(1, ones(1), [[Input(1), 5]])
    with pytest.raises(TypeError, match="inputs must be a list"):
        s.place(1, ones(1), "abc")
    with pytest.raises(ValueError, match=r"producer must be \(group_id, task_index\)"):
        s.place(1, ones(1), [[Input(1, producer=(1,))]])


@pytest.mark.parametrize("producer", [(1, 5), (99, 0)],
                         ids=["task-out-of-range", "unknown-group"])
def test_unresolvable_producer_gives_no_location(producer):
    # An input whose producer task is not recorded is held nowhere: its bytes move.
    s = cluster(1, 1)
    s.place(1, ones(2))
    p = s.place(2, ones(1), [[Input(7, producer=producer)]])
    assert p.feasible and p.bytes_moved == 7


# -- GPUs and custom resources: constraints of the core ------------------------------------

def gpu_cluster() -> GroupScheduler:
    """Nodes 0, 1 without GPUs, node 2 with 1 GPU, node 3 with 4 GPUs and {"special": 1}."""
    s = cluster(4, 4)
    s.add_node(2, 4, resources={"GPU": 1})
    s.add_node(3, 8, {"GPU": 4, "special": 1})
    return s


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_gpu_tasks_go_only_to_nodes_with_gpus(policy):
    s = gpu_cluster()
    inputs = [[Input(size=1000, nodes=(0,))] for _ in range(6)]  # data on a GPU-less node
    p = s.place(1, ones(6), inputs, policy=policy, resources={"GPU": 1})
    assert p.feasible, p.reason
    assert set(p.counts) <= {2, 3} and sum(p.counts.values()) == 6
    q = s.place(2, ones(2), policy=policy, resources={"GPU": 1, "special": 1})
    assert set(q.nodes.tolist()) == {3}
    r = s.place(3, ones(8), inputs=None, policy=policy)  # no demand: every node
    assert r.feasible and set(r.counts) - {2, 3}


def test_gpu_caps_follow_gpus_under_locality_and_spread():
    s = gpu_cluster()
    for gid, policy in ((1, "locality"), (2, "spread")):
        p = s.place(gid, ones(5), policy=policy, resources={"GPU": 1})
        assert p.counts == {2: 1, 3: 4}, (policy, p.counts)
        s.free_group(gid)


def test_no_node_with_the_resource_names_it_and_the_nodes():
    s = gpu_cluster()
    p = s.place(1, ones(2), policy="locality", resources={"GPU": 8})
    assert not p.feasible and p.nodes.size == 0 and s.group_count() == 0
    assert "no alive node has the resources each task needs (GPU 8)" in p.reason
    assert "node 0: GPU 0 < 8" in p.reason and "node 3: GPU 4 < 8" in p.reason
    s.update_node(3, alive=False)
    p = s.place(1, ones(1), policy="pack", resources={"special": 1})
    assert not p.feasible and "special" in p.reason and "node 3" not in p.reason


def test_node_resources_are_kept_and_replaced():
    s = gpu_cluster()
    assert s.node_resources(3) == {"GPU": 4.0, "special": 1.0}
    assert s.node_resources(0) == {}
    s.update_node(3, cpus=2)  # CPUs and liveness leave resources alone
    assert s.node_resources(3) == {"GPU": 4.0, "special": 1.0}
    s.set_node_resources(0, {"special": 2})
    assert s.node_resources(0) == {"special": 2.0}
    assert s.place(1, ones(1), policy="locality", resources={"special": 2}).nodes.tolist() == [0]


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda s: s.add_node(9, 1, {"CPU": 1}), ValueError, "CPU"),
        (lambda s: s.add_node(9, 1, {"": 1}), ValueError, "empty resource name"),
        (lambda s: s.set_node_resources(0, {"GPU": -1}), ValueError, "finite amount >= 0"),
        (lambda s: s.set_node_resources(42, {"GPU": 1}), ValueError, "unknown node 42"),
        (lambda s: s.set_node_resources(0, [("GPU", 1)]), TypeError, "dict of resource"),
        (lambda s: s.set_node_resources(0, {1: 1}), TypeError, "names must be str"),
        (lambda s: s.place(1, ones(1), resources={"GPU": "1"}), TypeError, "must be a number"),
        (lambda s: s.place(1, ones(1), resources={"GPU": float("nan")}), ValueError,
         "task_resources"),
        (lambda s: s.node_resources(42), ValueError, "unknown node id 42"),
    ],
)
def test_bad_resources_are_refused(call, error, message):
    s = gpu_cluster()
    with pytest.raises(error, match=message):
        call(s)
    assert s.group_count() == 0 and len(s.nodes()) == 4


# -- recorded placements (cached plans) --------------------------------------------------

def test_record_placement_counts_as_load_and_refuses_stale_plans():
    s = cluster(2, 2)
    s.record_placement(7, [0, 0], [1.0, 1.0])  # node 0 full
    np.testing.assert_array_equal(s.group_nodes(7), [0, 0])
    p = s.place(8, ones(2), policy="locality")
    assert list(p.nodes) == [1, 1], "the recorded group's load is seen"
    s.update_node(1, alive=False)
    with pytest.raises(ValueError, match="node 1 is dead; place the group with Schedule"):
        s.record_placement(9, [1], [1.0])
    with pytest.raises(ValueError, match="node 4 is unknown"):
        s.record_placement(9, [4], [1.0])
    with pytest.raises(ValueError, match="2 nodes for 1 tasks"):
        s.record_placement(9, [0, 0], [1.0])
    assert s.group_nodes(9) is None and s.group_count() == 2
