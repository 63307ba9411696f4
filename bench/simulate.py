"""Cluster-scale simulation: group placement (the C++ policies) against a model of Ray's.

Simulated clusters of 100 to 2,000 nodes with a few CPUs each run synthetic BSP jobs:

  broadcast  one map stage; every task reads one broadcast object (held by the driver's
             node 0) and its own partition (held by a random node)
  chain      three one-to-one map stages; stage s+1 task i reads stage s task i's output,
             held where that task ran
  shuffle    an all-to-all reduce: reducer r reads block (i, r) of every node i (map
             outputs merged per node, as Ray's push-based shuffle does)
  join       a partitioned three-way join: task i reads partition i of three tables,
             each held by a random node

Object sizes are skewed (lognormal, sigma 1.5, clipped to 64 KiB .. 2 GiB).

Placements compared, stage by stage:
  pack, locality, spread  the group scheduler's C++ policies (ray_patch.scheduler), the whole
                          stage at once, each stage's group freed after it ran
  ray                     a model of Ray's per-task placement (RayModel below)

Cost model (the same for every placement): node j runs at most `cpus` tasks at a time, its
tasks in submission order; a task holds its CPU while it fetches the inputs its node lacks
through the node's network link (bandwidth `--gbps`, one transfer at a time per link, an
object fetched once per node and shared by every later task there, as Ray's object
manager does), then computes for `--cpu-ns-per-byte` per input byte. Stages are BSP: the
next starts when the last task of this one ends. Not modelled: the sender's link, object
spilling, worker start-up, scheduling latency, pipelining across stages.

Metrics per job and placement: bytes moved (input bytes fetched, once per (object, node)),
load imbalance (max over nodes of tasks per CPU / the mean, worst stage), makespan (sum of
the stage makespans), and for the group policies bytes_per_task (the solver's objective:
each task charged for each input it lacks, so a broadcast counts once per task).

Usage: python bench/simulate.py [--quick] [--nodes 100,1000] [--json PATH] [--plot PATH]
"""
from __future__ import annotations

import argparse
import bisect
import heapq
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

import benchpath  # noqa: E402,F401  (first: sys.path)

from common import print_table, write_rows  # noqa: E402

from ray_patch.scheduler import GroupScheduler, Policy  # noqa: E402

JOBS = ("broadcast", "chain", "shuffle", "join")
PLACERS = ("pack", "locality", "spread", "ray")
FULL_NODES = (100, 250, 500, 1000, 2000)
QUICK_NODES = (100, 250)
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


# ----------------------------------------------------------------------------- jobs
@dataclass
class Stage:
    """One BSP stage: task i reads objects obj[off[i]:off[i+1]]; writes out[i] (or -1)."""

    off: np.ndarray
    obj: np.ndarray
    out: np.ndarray


@dataclass
class Job:
    """Objects (size, holder node; -1 = written by a stage, set when it runs) and stages."""

    name: str
    size: np.ndarray
    holder: np.ndarray
    stages: list[Stage] = field(default_factory=list)


def skewed_sizes(rng: np.random.Generator, count: int, median: float) -> np.ndarray:
    """Lognormal sizes (sigma 1.5) around `median` bytes, clipped to 64 KiB .. 2 GiB."""
    sizes = rng.lognormal(np.log(median), 1.5, size=count)
    return np.clip(sizes, 64 * KIB, 2 * GIB).astype(np.int64)


class ObjectTable:
    """Collects objects while a job is generated."""

    def __init__(self) -> None:
        self.sizes: list[np.ndarray] = []
        self.holders: list[np.ndarray] = []
        self.count = 0

    def add(self, sizes: np.ndarray, holders: np.ndarray) -> np.ndarray:
        ids = np.arange(self.count, self.count + len(sizes), dtype=np.int64)
        self.sizes.append(np.asarray(sizes, dtype=np.int64))
        self.holders.append(np.asarray(holders, dtype=np.int64))
        self.count += len(sizes)
        return ids

    def job(self, name: str, stages: list[Stage]) -> Job:
        return Job(name, np.concatenate(self.sizes), np.concatenate(self.holders), stages)


def one_input_each(ids: np.ndarray, out: np.ndarray) -> Stage:
    n = len(ids)
    return Stage(np.arange(n + 1, dtype=np.int64), ids.astype(np.int64), out)


def make_job(name: str, nodes: int, cpus: int, rng: np.random.Generator) -> Job:
    """One synthetic job on `nodes` nodes; map-like stages have nodes * cpus tasks."""
    n = nodes * cpus
    table = ObjectTable()
    none = np.full(n, -1, dtype=np.int64)
    if name == "broadcast":
        bcast = table.add(np.array([256 * MIB]), np.array([0]))
        parts = table.add(skewed_sizes(rng, n, 16 * MIB), rng.integers(0, nodes, n))
        obj = np.stack([np.full(n, bcast[0]), parts], axis=1).reshape(-1)
        return table.job(name, [Stage(np.arange(0, 2 * n + 1, 2), obj, none)])
    if name == "chain":
        parts = table.add(skewed_sizes(rng, n, 16 * MIB), rng.integers(0, nodes, n))
        stages, inputs = [], parts
        for s in range(3):
            out = none if s == 2 else table.add(skewed_sizes(rng, n, 16 * MIB), none)
            stages.append(one_input_each(inputs, out))
            inputs = out
        return table.job(name, stages)
    if name == "shuffle":
        reducers = nodes
        # Block (i, r): node i's merged map output for reducer r; a few heavy keys.
        sizes = skewed_sizes(rng, nodes * reducers, 256 * KIB)
        blocks = table.add(sizes, np.repeat(np.arange(nodes), reducers))
        obj = blocks.reshape(nodes, reducers).T.reshape(-1)  # reducer-major
        off = np.arange(0, nodes * reducers + 1, nodes, dtype=np.int64)
        return table.job(name, [Stage(off, obj, np.full(reducers, -1, dtype=np.int64))])
    if name == "join":
        tables = [table.add(skewed_sizes(rng, n, med), rng.integers(0, nodes, n))
                  for med in (32 * MIB, 8 * MIB, 2 * MIB)]
        obj = np.stack(tables, axis=1).reshape(-1)
        return table.job(name, [Stage(np.arange(0, 3 * n + 1, 3), obj, none)])
    raise ValueError(f"unknown job {name!r}; expected one of {', '.join(JOBS)}")


# ----------------------------------------------------------------------------- placers
def place_group(sched: GroupScheduler, policy: Policy, stage: Stage, job: Job,
                group_id: int) -> tuple[np.ndarray, int]:
    """The whole stage through the C++ policy. Returns (node per task, per-task bytes)."""
    n = len(stage.off) - 1
    holders = job.holder[stage.obj]
    located = holders >= 0
    loc_off = np.concatenate([[0], np.cumsum(located)]).astype(np.int64)
    empty = np.empty(0, dtype=np.int64)
    placement = sched.place_arrays(
        group_id, np.ones(n), stage.off, job.size[stage.obj], empty, empty,
        loc_off, holders[located], policy=policy)
    assert placement.feasible, placement.reason
    sched.free_group(group_id)
    return placement.nodes.astype(np.int64), int(placement.bytes_moved)


class RayModel:
    """Ray's placement of one task at a time (release 2.x), as read in its source.

    1. Lease target (src/ray/core_worker/lease_policy.cc,
       LocalityAwareLeasePolicy::GetBestNodeIdForTask): the node with the most bytes of
       the task's arguments local, summed over its arguments' locations; a node replaces
       the best only with strictly more bytes, so ties go to the node that reached the
       maximum first in argument order. No located argument: the submitter's raylet
       (the driver's node, 0 here).
    2. The target raylet runs the hybrid policy
       (src/ray/raylet/scheduling/policy/hybrid_scheduling_policy.cc, ScheduleImpl and
       GetBestNode): feasible nodes are split into available (a free CPU now) and not;
       a node's score is its CPU utilisation, 0 below the spread threshold (0.5,
       ComputeNodeScore); the list is sorted by node id, then stable-sorted by score; if
       the local node is available and its score <= the best score it is chosen,
       otherwise a node is drawn uniformly among the first k, k = max(1, top_k_absolute
       = 1, int(nodes * top_k_fraction = 0.2)) (ray_config_def.h defaults). With no
       available node the same rule runs over the feasible nodes, which keeps the task
       queued at the local (target) raylet.
    3. A queued task is re-scheduled when a CPU frees: the freed node's own queue first
       (local node preferred), otherwise the oldest queued task anywhere spills to it
       (it is then the only available node).
    Randomness comes from the injected generator.
    """

    def __init__(self, nodes: int, cpus: int, rng: np.random.Generator,
                 spread_threshold: float = 0.5, top_k_fraction: float = 0.2) -> None:
        self.nodes, self.cpus, self.rng = nodes, cpus, rng
        self.k = max(1, int(nodes * top_k_fraction))
        # Running tasks per node -> score class; classes hold sorted node ids.
        self.running = np.zeros(nodes, dtype=np.int64)
        self.score = [0.0 if c / cpus < spread_threshold else c / cpus for c in range(cpus + 1)]
        self.classes = sorted(set(self.score[:cpus]))  # available nodes only
        self.members: dict[float, list[int]] = {s: [] for s in self.classes}
        self.members[self.score[0]] = list(range(nodes))

    def lease_target(self, holders: np.ndarray, sizes: np.ndarray) -> int:
        if len(holders) == 0 or (holders < 0).all():
            return 0
        if len(holders) > 8:  # many arguments: ties between totals have probability ~0
            located = holders >= 0
            return int(np.argmax(np.bincount(holders[located], weights=sizes[located])))
        best, most, local = 0, 0, {}
        for h, s in zip(holders.tolist(), sizes.tolist()):
            if h < 0:
                continue
            local[h] = local.get(h, 0) + s
            if local[h] > most:
                most, best = local[h], h
        return best

    def _move(self, node: int, delta: int) -> None:
        before = self.running[node]
        if before < self.cpus:
            bisect_remove(self.members[self.score[before]], node)
        self.running[node] = before + delta
        if before + delta < self.cpus:
            bisect.insort(self.members[self.score[before + delta]], node)

    def choose(self, local: int) -> Optional[int]:
        """Hybrid policy at raylet `local`: a node with a free CPU, or None (queue)."""
        if self.running[local] < self.cpus:
            local_score = self.score[self.running[local]]
            best_score = next(s for s in self.classes if self.members[s])
            if local_score <= best_score:
                return local
        available = sum(len(self.members[s]) for s in self.classes)
        if available == 0:
            return None
        index = int(self.rng.integers(0, min(self.k, available)))
        for s in self.classes:
            if index < len(self.members[s]):
                return self.members[s][index]
            index -= len(self.members[s])
        raise AssertionError("unreachable")

    def start(self, node: int) -> None:
        self._move(node, +1)

    def finish(self, node: int) -> None:
        self._move(node, -1)


def bisect_remove(items: list[int], value: int) -> None:
    i = bisect.bisect_left(items, value)
    assert items[i] == value
    del items[i]


# ----------------------------------------------------------------------------- execution
class Cluster:
    """Per-node links and the objects each node holds (fetched once per node)."""

    def __init__(self, nodes: int, job: Job, gbps: float, cpu_ns_per_byte: float) -> None:
        self.bw = gbps * 1e9 / 8
        self.cpu_s = cpu_ns_per_byte * 1e-9
        self.job = job
        self.link_free = np.zeros(nodes)
        self.arrival: dict[tuple[int, int], float] = {}  # (object, node) -> time held
        self.moved = 0
        fanout = np.bincount(np.concatenate([s.obj for s in job.stages]),
                             minlength=len(job.size))
        self.shared = fanout > 1

    def run_task(self, stage: Stage, task: int, node: int, start: float) -> float:
        """Fetches the task's missing inputs over node's link, computes; returns the end."""
        objs = stage.obj[stage.off[task]:stage.off[task + 1]]
        sizes = self.job.size[objs]
        remote = self.job.holder[objs] != node
        ready = start
        fresh = 0
        for o, s in zip(objs[remote].tolist(), sizes[remote].tolist()):
            if self.shared[o]:
                held = self.arrival.get((o, node))
                if held is not None:
                    ready = max(ready, held)
                    continue
                begin = max(start, self.link_free[node])
                self.link_free[node] = begin + s / self.bw
                self.arrival[(o, node)] = self.link_free[node]
                self.moved += s
                ready = max(ready, self.link_free[node])
            else:
                fresh += s
        if fresh:
            begin = max(start, self.link_free[node])
            self.link_free[node] = begin + fresh / self.bw
            self.moved += fresh
            ready = max(ready, self.link_free[node])
        return ready + self.cpu_s * float(sizes.sum())


def run_static(cluster: Cluster, stage: Stage, nodes_of: np.ndarray, cpus: int,
               t0: float) -> float:
    """A fixed placement: each node runs its tasks in index order on `cpus` slots."""
    end = t0
    slots: dict[int, list[float]] = {}
    for task, node in enumerate(nodes_of.tolist()):
        heap = slots.setdefault(node, [t0] * cpus)
        start = heapq.heappop(heap)
        done = cluster.run_task(stage, task, node, start)
        heapq.heappush(heap, done)
        end = max(end, done)
    return end


def run_ray(cluster: Cluster, stage: Stage, job: Job, model: RayModel,
            t0: float) -> tuple[float, np.ndarray]:
    """Ray's per-task placement, event by event. Returns (end, node per task)."""
    n = len(stage.off) - 1
    placed = np.full(n, -1, dtype=np.int64)
    queues: dict[int, list[int]] = {}  # raylet -> queued tasks (FIFO)
    waiting: list[tuple[int, int]] = []  # (task, raylet): global FIFO of queued tasks
    events: list[tuple[float, int, int]] = []  # (end, task, node)
    end = t0

    def launch(task: int, node: int, now: float) -> None:
        model.start(node)
        placed[task] = node
        heapq.heappush(events, (cluster.run_task(stage, task, node, now), task, node))

    for task in range(n):
        objs = stage.obj[stage.off[task]:stage.off[task + 1]]
        target = model.lease_target(job.holder[objs], job.size[objs])
        node = model.choose(target)
        if node is None:
            queues.setdefault(target, []).append(task)
            waiting.append((task, target))
        else:
            launch(task, node, t0)
    head = 0
    while events:
        now, task, node = heapq.heappop(events)
        end = max(end, now)
        model.finish(node)
        own = queues.get(node)
        if own:
            nxt = own.pop(0)
        else:
            while head < len(waiting) and placed[waiting[head][0]] >= 0:
                head += 1
            if head == len(waiting):
                continue
            nxt, raylet = waiting[head]
            queues[raylet].remove(nxt)
        launch(nxt, node, now)
    return end, placed


def imbalance(nodes_of: np.ndarray, nodes: int) -> float:
    counts = np.bincount(nodes_of, minlength=nodes)
    return float(counts.max() / counts.mean())


def simulate(job: Job, placer: str, nodes: int, cpus: int, args: argparse.Namespace,
             seed: int) -> dict[str, Any]:
    """Runs the job's stages under one placer; returns the row."""
    job = Job(job.name, job.size, job.holder.copy(), job.stages)
    cluster = Cluster(nodes, job, args.gbps, args.cpu_ns_per_byte)
    sched = None
    if placer != "ray":
        sched = GroupScheduler()
        for j in range(nodes):
            sched.add_node(j, float(cpus))
    model = RayModel(nodes, cpus, np.random.default_rng([seed, 7]))
    t, worst, per_task, solve_s = 0.0, 0.0, 0, 0.0
    for s, stage in enumerate(job.stages):
        if placer == "ray":
            t, nodes_of = run_ray(cluster, stage, job, model, t)
        else:
            begin = time.perf_counter()
            nodes_of, charged = place_group(sched, Policy(placer), stage, job, s + 1)
            solve_s += time.perf_counter() - begin
            per_task += charged
            t = run_static(cluster, stage, nodes_of, cpus, t)
        worst = max(worst, imbalance(nodes_of, nodes))
        written = stage.out >= 0
        job.holder[stage.out[written]] = nodes_of[written]
    return {
        "job": job.name, "nodes": nodes, "placer": placer,
        "tasks": int(sum(len(st.off) - 1 for st in job.stages)),
        "gb_moved": cluster.moved / 1e9,
        "gb_per_task_charge": per_task / 1e9 if placer != "ray" else None,
        "imbalance": worst, "makespan_s": t,
        "place_s": solve_s if placer != "ray" else None,
    }


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(JOBS), figsize=(4 * len(JOBS), 6.5), squeeze=False)
    for c, job in enumerate(JOBS):
        for placer, style in zip(PLACERS, ("s:", "o-", "^--", "x-")):
            pts = sorted((r["nodes"], r["gb_moved"], r["makespan_s"]) for r in rows
                         if r["job"] == job and r["placer"] == placer)
            if not pts:
                continue
            xs = [p[0] for p in pts]
            axes[0][c].plot(xs, [p[1] for p in pts], style, label=placer)
            axes[1][c].plot(xs, [p[2] for p in pts], style, label=placer)
        axes[0][c].set_title(job)
        axes[0][c].set_ylabel("GB moved")
        axes[1][c].set_ylabel("makespan (s)")
        axes[1][c].set_xlabel("nodes")
        axes[0][c].set_yscale("log")
        for r in (0, 1):
            axes[r][c].set_xscale("log")
            axes[r][c].grid(True, alpha=0.3)
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("Simulated BSP jobs: group placement vs a model of Ray's per-task placement")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 and 250 nodes only")
    parser.add_argument("--nodes", help="comma-separated cluster sizes")
    parser.add_argument("--jobs", default=",".join(JOBS))
    parser.add_argument("--cpus", type=int, default=4, help="CPUs per node")
    parser.add_argument("--gbps", type=float, default=10.0, help="link bandwidth per node")
    parser.add_argument("--cpu-ns-per-byte", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=2018)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--plot", metavar="PATH")
    args = parser.parse_args(argv)
    load0 = os.getloadavg()
    sizes = ([int(x) for x in args.nodes.split(",")] if args.nodes
             else QUICK_NODES if args.quick else FULL_NODES)
    rows = []
    for nodes in sizes:
        for name in args.jobs.split(","):
            job = make_job(name, nodes, args.cpus, np.random.default_rng([args.seed, nodes]))
            for placer in PLACERS:
                rows.append(simulate(job, placer, nodes, args.cpus, args, args.seed))
                print(f"  {name} {nodes} {placer}: done", file=sys.stderr, flush=True)
            ray = next(r for r in rows[-len(PLACERS):] if r["placer"] == "ray")
            for r in rows[-len(PLACERS):]:
                r["bytes_vs_ray"] = r["gb_moved"] / ray["gb_moved"] if ray["gb_moved"] else None
                r["makespan_vs_ray"] = r["makespan_s"] / ray["makespan_s"]
    print_table(
        rows,
        columns=["job", "nodes", "placer", "tasks", "gb_moved", "bytes_vs_ray",
                 "gb_per_task_charge", "imbalance", "makespan_s", "makespan_vs_ray",
                 "place_s"],
        formats={"gb_moved": ".1f", "bytes_vs_ray": ".2f", "gb_per_task_charge": ".1f",
                 "imbalance": ".2f", "makespan_s": ".3f", "makespan_vs_ray": ".2f",
                 "place_s": ".3f"},
        title=(f"BSP simulation ({args.cpus} CPUs/node, {args.gbps:g} Gbit/s per node, "
               f"{args.cpu_ns_per_byte:g} ns CPU per input byte, seed {args.seed})"),
    )
    if args.json:
        write_rows(args.json, rows, load0, "bench/simulate.py", argv, seed=args.seed,
                   cpus=args.cpus, gbps=args.gbps, cpu_ns_per_byte=args.cpu_ns_per_byte)
    if args.plot:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return rows


if __name__ == "__main__":
    main()
