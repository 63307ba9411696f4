"""Data-moving benchmark: a skewed ingest, a join with a partitioned table, a map chain,
an all-to-all repartition of records and reducer actors, where every batch moves data
between hosts (bench/datamove_workload.py has the stages).

    # on the namespace cluster (scripts/netcluster.py; make cluster-demo does all of it)
    netcluster.py exec -- .venv/bin/python bench/datamove.py --address "$IRF_NETCLUSTER_ADDRESS"
    # on an embedded loopback cluster (no shaping, no veth counters)
    .venv/bin/python bench/datamove.py --hosts 4 --cpus 1 --sizes 1 --iterations 5

Series (--schedulers, names as in bench/stream.py): vanilla, vanilla+fuse, pack, locality,
interleaved in one run: rounds of --chunk batches per (series, size), a seeded random
order per round, after --warmup unmeasured batches of each.

A batch: ingest runs first (one task per host, pinned there; the data arrives on the
hosts), and the batch's clock starts once every ingested partition exists; latency is
the start to each reducer's arrival (one sample per reducer per batch; same machine
clock). Batches run one at a time, so each batch's network bytes can be read off the
hosts' veth counters around it.

Bytes moved between hosts per batch, three ways:
- placed: from where every task actually ran; each object records its node, each task
  adds the bytes of inputs made on another node (exact, carried with the data).
- optimum: the least bytes any placement of the join can move with each host taking
  at most ceil(partitions / hosts) tasks (the core's fair-share cap on equal hosts;
  networkx min-cost flow), plus the repartition's bytes given where the reducers are.
- core: what the C++ core reported for the groups it placed (its objective). Inputs made
  by earlier groups count at ray_patch's default object size (1 MiB), not their size; a
  series' first batch also counts the reducers' placement (warm-up batches take it).
- net: the sum over hosts of eth0's tx bytes during the batch (netcluster state file
  needed: --state or $IRF_NETCLUSTER_STATE), also minus the idle rate measured first.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import benchpath  # noqa: F401  (first: sys.path)

import numpy as np  # noqa: E402
import ray  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

import common  # noqa: E402
import datamove_workload as wl  # noqa: E402
import irfront  # noqa: E402
from irfront import InitActors, Map, ReduceActors, lowering_options, options_for  # noqa: E402

STAGES = ("ingest", "join", "enrich", "project", "shuffle", "reduce")
MIB = 1 << 20


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--address", default=None, help="a running Ray cluster (HOST:PORT)")
    ap.add_argument("--hosts", type=int, default=4, help="embedded cluster only")
    ap.add_argument("--cpus", type=int, default=1, help="embedded cluster only")
    ap.add_argument("--object-store-mb", type=int, default=300, help="embedded cluster only")
    ap.add_argument("--skew", default=None,
                    help="partitions ingested per host, comma list (default 4,2,1,1 on 4 "
                         "hosts; 2,1,1,... otherwise)")
    ap.add_argument("--sizes", default="2,8", help="MB per batch partition, comma list")
    ap.add_argument("--table-frac", type=float, default=0.5,
                    help="table partition size / batch partition size")
    ap.add_argument("--table-every", type=int, default=10,
                    help="a new table version every this many batches")
    ap.add_argument("--reducers", type=int, default=None, help="default: one per host")
    ap.add_argument("--schedulers", default="vanilla,vanilla+fuse,pack,locality")
    ap.add_argument("--iterations", type=int, default=20, help="measured batches per series")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=5)
    ap.add_argument("--gap-ms", type=float, default=50.0, help="pause between batches")
    ap.add_argument("--state", default=os.environ.get("IRF_NETCLUSTER_STATE"),
                    help="netcluster state file, for the veth counters")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, metavar="PATH")
    ap.add_argument("--plots", default=None, metavar="DIR")
    a = ap.parse_args(argv)
    a.sizes = [float(s) for s in a.sizes.split(",") if s]
    a.schedulers = [s for s in a.schedulers.split(",") if s]
    return a


# ---- the cluster: hosts, counters ----------------------------------------------------------
class Hosts:
    """The alive Ray nodes with CPUs, ordered by address; veth counters when the
    netcluster state file is known."""

    def __init__(self, state_path: str | None):
        nodes = sorted((n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")),
                       key=lambda n: tuple(int(x) if x.isdigit() else 0
                                           for x in n["NodeManagerAddress"].split(".")))
        self.ids = [n["NodeID"] for n in nodes]
        self.addrs = [n["NodeManagerAddress"] for n in nodes]
        self.cpus = [int(n["Resources"]["CPU"]) for n in nodes]
        self.index = {h: i for i, h in enumerate(self.ids)}
        self.state = None
        self._pids: dict[str, int] = {}
        if state_path and os.path.exists(state_path):
            with open(state_path) as f:
                self.state = json.load(f)
            sys.path.insert(0, os.path.join(benchpath.ROOT, "scripts"))
            import netcluster
            self._nc = netcluster
            by_addr = {h["addr"]: h["ns"] for h in self.state["hosts"]}
            self.ns = [by_addr.get(a) for a in self.addrs]
            for ns in self.ns:
                if ns is not None:
                    pids = netcluster.ns_pids(ns)
                    raylets = [p for p in pids
                               if netcluster.cmdline(p).split(" ", 1)[0].endswith("/raylet")]
                    if raylets or pids:
                        self._pids[ns] = (raylets or pids)[0]

    def __len__(self) -> int:
        return len(self.ids)

    def strategy(self, h: int):
        return NodeAffinitySchedulingStrategy(self.ids[h], soft=False)

    def counters(self) -> list[tuple[int, int]] | None:
        """(rx, tx) bytes of each host's eth0, from /proc/PID/net/dev of its raylet."""
        if not self._pids:
            return None
        out = []
        for ns in self.ns:
            pid = self._pids.get(ns)
            rx = tx = 0
            try:
                with open(f"/proc/{pid}/net/dev") as f:
                    for line in f:
                        name, _, rest = line.partition(":")
                        if name.strip() == "eth0":
                            v = rest.split()
                            rx, tx = int(v[0]), int(v[8])
            except (OSError, TypeError):
                return None
            out.append((rx, tx))
        return out


def net_delta(before, after) -> tuple[int, int] | None:
    if before is None or after is None:
        return None
    tx = sum(a[1] - b[1] for a, b in zip(after, before))
    rx = sum(a[0] - b[0] for a, b in zip(after, before))
    return tx, rx


# ---- one size: partitions, tables, the optimum -----------------------------------------------
class Layout:
    """Where partitions are ingested and where the table partitions live, for one size."""

    def __init__(self, hosts: Hosts, skew: list[int], size_mb: float, frac: float):
        H = len(hosts)
        self.size_mb = size_mb
        self.part_host = [h for h in range(H) for _ in range(skew[h])]
        self.P = len(self.part_host)
        self.rows = max(1, int(size_mb * MIB) // wl.RECORD_BYTES)
        self.key_range = max(1, int(size_mb * frac * MIB) // wl.TABLE_ROW_BYTES)
        self.table_host = [(h + 1) % H for h in self.part_host]
        self.batch_bytes = self.rows * wl.RECORD_BYTES
        self.table_bytes = self.key_range * wl.TABLE_ROW_BYTES
        self.cap = math.ceil(self.P / H)
        self.tables: list | None = None
        self.version = -1

    def refresh_tables(self, hosts: Hosts, version: int, seed: int) -> None:
        refs = [wl.make_table.options(scheduling_strategy=hosts.strategy(h)).remote(
            version, p, self.key_range, seed) for p, h in enumerate(self.table_host)]
        ray.wait(refs, num_returns=len(refs), fetch_local=False, timeout=120)
        self.tables, self.version = refs, version

    def ingest(self, hosts: Hosts, bid: int, seed: int) -> list:
        parts: list = [None] * self.P
        for h in range(len(hosts)):
            mine = [p for p, ph in enumerate(self.part_host) if ph == h]
            if not mine:
                continue
            refs = wl.ingest.options(scheduling_strategy=hosts.strategy(h),
                                     num_returns=len(mine)).remote(
                bid, h, mine, self.rows, self.key_range, seed)
            refs = [refs] if len(mine) == 1 else refs
            for p, r in zip(mine, refs):
                parts[p] = r
        ray.wait(parts, num_returns=len(parts), fetch_local=False, timeout=120)
        return parts

    def join_optimum(self, H: int, where: list[set[int]]) -> int:
        """Least join bytes moved with at most ``cap`` join tasks per host, given the
        hosts holding each batch partition (``where[p]``) and table partition
        (``where[P + p]``) at the batch's start."""
        import networkx as nx
        g = nx.DiGraph()
        g.add_node("s", demand=-self.P)
        g.add_node("t", demand=self.P)
        for p in range(self.P):
            g.add_edge("s", ("p", p), capacity=1, weight=0)
            for n in range(H):
                cost = (self.batch_bytes if n not in where[p] else 0) + \
                    (self.table_bytes if n not in where[self.P + p] else 0)
                g.add_edge(("p", p), ("n", n), capacity=1, weight=cost)
        for n in range(H):
            g.add_edge(("n", n), "t", capacity=self.cap, weight=0)
        flow = nx.min_cost_flow(g)
        return int(nx.cost_of_flow(g, flow))


# ---- the program ----------------------------------------------------------------------------
def build_batch(parts, tables, reducers, shuffle):
    """One batch as IR: join -> enrich -> project -> shuffle -> ReduceActors."""
    j = Map(wl.join, parts, args=[(t,) for t in tables])
    e = Map(wl.enrich, j)
    pr = Map(wl.project, e)
    s = Map(shuffle, pr, num_returns=reducers.n)
    return ReduceActors("reduce", reducers, s), [j, e, pr, s]


class Series:
    def __init__(self, name: str, layout: Layout):
        self.name, self.layout = name, layout
        self.opts = options_for(name)
        self.key = (name, layout.size_mb)

class CoreLog:
    """Records the bytes_moved the C++ core reports for each group it places."""

    def __init__(self):
        self.entries: list[tuple[int, str, int]] = []
        self._rt = None

    def attach(self) -> None:
        import ray_patch
        rt = ray_patch.get_runtime()
        if rt is self._rt:
            return
        self._rt = rt
        sched = rt.scheduler
        orig = sched.place_arrays

        def place_arrays(group_id, *a, **kw):
            p = orig(group_id, *a, **kw)
            self.entries.append((group_id, kw.get("policy"), int(p.bytes_moved)))
            return p
        sched.place_arrays = place_arrays

    def take(self) -> int:
        out = sum(b for _, _, b in self.entries)
        self.entries.clear()
        return out


def run_batch(s: Series, hosts: Hosts, reducers, shuffle, bid: int, seed: int,
              core: CoreLog) -> dict:
    lay = s.layout
    parts = lay.ingest(hosts, bid, seed)
    if s.opts.grouped:
        core.attach()
    core.take()
    where = locations(parts + lay.tables, hosts)
    before = hosts.counters()
    t_c = time.time()
    start = time.time()
    with lowering_options(s.opts):
        root, inner = build_batch(parts, lay.tables, reducers, shuffle)
        refs = root.eval()
    out = ray.get(refs, timeout=300)
    end = time.time()
    after = hosts.counters()
    core_b = core.take() if s.opts.grouped else None
    for n in [root] + inner:
        n.free()
    del refs, parts
    moved: dict[str, int] = {}
    tasks = {st: [0] * len(hosts) for st in STAGES}
    join_at = {}
    for r in out:
        for k, v in r["moved"].items():
            moved[k] = moved.get(k, 0) + v
        for st, node, *part in r["trace"]:
            if st in tasks and node in hosts.index:
                tasks[st][hosts.index[node]] += 1
            if st == "join" and part and node in hosts.index:
                join_at[part[0]] = hosts.index[node]
    P = lay.P
    join_loc = sum((lay.batch_bytes if join_at.get(p) not in where[p] else 0)
                   + (lay.table_bytes if join_at.get(p) not in where[P + p] else 0)
                   for p in range(P))
    rest = sum(v for k, v in moved.items() if k != "join")
    return {"lat_ms": [(r["t"] - start) * 1e3 for r in out], "wall_s": end - t_c,
            "moved": moved, "placed_task": sum(moved.values()), "join_loc": join_loc,
            "placed": join_loc + rest, "opt_join": lay.join_optimum(len(hosts), where),
            "core": core_b, "net": net_delta(before, after), "tasks": tasks}


def locations(refs, hosts: Hosts) -> list[set[int]]:
    """The hosts holding a copy of each object now (primary and secondary copies)."""
    found = ray.experimental.get_object_locations(refs)
    return [{hosts.index[n] for n in (found.get(r) or {}).get("node_ids") or ()
             if n in hosts.index} for r in refs]


# ---- the run -------------------------------------------------------------------------------
def idle_rate(hosts: Hosts, seconds: float = 3.0) -> float | None:
    """Bytes per second the hosts send with no batch running (Ray's own chatter)."""
    a = hosts.counters()
    time.sleep(seconds)
    b = hosts.counters()
    d = net_delta(a, b)
    return None if d is None else d[0] / seconds


def default_skew(H: int) -> list[int]:
    return [4, 2, 1, 1] if H == 4 else [2] + [1] * (H - 1)


def main(argv=None):
    args = parse_args(argv)
    cluster = None
    if args.address:
        irfront.init(address=args.address)
    else:
        from irfront.cluster import LocalCluster
        print(f"starting an embedded cluster: {args.hosts} nodes x {args.cpus} CPUs on "
              "127.0.0.1 (no shaping, no veth counters) ...", flush=True)
        cluster = LocalCluster(num_nodes=args.hosts, cpus_per_node=args.cpus,
                               object_store_mb=args.object_store_mb)
    try:
        ray.cloudpickle.register_pickle_by_value(wl)
        return run(args)
    finally:
        irfront.shutdown()
        if cluster is not None:
            cluster.shutdown()


def run(args):
    load0 = os.getloadavg()
    hosts = Hosts(args.state)
    H = len(hosts)
    skew = [int(x) for x in args.skew.split(",")] if args.skew else default_skew(H)
    if len(skew) != H:
        raise SystemExit(f"--skew has {len(skew)} entries for {H} hosts; give one per host")
    R = args.reducers or H
    shuffle = wl.shuffle_fn(R)
    layouts = {sz: Layout(hosts, skew, sz, args.table_frac) for sz in args.sizes}
    series = [Series(n, layouts[sz]) for sz in args.sizes for n in args.schedulers]
    reducers = {}
    for s in series:
        if s.opts.scheduler not in reducers:
            reducers[s.opts.scheduler] = InitActors(wl.Reducer, R, [(i,) for i in range(R)])
    print(f"hosts: {', '.join(f'{a} ({c} CPU)' for a, c in zip(hosts.addrs, hosts.cpus))}; "
          f"skew {skew}; {R} reducers; counters: "
          f"{'veth eth0 of each host' if hosts.counters() else 'none (no netcluster state)'}",
          flush=True)
    rate = idle_rate(hosts) if hosts.counters() else None
    core = CoreLog()
    bid = 0

    def batch(s, measured):
        nonlocal bid
        lay = s.layout
        if lay.tables is None or bid // args.table_every != lay.version:
            lay.refresh_tables(hosts, bid // args.table_every, args.seed)
        r = run_batch(s, hosts, reducers[s.opts.scheduler], shuffle, bid, args.seed, core)
        bid += 1
        time.sleep(args.gap_ms / 1e3)
        return r

    t0 = time.time()
    for _ in range(args.warmup):
        for s in series:
            batch(s, False)
    results: dict[tuple, list[dict]] = {s.key: [] for s in series}
    rounds = math.ceil(args.iterations / args.chunk)
    for r in range(rounds):
        order = [series[j] for j in np.random.default_rng(r).permutation(len(series))]
        for s in order:
            for _ in range(min(args.chunk, args.iterations - len(results[s.key]))):
                results[s.key].append(batch(s, True))
        print(f"round {r + 1}/{rounds} done ({time.time() - t0:.0f} s)", flush=True)
    wall = time.time() - t0
    rows = summarise(series, results, layouts, hosts, rate, R)
    report(args, rows, hosts, skew, R, rate, wall, results, load0)
    return rows


def summarise(series, results, layouts, hosts, rate, R):
    rows = []
    for s in series:
        rs = results[s.key]
        lay = s.layout
        lat = np.concatenate([r["lat_ms"] for r in rs])
        placed = np.mean([r["placed"] for r in rs])
        placed_task = np.mean([r["placed_task"] for r in rs])
        stage = {st: float(np.mean([r["moved"].get(st, 0) for r in rs]))
                 for st in STAGES[1:]}
        # the repartition's bytes given where this series' reducers are (as placed)
        red = np.mean([r["tasks"]["reduce"] for r in rs], axis=0)
        total_in = lay.P * lay.batch_bytes
        nets = [r["net"] for r in rs if r["net"] is not None]
        net = float(np.mean([n[0] for n in nets])) if nets else None
        net_idle = (float(np.mean([n[0] - rate * r["wall_s"] for n, r in
                                   zip(nets, rs)])) if nets and rate is not None else None)
        cores = [r["core"] for r in rs if r["core"] is not None]
        opt_join = float(np.mean([r["opt_join"] for r in rs]))
        join_loc = float(np.mean([r["join_loc"] for r in rs]))
        tasks = {st: np.mean([r["tasks"][st] for r in rs], axis=0) for st in STAGES}
        rows.append({
            "series": s.name, "size_mb": lay.size_mb,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "samples": int(lat.size),
            "placed_mb": placed / MIB, "per_task_mb": placed_task / MIB,
            "join_mb": join_loc / MIB,
            "opt_join_mb": opt_join / MIB,
            "core_mb": float(np.mean(cores)) / MIB if cores else None,
            "shuffle_mb": (stage["reduce"] + stage["enrich"] + stage["project"]
                           + stage["shuffle"]) / MIB,
            "net_mb": net / MIB if net is not None else None,
            "net_idle_mb": net_idle / MIB if net_idle is not None else None,
            "net_vs_placed": (net_idle / placed) if net_idle is not None and placed else None,
            "join_tasks": "/".join(f"{x:g}" for x in np.round(tasks["join"], 1)),
            "reducers": "/".join(f"{x:g}" for x in np.round(red, 1)),
            "stage_mb": {k: v / MIB for k, v in stage.items()},
            "tasks_per_host": {k: [float(x) for x in v] for k, v in tasks.items()},
            "batch_mb": total_in / MIB,
        })
    by = {(r["series"], r["size_mb"]): r for r in rows}
    for r in rows:
        v = by.get(("vanilla+fuse", r["size_mb"]))
        r["p50_vs_vfuse"] = r["p50_ms"] / v["p50_ms"] if v else None
    return rows


def report(args, rows, hosts, skew, R, rate, wall, results, load0):
    cols = ["series", "size_mb", "p50_ms", "p99_ms", "samples", "p50_vs_vfuse",
            "placed_mb", "per_task_mb", "join_mb", "opt_join_mb", "core_mb", "shuffle_mb", "net_mb",
            "net_idle_mb", "net_vs_placed", "join_tasks", "reducers"]
    fmt = {c: ".1f" for c in ("p50_ms", "p99_ms")}
    fmt.update({c: ".2f" for c in ("p50_vs_vfuse", "placed_mb", "per_task_mb", "join_mb", "opt_join_mb",
                                   "core_mb", "shuffle_mb", "net_mb", "net_idle_mb",
                                   "net_vs_placed")})
    fmt["size_mb"] = "g"
    print()
    common.print_table(rows, cols, fmt, title=(
        f"datamove: {len(hosts)} hosts ({'/'.join(map(str, hosts.cpus))} CPUs), skew "
        f"{'/'.join(map(str, skew))} partitions, {R} reducers; latency batch start -> "
        f"reducer; MB moved between hosts per batch; {wall:.0f} s"))
    print("placed: from where tasks ran and where copies were at the batch's start "
          "(exact); per_task: every input not made on the task's node charged (a table "
          "copy cached by an earlier batch charged again); join/opt_join: the join's bytes "
          "and the least any placement under the fair-share cap moves; core: the core's "
          "reported objective; net: veth tx bytes "
          f"(idle: minus {0 if rate is None else rate / 1e3:.1f} kB/s of Ray's chatter)")
    print("tasks per host per stage (mean per batch, hosts in address order):")
    for r in rows:
        tp = r["tasks_per_host"]
        print(f"  {r['series']:>13} {r['size_mb']:g} MB: " + "  ".join(
            f"{st} {'/'.join(f'{x:g}' for x in np.round(tp[st], 1))}" for st in STAGES))
    if args.json:
        payload = {"rows": rows, "hosts": hosts.addrs, "cpus": hosts.cpus, "skew": skew,
                   "reducers": R, "idle_tx_bytes_per_s": rate, "wall_s": wall,
                   "args": {k: v for k, v in vars(args).items()},
                   "provenance": common.provenance(load0),
                   "latencies_ms": {f"{n}@{s:g}": [x for b in rs for x in b["lat_ms"]]
                                    for (n, s), rs in results.items()},
                   "per_batch": {f"{n}@{s:g}": [{k: b[k] for k in ("placed", "placed_task",
                                                                  "join_loc", "opt_join",
                                                                  "core", "net",
                                                                  "wall_s", "moved")}
                                                for b in rs]
                                 for (n, s), rs in results.items()}}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=1, default=float)
            f.write("\n")
        print(f"wrote {args.json}")
    if args.plots:
        print("plots: " + ", ".join(plot(args.plots, rows, args)))


def plot(directory, rows, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(directory, exist_ok=True)
    names, sizes = args.schedulers, args.sizes
    by = {(r["series"], r["size_mb"]): r for r in rows}
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    w = 0.8 / len(names)
    x = np.arange(len(sizes))
    for k, n in enumerate(names):
        p50 = [by[(n, s)]["p50_ms"] for s in sizes]
        p99 = [by[(n, s)]["p99_ms"] for s in sizes]
        axes[0].bar(x + k * w, p50, w, label=n)
        axes[0].scatter(x + k * w, p99, marker="_", s=200, color="k")
        placed = [by[(n, s)]["placed_mb"] for s in sizes]
        axes[1].bar(x + k * w, placed, w, label=f"{n}")
        net = [by[(n, s)]["net_idle_mb"] for s in sizes]
        if all(v is not None for v in net):
            axes[1].scatter(x + k * w, net, marker="o", color="k", s=12)
    for ax in axes:
        ax.set_xticks(x + w * (len(names) - 1) / 2)
        ax.set_xticklabels([f"{s:g} MB" for s in sizes])
        ax.set_xlabel("data per partition")
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("latency p50 (bars), p99 (dashes), ms")
    axes[1].set_ylabel("MB moved between hosts per batch")
    axes[1].set_title("bars: from task placement; dots: veth counters", fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    p = os.path.join(directory, "datamove_latency_bytes.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


if __name__ == "__main__":
    main()
