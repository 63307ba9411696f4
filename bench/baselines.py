"""Hand-written Ray baselines of the streaming benchmark's pipeline (plain Ray, no irfront).

The pipeline is the one of ``bench/stream_workload.py``: a broadcast array of ``data_mb``
MiB read by ``partitions`` map partitions, ``maps`` one-to-one stages that pass it on
unchanged, a shuffle into one partial sum per reducer (contiguous chunks), and
``reducers`` actors that accumulate their sums and record, on arrival, the latency from
the batch's ``start`` (``time.time() - start``, one machine, one clock).

What a Ray expert writes by hand today, three ways:

- ``ray-expert``: one copy of the array per node (produced on that node by a pinned
  task), one fused task per partition (the map chain and the shuffle composed in one
  function) pinned with ``NodeAffinitySchedulingStrategy`` to a node holding its copy,
  one object per task (the tuple of its partial sums); reducers pinned evenly over the
  nodes; every reducer gets every task's object.
- ``ray-expert-node``: the same with one fused task per node, doing that node's
  partitions and returning one object (the node's partial sum per reducer).
- ``compiled-graph``: a Ray Compiled Graph (``ray.dag``, ``experimental_compile``): one
  actor per node holding its node's copies (one per size), feeding the reducer actors;
  driven from its own driver process (``bench/baseline_cgraph.py``), because on Ray 2.60
  a second graph compiled in one driver can hang and teardown can kill a raylet.

Partition ``p`` lives on node ``p % nodes`` and reducer ``r`` on node ``r % nodes``
(nodes in ``ray.nodes()`` order, those with CPUs). ``reference_sums`` gives what every
reducer must hold after a number of batches, computed in plain Python.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

FLOAT_BYTES = 8
PLAIN_BASELINES = ("ray-expert", "ray-expert-node")
BASELINES = PLAIN_BASELINES + ("compiled-graph",)


def ship_by_value() -> None:
    """Workers need not import this module (``bench/`` is not on their path): its tasks
    and actors travel pickled by value."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ---- the pipeline's work, as plain functions ----------------------------------------
def make_array(data_mb: float, seed: int = 0) -> np.ndarray:
    """The broadcast array (as ``stream_workload.generate_dependencies``)."""
    n = max(1, int(data_mb * (1 << 20)) // FLOAT_BYTES)
    return np.random.default_rng(seed).random(n)


def map_step(start, batch):
    """One one-to-one stage: the partition, unchanged."""
    return batch


def burn(x, reps: int):
    """A stage that computes: ``reps`` passes of elementwise numpy over the partition
    (``sqrt(x * x + 1)``), the transformed partition out; ``reps=0``: ``x`` itself."""
    for _ in range(reps):
        x = np.sqrt(x * x + 1.0)
    return x


def work_reps(elements: int, work_ms: float, tries: int = 5) -> tuple[int, float]:
    """How many ``burn`` passes over ``elements`` float64 take about ``work_ms`` on this
    machine (its fastest of ``tries`` timings per pass), and that time in ms."""
    if work_ms <= 0:
        return 0, 0.0
    x = np.random.default_rng(0).random(max(1, elements))
    best = float("inf")
    for _ in range(tries):
        t = time.perf_counter()
        burn(x, 1)
        best = min(best, time.perf_counter() - t)
    return max(1, round(work_ms / 1e3 / best)), best * 1e3


def new_partitions(data_mb: float, partitions: int, seed: int) -> list:
    """One batch of new data: ``data_mb`` MiB of float64 in ``partitions`` arrays."""
    n = max(1, int(data_mb * (1 << 20)) // FLOAT_BYTES // partitions)
    rng = np.random.default_rng(seed)
    return [rng.random(n) for _ in range(partitions)]


def shuffle_sums(batch, num_reducers: int) -> tuple:
    """One partial sum per reducer (contiguous chunks, as ``stream_workload.shuffle``)."""
    return tuple(float(c.sum()) for c in np.array_split(batch, num_reducers))


def run_partition(copy, start, num_maps: int, num_reducers: int, reps: int = 0) -> tuple:
    x = copy
    for _ in range(num_maps):
        x = burn(map_step(start, x), reps)
    return shuffle_sums(x, num_reducers)


def run_partitions(copy, start, num_parts: int, num_maps: int, num_reducers: int,
                   reps: int = 0) -> tuple:
    """A node's partitions (``num_parts`` reads of its copy), summed per reducer (a
    combiner)."""
    return _combined([copy] * num_parts, start, num_maps, num_reducers, reps)


def _combined(parts, start, num_maps: int, num_reducers: int, reps: int) -> tuple:
    total = np.zeros(num_reducers)
    for p in parts:
        total += run_partition(p, start, num_maps, num_reducers, reps)
    return tuple(float(v) for v in total)


def reference_sums(data_mb: float, partitions: int, num_reducers: int,
                   batches: int) -> list[float]:
    """Plain Python: each reducer's total after ``batches`` batches."""
    x = make_array(data_mb)
    per_batch = [0.0] * num_reducers
    for _ in range(partitions):
        for r, s in enumerate(shuffle_sums(x, num_reducers)):
            per_batch[r] += s
    return [batches * s for s in per_batch]


# ---- plain Ray: tasks and reducers ---------------------------------------------------
@ray.remote
def generate(data_mb: float):
    return make_array(data_mb)


@ray.remote
def fused_partition(copy, start, num_maps, num_reducers, reps=0):
    return run_partition(copy, start, num_maps, num_reducers, reps)


@ray.remote
def fused_node(copy, start, num_parts, num_maps, num_reducers, reps=0):
    return run_partitions(copy, start, num_parts, num_maps, num_reducers, reps)


@ray.remote
def fused_node_parts(start, num_maps, num_reducers, reps, *parts):
    """A node's own partitions (new data), combined per reducer."""
    return _combined(parts, start, num_maps, num_reducers, reps)


@ray.remote
class Reducer:
    """Accumulates its piece of every part it gets; records the latency on arrival."""

    def __init__(self, index):
        self.index = index
        self.total = 0.0
        self.records = []

    def reduce(self, start, tag, *parts):
        now = time.time()
        self.total += sum(p[self.index] for p in parts)
        if tag is not None:
            self.records.append((tag, now - start))
        return self.index

    def take_records(self):
        out, self.records = self.records, []
        return out

    def get_total(self):
        return self.total


def cpu_node_ids() -> list[str]:
    """The alive nodes with CPUs, in ``ray.nodes()`` order."""
    return [n["NodeID"] for n in ray.nodes()
            if n["Alive"] and n.get("Resources", {}).get("CPU", 0) > 0]


def pinned(node_id: str) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node_id, soft=False)


@dataclass
class Layout:
    """Where everything goes: partition p on node p % nodes, reducer r on r % nodes."""

    node_ids: list[str]
    partitions: int
    maps: int
    reducers: int
    _per_node: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if not self.node_ids:
            raise ValueError("Layout: no node with CPUs; pass node_ids=[...] of alive nodes")
        if self.partitions < 1 or self.reducers < 1:
            raise ValueError(f"Layout: partitions and reducers must be >= 1; got "
                             f"{self.partitions} and {self.reducers}")
        n = len(self.node_ids)
        self.parts_on = [len(range(k, self.partitions, n)) for k in range(n)]

    def pinned_fns(self, fn) -> list:
        """``fn.options(...)`` pinned to each node, built once: batches reuse them."""
        if fn not in self._per_node:
            self._per_node[fn] = [fn.options(scheduling_strategy=pinned(i))
                                  for i in self.node_ids]
        return self._per_node[fn]

    @property
    def nodes(self) -> int:
        return len(self.node_ids)

    def node_of_partition(self, p: int) -> int:
        return p % self.nodes

    def node_of_reducer(self, r: int) -> int:
        return r % self.nodes


def broadcast_copies(layout: Layout, data_mb: float) -> list:
    """One copy of the array per node, produced on that node; returns once all exist."""
    refs = [generate.options(scheduling_strategy=pinned(i)).remote(data_mb)
            for i in layout.node_ids]
    ray.wait(refs, num_returns=len(refs), fetch_local=False)
    return refs


def start_reducers(layout: Layout) -> list:
    """The reducer actors, pinned evenly over the nodes; returns once all are up."""
    actors = [Reducer.options(scheduling_strategy=pinned(
        layout.node_ids[layout.node_of_reducer(r)])).remote(r)
        for r in range(layout.reducers)]
    ray.get([a.get_total.remote() for a in actors])
    return actors


def submit_expert(layout: Layout, copies, reducers, start, tag=None, reps=0) -> list:
    """``ray-expert``: one fused task per partition, pinned to its copy's node."""
    fns = layout.pinned_fns(fused_partition)
    parts = [fns[k].remote(copies[k], start, layout.maps, layout.reducers, reps)
             for k in map(layout.node_of_partition, range(layout.partitions))]
    return [a.reduce.remote(start, tag, *parts) for a in reducers]


def submit_expert_node(layout: Layout, copies, reducers, start, tag=None, reps=0) -> list:
    """``ray-expert-node``: one fused task per node for that node's partitions."""
    fns = layout.pinned_fns(fused_node)
    parts = [fns[k].remote(copies[k], start, layout.parts_on[k], layout.maps,
                           layout.reducers, reps)
             for k in range(layout.nodes) if layout.parts_on[k]]
    return [a.reduce.remote(start, tag, *parts) for a in reducers]


# New data every batch: the driver puts the batch's partitions (as a stream's source
# does), and each task reads its own.
def submit_expert_new(layout: Layout, parts, reducers, start, tag=None, reps=0) -> list:
    """``ray-expert`` on new data: one fused task per partition, pinned round-robin."""
    fns = layout.pinned_fns(fused_partition)
    refs = [ray.put(p) for p in parts]
    outs = [fns[layout.node_of_partition(p)].remote(refs[p], start, layout.maps,
                                                    layout.reducers, reps)
            for p in range(len(refs))]
    return [a.reduce.remote(start, tag, *outs) for a in reducers]


def submit_expert_node_new(layout: Layout, parts, reducers, start, tag=None,
                           reps=0) -> list:
    """``ray-expert-node`` on new data: one pinned task per node over its partitions."""
    fns = layout.pinned_fns(fused_node_parts)
    refs = [ray.put(p) for p in parts]
    outs = [fns[k].remote(start, layout.maps, layout.reducers, reps,
                          *refs[k::layout.nodes])
            for k in range(layout.nodes) if refs[k::layout.nodes]]
    return [a.reduce.remote(start, tag, *outs) for a in reducers]


SUBMIT = {"ray-expert": submit_expert, "ray-expert-node": submit_expert_node}
SUBMIT_NEW = {"ray-expert": submit_expert_new, "ray-expert-node": submit_expert_node_new}


# ---- the compiled graph's actors (driven by bench/baseline_cgraph.py) ----------------
@ray.remote
class NodeWorker:
    """Holds its node's copy of the array for each size; runs its node's partitions."""

    def __init__(self, num_parts, num_maps, num_reducers):
        self.num_parts, self.num_maps, self.num_reducers = num_parts, num_maps, num_reducers
        self.copies = {}

    def pid(self):
        return os.getpid()

    def load(self, key, data_mb):
        self.copies[key] = make_array(data_mb)
        return self.copies[key].size

    def process(self, inp):
        key, start, _tag = inp
        return run_partitions(self.copies[key], start, self.num_parts, self.num_maps,
                              self.num_reducers)


@ray.remote
class GraphReducer:
    """A reducer inside the graph: returns ``(tag, latency_s, total)`` on each batch."""

    def __init__(self, index):
        self.index = index
        self.total = 0.0

    def pid(self):
        return os.getpid()

    def reduce(self, inp, *parts):
        now = time.time()
        _key, start, tag = inp
        self.total += sum(p[self.index] for p in parts)
        return tag, now - start, self.total


def build_graph(layout: Layout, sizes: list[float], max_in_flight: int):
    """Actors (one worker per node with its copies, reducers evenly over the nodes) and
    the compiled graph; input ``(size_index, start, tag)``, one output per reducer.
    Returns ``(compiled, workers, reducers, pids of those actors)``."""
    from ray.dag import InputNode, MultiOutputNode
    workers = [NodeWorker.options(scheduling_strategy=pinned(i)).remote(
        layout.parts_on[k], layout.maps, layout.reducers)
        for k, i in enumerate(layout.node_ids) if layout.parts_on[k]]
    ray.get([w.load.remote(j, mb) for w in workers for j, mb in enumerate(sizes)])
    reducers = [GraphReducer.options(scheduling_strategy=pinned(
        layout.node_ids[layout.node_of_reducer(r)])).remote(r)
        for r in range(layout.reducers)]
    pids = ray.get([x.pid.remote() for x in workers + reducers])
    with InputNode() as inp:
        parts = [w.process.bind(inp) for w in workers]
        dag = MultiOutputNode([a.reduce.bind(inp, *parts) for a in reducers])
    compiled = dag.experimental_compile(_max_inflight_executions=max_in_flight)
    return compiled, workers, reducers, pids
