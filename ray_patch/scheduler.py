"""Group placement: a typed Python face of the C++ scheduling core (`ray_patch._scheduler`).

A *group* is one BSP stage: n tasks, each with a CPU demand and a few input objects, and
optionally a demand of other resources (GPUs, custom resources) that every task of the
group makes. Nodes have CPUs and, optionally, capacities of such resources
(``add_node(0, cpus=4, resources={"GPU": 2})``): a group demanding a resource is placed
only on nodes whose capacity covers one task's demand, by every policy.
`GroupScheduler.place` puts every task of a group on a node of the cluster with one of
the policies below and records the placement (so a later group can depend on it, and so
the group's CPU load counts until `free_group`).

Two call forms:

- `place(group_id, task_cpus, inputs)`: convenient; `inputs` is a list (one per task) of
  lists of `Input`. Builds the arrays in Python, one loop over the inputs.
- `place_arrays(group_id, task_cpus, input_offsets, input_bytes, ...)`: the bulk form;
  CSR arrays (see `src/scheduler/group_request.h`) go straight to C++, no Python object
  per task.

Example::

    s = GroupScheduler()
    s.add_node(0, cpus=4); s.add_node(1, cpus=4)
    p = s.place(7, [1.0, 1.0], [[Input(size=10, nodes=(1,))], []], policy="locality")
    p.nodes        # array([1, 0])
    p.bytes_moved  # 0

Bad arguments raise `TypeError` (wrong kind of object) or `ValueError` (wrong value; most
come from the C++ core's validation, with its message).
"""
from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from ray_patch import _scheduler

__all__ = ["Policy", "Input", "Placement", "GroupScheduler"]

_NO_GROUP = -1
_NO_TASK = -1


class Policy(str, enum.Enum):
    """How a group's tasks are placed.

    PACK: the 2018 draft's rule (nodes of the group depended on first, then the others in
      order, then the least-loaded node).
    LOCALITY: minimum bytes moved between nodes, exactly, under a fair share per node.
    SPREAD: balance only; ignores data.
    ACTORS: stateful actors, placed once, balanced, with their data.
    """

    PACK = "pack"
    LOCALITY = "locality"
    SPREAD = "spread"
    ACTORS = "actors"


_POLICY_CODES = {Policy.PACK: 0, Policy.LOCALITY: 1, Policy.SPREAD: 2, Policy.ACTORS: 3}
_POLICY_NAMES = ", ".join(f"'{p.value}'" for p in Policy)


def _policy_code(policy: Union[Policy, str]) -> int:
    if isinstance(policy, Policy):
        return _POLICY_CODES[policy]
    if isinstance(policy, str):
        try:
            return _POLICY_CODES[Policy(policy)]
        except ValueError:
            raise ValueError(f"policy must be one of {_POLICY_NAMES}; got {policy!r}") from None
    raise TypeError(
        f"policy must be a Policy or one of the strings {_POLICY_NAMES}; "
        f"got {type(policy).__name__}"
    )


@dataclass(frozen=True)
class Input:
    """One input object of a task.

    size: bytes, >= 0.
    nodes: the nodes that hold the object now (may be empty).
    producer: (group_id, task_index) of the task that will produce it, if any; the object's
      location is then the node that task was placed on.
    """

    size: int
    nodes: tuple[int, ...] = ()
    producer: Optional[tuple[int, int]] = None


@dataclass(frozen=True, eq=False)
class Placement:
    """The outcome of placing one group.

    feasible: False when no alive node can run some task (too few CPUs, or no node with
      the demanded resources); `reason` says why, `nodes` is empty and nothing was
      recorded.
    nodes: int64 array, one node id per task.
    bytes_moved: input bytes that are not on the node of the task reading them.
    counts: node id -> number of tasks placed there.
    solve_ms: time spent in the C++ core's Schedule (milliseconds).
    """

    group_id: int
    feasible: bool
    nodes: np.ndarray
    bytes_moved: int
    counts: dict[int, int]
    reason: str
    solve_ms: float = 0.0

    def __eq__(self, other: object) -> bool:
        """Same outcome (solve_ms, a timing, is not compared)."""
        if not isinstance(other, Placement):
            return NotImplemented
        return (
            self.group_id == other.group_id
            and self.feasible == other.feasible
            and np.array_equal(self.nodes, other.nodes)
            and self.bytes_moved == other.bytes_moved
            and self.counts == other.counts
            and self.reason == other.reason
        )

    __hash__ = None  # type: ignore[assignment]  # holds an array


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}")
    return int(value)


def _check_cpus(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number of CPUs; got {type(value).__name__} {value!r}")
    return float(value)


def _as_1d(name: str, value: Any, dtype: type, *, integer: bool) -> np.ndarray:
    """`value` as a C-contiguous 1-D array of `dtype`, or TypeError/ValueError naming `name`."""
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, (str, bytes, dict, set)) or not isinstance(value, (Sequence, range)):
        raise TypeError(
            f"{name} must be a 1-D numpy array or a sequence of numbers; "
            f"got {type(value).__name__}"
        )
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:  # ragged nested lists
            raise ValueError(f"{name} must be a flat sequence of numbers: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got an array of shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, dtype=dtype)
    kind = arr.dtype.kind
    if integer and kind not in "iu":
        raise TypeError(f"{name} must hold integers; got dtype {arr.dtype}")
    if not integer and kind not in "iuf":
        raise TypeError(f"{name} must hold numbers; got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


def _check_resources(name: str, value: Any) -> dict[str, float]:
    """A mapping resource name -> amount (GPUs, custom resources; not CPU)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict of resource name -> amount, e.g. "
                        f"{{'GPU': 1}}; got {type(value).__name__}")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise TypeError(f"{name}: resource names must be str; got {type(k).__name__} "
                            f"{k!r}")
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name}[{k!r}] must be a number; got {type(v).__name__} {v!r}")
        out[k] = float(v)
    return out


def _optional_group(depends_on: Optional[int]) -> int:
    if depends_on is None:
        return _NO_GROUP
    return _check_int("depends_on", depends_on)


class GroupScheduler:
    """Cluster state plus placement policies (the C++ `GroupScheduler`).

    Node ids and group ids are integers chosen by the caller. Calls are serialised on one
    scheduler; `place*` releases the GIL while the core works.
    """

    def __init__(self) -> None:
        self._core = _scheduler.GroupScheduler()

    # -- cluster membership ---------------------------------------------------------
    def add_node(self, node_id: int, cpus: float,
                 resources: Optional[dict[str, float]] = None) -> None:
        """Adds an alive node with `cpus` CPUs and `resources` (name -> capacity of other
        resources: "GPU", custom ones). A duplicate id, bad cpus or resources:
        ValueError."""
        self._core.add_node(_check_int("node_id", node_id), _check_cpus("cpus", cpus),
                            _check_resources("resources", resources))

    def set_node_resources(self, node_id: int, resources: dict[str, float]) -> None:
        """Replaces a node's capacities of resources other than CPU (e.g. {"GPU": 2,
        "special": 1}; {} for none). Unknown id or bad amounts: ValueError."""
        self._core.set_node_resources(_check_int("node_id", node_id),
                                      _check_resources("resources", resources))

    def node_resources(self, node_id: int) -> dict[str, float]:
        """A node's capacities of resources other than CPU. Unknown id: ValueError."""
        return self._core.node_resources(_check_int("node_id", node_id))

    def update_node(
        self, node_id: int, *, cpus: Optional[float] = None, alive: Optional[bool] = None
    ) -> None:
        """Changes a node's CPUs and/or liveness; omitted fields keep their value."""
        node_id = _check_int("node_id", node_id)
        if cpus is not None:
            cpus = _check_cpus("cpus", cpus)
        if alive is not None and not isinstance(alive, (bool, np.bool_)):
            raise TypeError(f"alive must be a bool; got {type(alive).__name__} {alive!r}")
        self._core.update_node(node_id, cpus, None if alive is None else bool(alive))

    def remove_node(self, node_id: int) -> None:
        """Forgets a node. Groups placed on it keep their record. Unknown id: ValueError."""
        self._core.remove_node(_check_int("node_id", node_id))

    def nodes(self) -> list[tuple[int, float, bool]]:
        """(id, cpus, alive) of every node, sorted by id."""
        return self._core.nodes()

    # -- placement ------------------------------------------------------------------
    def place(
        self,
        group_id: int,
        task_cpus: Any,
        inputs: Optional[Sequence[Sequence[Input]]] = None,
        *,
        depends_on: Optional[int] = None,
        policy: Union[Policy, str] = Policy.LOCALITY,
        resources: Optional[dict[str, float]] = None,
    ) -> Placement:
        """Places one group and records it.

        task_cpus: one CPU demand per task (sequence or 1-D array).
        inputs: None (no task has inputs) or one list of `Input` per task.
        depends_on: the group this one depends on (PACK places near it).
        resources: what EVERY task demands of resources other than CPU (e.g. {"GPU": 1});
          only nodes with that capacity are candidates. None: no demand.
        """
        cpus = _as_1d("task_cpus", task_cpus, np.float64, integer=False)
        n = cpus.shape[0]
        if inputs is None:
            empty = np.empty(0, dtype=np.int64)
            return self.place_arrays(
                group_id, cpus, empty, empty, empty, empty, empty, empty,
                depends_on=depends_on, policy=policy, resources=resources,
            )
        if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
            raise TypeError(
                f"inputs must be a list with one list of Input per task; "
                f"got {type(inputs).__name__}"
            )
        if len(inputs) != n:
            raise ValueError(
                f"inputs: got {len(inputs)} input lists for {n} tasks; pass one per task "
                f"(an empty list for a task without inputs)"
            )
        offsets = [0]
        sizes: list[int] = []
        prod_group: list[int] = []
        prod_task: list[int] = []
        loc_offsets = [0]
        loc_nodes: list[int] = []
        for i, task_inputs in enumerate(inputs):
            if isinstance(task_inputs, Input) or not isinstance(task_inputs, Sequence):
                raise TypeError(
                    f"inputs[{i}] must be a list of Input; got {type(task_inputs).__name__}"
                )
            for j, inp in enumerate(task_inputs):
                if not isinstance(inp, Input):
                    raise TypeError(
                        f"inputs[{i}][{j}] must be an Input; got {type(inp).__name__}"
                    )
                sizes.append(inp.size)
                if inp.producer is None:
                    prod_group.append(_NO_GROUP)
                    prod_task.append(_NO_TASK)
                else:
                    if len(inp.producer) != 2:
                        raise ValueError(
                            f"inputs[{i}][{j}].producer must be (group_id, task_index); "
                            f"got {inp.producer!r}"
                        )
                    prod_group.append(inp.producer[0])
                    prod_task.append(inp.producer[1])
                loc_nodes.extend(inp.nodes)
                loc_offsets.append(len(loc_nodes))
            offsets.append(len(sizes))
        return self.place_arrays(
            group_id,
            cpus,
            np.asarray(offsets, dtype=np.int64),
            _as_1d("Input.size", sizes, np.int64, integer=True),
            _as_1d("Input.producer group", prod_group, np.int64, integer=True),
            _as_1d("Input.producer task", prod_task, np.int64, integer=True),
            np.asarray(loc_offsets, dtype=np.int64),
            _as_1d("Input.nodes", loc_nodes, np.int64, integer=True),
            depends_on=depends_on,
            policy=policy,
            resources=resources,
        )

    def place_arrays(
        self,
        group_id: int,
        task_cpus: Any,
        input_offsets: Any,
        input_bytes: Any,
        input_producer_group: Any,
        input_producer_task: Any,
        location_offsets: Any,
        location_nodes: Any,
        *,
        depends_on: Optional[int] = None,
        policy: Union[Policy, str] = Policy.LOCALITY,
        resources: Optional[dict[str, float]] = None,
    ) -> Placement:
        """Places one group given in bulk (CSR) form and records it.

        Task i reads inputs input_offsets[i]:input_offsets[i+1] (n+1 entries, or empty when
        no task has inputs); input j has input_bytes[j] bytes, is produced by task
        input_producer_task[j] of group input_producer_group[j] (-1/-1: none; both arrays
        may be empty) and is held by nodes location_nodes[location_offsets[j]:
        location_offsets[j+1]] (location_offsets: m+1 entries, or empty).
        All arrays are 1-D; int64 ones must hold integers, task_cpus numbers.
        resources: every task's demand of resources other than CPU (see `place`).
        """
        code = _policy_code(policy)
        res = self._core.schedule(
            _check_int("group_id", group_id),
            _optional_group(depends_on),
            code,
            _as_1d("task_cpus", task_cpus, np.float64, integer=False),
            _as_1d("input_offsets", input_offsets, np.int64, integer=True),
            _as_1d("input_bytes", input_bytes, np.int64, integer=True),
            _as_1d("input_producer_group", input_producer_group, np.int64, integer=True),
            _as_1d("input_producer_task", input_producer_task, np.int64, integer=True),
            _as_1d("location_offsets", location_offsets, np.int64, integer=True),
            _as_1d("location_nodes", location_nodes, np.int64, integer=True),
            _check_resources("resources", resources),
        )
        return Placement(
            group_id=int(group_id),
            feasible=res.ok,
            nodes=res.nodes,
            bytes_moved=res.bytes_moved,
            counts=res.task_counts,
            reason=res.reason,
            solve_ms=res.solve_ns / 1e6,
        )

    # -- recorded groups ------------------------------------------------------------
    def group_nodes(self, group_id: int) -> Optional[np.ndarray]:
        """The node of each task of a recorded group (int64), or None if not recorded."""
        return self._core.group_nodes(_check_int("group_id", group_id))

    def record_placement(self, group_id: int, nodes: Any, cpus: Any) -> None:
        """Records a group placed earlier (a cached plan reused): its load counts as if
        ``place`` had placed it. ValueError when a node is unknown or dead, or the sizes
        differ."""
        self._core.record_placement(_check_int("group_id", group_id),
                                    _as_1d("nodes", nodes, np.int64, integer=True),
                                    _as_1d("cpus", cpus, np.float64, integer=False))

    def free_group(self, group_id: int) -> None:
        """Forgets a group and its CPU load. Unknown id: no-op."""
        self._core.free_group(_check_int("group_id", group_id))

    def group_count(self) -> int:
        """Number of recorded (not freed) groups."""
        return self._core.group_count()
