"""Placement benchmark: speed and quality of the C++ group scheduler, per policy.

Synthetic groups (seeded): `tasks` tasks of 1 CPU on `nodes` nodes of 8 CPUs; each task
reads `inputs_per_task` objects, each held by one random node, of random size
(1 KiB .. 1 MiB). For each (policy, tasks, nodes, inputs_per_task) row:

  median_ms          median C++ time of GroupScheduler::Schedule (solve_ms)
  python_ms          median time of the whole Python call: building the CSR arrays from
                     the instance's raw data + GroupScheduler.place_arrays
  bytes_moved        input bytes not on their task's node
  optimal_bytes      exact minimum under the locality policy's per-node caps
                     ceil(tasks * cpus_j / sum cpus)
                     (OR-tools min-cost flow; null when the instance is too large)
  max_over_mean_load max over nodes of tasks/cpus, over the mean of that

Each group is freed after it is placed, so load never accumulates.
Usage: python bench/placement.py [--quick] [--json PATH] [--seed N]
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

import benchpath  # noqa: E402,F401  (first: sys.path)

from common import median, print_table, time_ms, write_rows  # noqa: E402

from ray_patch.scheduler import GroupScheduler, Policy  # noqa: E402

NODE_CPUS = 8.0
POLICIES = (Policy.PACK, Policy.LOCALITY, Policy.SPREAD)
FULL_GRID = {"tasks": (1_000, 10_000, 100_000), "nodes": (16, 128, 1024), "inputs": (1, 3)}
QUICK_GRID = {"tasks": (1_000, 10_000), "nodes": (16, 1024), "inputs": (3,)}
# The optimum is computed when the flow network has at most this many arcs.
MAX_ORACLE_ARCS = 1_000_000


@dataclass
class Instance:
    """Raw data of one synthetic group: per input, the node holding it and its size."""

    tasks: int
    nodes: int
    inputs_per_task: int
    input_node: np.ndarray  # int64, tasks * inputs_per_task
    input_size: np.ndarray  # int64, tasks * inputs_per_task


def make_instance(tasks: int, nodes: int, inputs_per_task: int, seed: int) -> Instance:
    rng = np.random.default_rng([seed, tasks, nodes, inputs_per_task])
    m = tasks * inputs_per_task
    return Instance(
        tasks,
        nodes,
        inputs_per_task,
        rng.integers(0, nodes, size=m, dtype=np.int64),
        rng.integers(1 << 10, 1 << 20, size=m, dtype=np.int64),
    )


def place(sched: GroupScheduler, inst: Instance, group_id: int, policy: Policy):
    """Builds the CSR arrays from the raw data and places the group (what python_ms times)."""
    m = inst.tasks * inst.inputs_per_task
    empty = np.empty(0, dtype=np.int64)
    return sched.place_arrays(
        group_id,
        np.ones(inst.tasks, dtype=np.float64),
        np.arange(0, m + 1, inst.inputs_per_task, dtype=np.int64),
        inst.input_size,
        empty,
        empty,
        np.arange(m + 1, dtype=np.int64),
        inst.input_node,
        policy=policy,
    )


def fair_caps(tasks: int, cpus: list[int]) -> np.ndarray:
    """The locality policy's caps: ceil(tasks * cpus_j / sum cpus), exact integers."""
    total = sum(cpus)
    return np.array([-(-tasks * c // total) for c in cpus], dtype=np.int64)


def optimal_bytes(inst: Instance, caps: np.ndarray) -> Optional[int]:
    """Minimum bytes moved with at most caps[j] tasks on node j (OR-tools min-cost flow).

    Network: source -> task (cap 1); task -> hub (cost 0) -> any node; task -> each node
    holding some of its inputs (cost -local bytes); node -> sink (cap caps[j]). The optimum
    is total bytes + min cost. None when the network exceeds MAX_ORACLE_ARCS.
    """
    from ortools.graph.python import min_cost_flow

    n, k, nn = inst.tasks, inst.inputs_per_task, inst.nodes
    if n * (2 + k) + 2 * nn > MAX_ORACLE_ARCS:
        return None
    task_of_input = np.repeat(np.arange(n, dtype=np.int64), k)
    # Local bytes per (task, node) pair that holds something.
    key = task_of_input * nn + inst.input_node
    uniq, inv = np.unique(key, return_inverse=True)
    local = np.bincount(inv, weights=inst.input_size).astype(np.int64)
    pair_task, pair_node = uniq // nn, uniq % nn
    src, hub = 0, n + 1
    task_v = lambda t: 1 + t  # noqa: E731
    node_v = lambda j: n + 2 + j  # noqa: E731
    sink = n + 2 + nn
    tails = np.concatenate([
        np.full(n, src), task_v(np.arange(n)), task_v(pair_task),
        np.full(nn, hub), node_v(np.arange(nn)),
    ])
    heads = np.concatenate([
        task_v(np.arange(n)), np.full(n, hub), node_v(pair_node),
        node_v(np.arange(nn)), np.full(nn, sink),
    ])
    caps = np.concatenate([
        np.ones(n), np.ones(n), np.ones(len(uniq)), np.full(nn, n), caps,
    ]).astype(np.int64)
    costs = np.concatenate([
        np.zeros(2 * n), -local, np.zeros(2 * nn),
    ]).astype(np.int64)
    flow = min_cost_flow.SimpleMinCostFlow()
    flow.add_arcs_with_capacity_and_unit_cost(tails, heads, caps, costs)
    flow.set_node_supply(src, n)
    flow.set_node_supply(sink, -n)
    status = flow.solve()
    if status != flow.OPTIMAL:
        raise RuntimeError(f"oracle min-cost flow failed: status {status}")
    return int(inst.input_size.sum()) + int(flow.optimal_cost())


def repeats_for(tasks: int, nodes: int) -> int:
    """7 repeats for small groups, 5 for 10k tasks on many nodes, 3 for 100k tasks."""
    if tasks >= 100_000:
        return 3
    return 7 if tasks * max(1, int(np.log2(nodes))) <= 200_000 else 5


def run_row(inst: Instance, policy: Policy, repeats: int,
            optimum: Optional[int]) -> dict[str, Any]:
    sched = GroupScheduler()
    for j in range(inst.nodes):
        sched.add_node(j, NODE_CPUS)
    place(sched, inst, 0, policy)  # warm-up (allocations, caches), not measured
    sched.free_group(0)
    solve, wall, placement = [], [], None
    for r in range(repeats):
        ms, placement = time_ms(lambda: place(sched, inst, r + 1, policy))
        wall.append(ms)
        solve.append(placement.solve_ms)
        sched.free_group(r + 1)
    assert placement is not None and placement.feasible, placement
    counts = np.bincount(placement.nodes, minlength=inst.nodes)
    load = counts / NODE_CPUS
    return {
        "policy": policy.value,
        "tasks": inst.tasks,
        "nodes": inst.nodes,
        "inputs_per_task": inst.inputs_per_task,
        "repeats": repeats,
        "median_ms": median(solve),
        "python_ms": median(wall),
        "bytes_moved": int(placement.bytes_moved),
        "optimal_bytes": optimum,
        "max_over_mean_load": float(load.max() / load.mean()),
        "load_bound": 1.0 + inst.nodes / inst.tasks,
    }


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small subset (for make demo)")
    parser.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    parser.add_argument("--seed", type=int, default=2018)
    parser.add_argument("--no-oracle", action="store_true", help="skip the optimum")
    args = parser.parse_args(argv)
    load0 = os.getloadavg()

    from tqdm import tqdm

    grid = QUICK_GRID if args.quick else FULL_GRID
    configs = list(itertools.product(grid["tasks"], grid["nodes"], grid["inputs"]))
    rows: list[dict[str, Any]] = []
    with tqdm(total=len(configs) * len(POLICIES), unit="row", file=sys.stderr) as bar:
        for tasks, nodes, k in configs:
            inst = make_instance(tasks, nodes, k, args.seed)
            optimum = None
            if not args.no_oracle:
                caps = fair_caps(tasks, [int(NODE_CPUS)] * nodes)
                bar.set_description(f"oracle {tasks}x{nodes}x{k}")
                optimum = optimal_bytes(inst, caps)
            for policy in POLICIES:
                bar.set_description(f"{policy.value} {tasks}x{nodes}x{k}")
                rows.append(run_row(inst, policy, repeats_for(tasks, nodes), optimum))
                bar.update()

    print_table(
        rows,
        columns=["policy", "tasks", "nodes", "inputs_per_task", "repeats", "median_ms",
                 "python_ms", "bytes_moved", "optimal_bytes", "max_over_mean_load",
                 "load_bound"],
        formats={"median_ms": ".3f", "python_ms": ".3f", "max_over_mean_load": ".3f",
                 "load_bound": ".3f"},
        title=f"Placement benchmark (seed {args.seed}, {NODE_CPUS:g} CPUs per node)",
    )
    if args.json:
        write_rows(args.json, rows, load0, "bench/placement.py", argv,
                   seed=args.seed, quick=args.quick, node_cpus=NODE_CPUS)
    return rows


if __name__ == "__main__":
    main()
