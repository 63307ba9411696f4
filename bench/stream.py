"""Streaming benchmark: the 2018 draft's micro-batch pipeline under each scheduler.

    python bench/stream.py                                   # embedded 4x2 LocalCluster
    python bench/stream.py --sizes 1,4,16 --schedulers vanilla,locality,locality-nofuse \
        --json bench/results/stream.json --plots bench/results

Per micro-batch (one every --interval-ms): --maps Map(map_step) stages over the
--partitions handles of a Broadcast(generate_dependencies, data_mb), a shuffle Map into
--reducers partial sums (num_returns=reducers), ReduceActors("reduce") accumulating them.
Latency: from the batch's start on the driver to each reducer's reduce call (the reducer
records time.time() - start; one machine, one clock); one sample per reducer per batch;
the first fifth of each (scheduler, size) series dropped as warm-up, after --warmup
unmeasured batches per scheduler. Schedulers and sizes run interleaved on one cluster:
rounds of --chunk batches per (scheduler, size) series, the order rotated each round
(a seeded random order per round when sizes are interleaved; --size-order sequential: one
size after the other, schedulers interleaved per size). A floor runs in the same rotation:
the same pipeline shape with tiny data (8 bytes: empty tasks) under vanilla and under
locality (all optimisations); floor_ms is the lower p50.

Scheduler names: vanilla, pack, locality, and ablations of locality's optimisations:
locality-nofuse, locality-noshuffle, locality+ahead (pre-scheduling on), locality-plain
(all off); a
"+fuse" etc. switches one on (e.g. vanilla+fuse). See irfront/optimize.py. A suffix
"@MS" sets a pre-scheduling series' lead (submission MS ms before the batch's start;
default: a quarter of the interval), e.g. locality+ahead@50.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

import benchpath  # noqa: E402,F401  (first: sys.path, Ray on loopback)

import numpy as np  # noqa: E402
import ray  # noqa: E402

import common  # noqa: E402
import stream_workload as wl  # noqa: E402
from irfront import Broadcast, InitActors, lowering_options  # noqa: E402
from irfront.optimize import describe, options_for  # noqa: E402
from irfront.stream import Batch, MicroBatchStream  # noqa: E402

FLOOR_MB = 8 / (1 << 20)  # 8 bytes: one float per partition
FLOORS = {"floor-vanilla": "vanilla", "floor-locality": "locality"}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--cpus-per-node", type=int, default=2)
    ap.add_argument("--object-store-mb", type=int, default=2048, help="per node")
    ap.add_argument("--maps", type=int, default=2)
    ap.add_argument("--reducers", type=int, default=None, help="default: nodes * 2")
    ap.add_argument("--partitions", type=int, default=None, help="default: nodes * 4")
    ap.add_argument("--sizes", default="1,4,8,16", help="MB per partition, comma list")
    ap.add_argument("--iterations", type=int, default=50,
                    help="measured batches per scheduler and size")
    ap.add_argument("--warmup", type=int, default=5,
                    help="unmeasured batches per scheduler and size, before measuring")
    ap.add_argument("--chunk", type=int, default=5,
                    help="batches per scheduler in each round of the rotation")
    ap.add_argument("--interval-ms", type=float, default=100.0)
    ap.add_argument("--max-in-flight", type=int, default=4)
    ap.add_argument("--lead-ms", type=float, default=None,
                    help="pre-scheduling lead: a batch is submitted this long before its "
                         "start (default: a quarter of the interval; '@MS' in a "
                         "scheduler name overrides it for that series)")
    ap.add_argument("--schedulers", default="vanilla,pack,locality")
    ap.add_argument("--size-order", choices=("interleaved", "sequential"),
                    default="interleaved",
                    help="interleaved: every (scheduler, size) series in one rotation; "
                         "sequential: one size after the other (the older method)")
    ap.add_argument("--no-floor", action="store_true", help="skip the floor runs")
    ap.add_argument("--address", default=None, help="an existing Ray cluster")
    ap.add_argument("--json", default=None, metavar="PATH")
    ap.add_argument("--plots", default=None, metavar="DIR")
    ap.add_argument("--timeline", default=None, metavar="PATH")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    a.sizes = [float(s) for s in a.sizes.split(",") if s]
    a.schedulers = [s for s in a.schedulers.split(",") if s]
    return a


class Config:
    """One measured series: a scheduler (with its optimisation switches) and a data size
    (the floors use tiny data whatever the size)."""

    def __init__(self, name: str, data_mb: float, floor: bool):
        base, self.lead_s = split_lead(FLOORS.get(name, name))
        self.opts, _ = options_for(base)
        self.name, self.data_mb, self.floor = name, data_mb, floor
        self.ahead = self.opts.preschedule
        self.actor_key = self.opts.scheduler  # one reducer set per base scheduler
        self.deps = None


def split_lead(name: str) -> tuple[str, float | None]:
    """``"locality+ahead@25"`` -> ``("locality+ahead", 0.025)``; no suffix: lead None."""
    if "@" not in name:
        return name, None
    base, ms = name.split("@", 1)
    return base, float(ms) / 1e3


def lead_s(args) -> float:
    """The pre-scheduling lead: --lead-ms, else a quarter of the interval. Half the
    interval (MicroBatchStream's default) put the next batch's submission inside the
    current batch's run whenever its latency exceeded interval/2, and lengthened its tail
    (docs/BENCHMARKS.md, "Pre-scheduling")."""
    return (args.lead_ms if args.lead_ms is not None else args.interval_ms / 4) / 1e3


def with_leads(plan, stream):
    """Yields the plan's batches, setting the stream's pre-scheduling lead per batch
    (``MicroBatchStream.run`` reads ``lead_s`` when it takes each batch)."""
    default = stream.lead_s
    for b, lead in plan:
        stream.lead_s = default if lead is None else lead
        yield b
    stream.lead_s = default


def percentiles(xs_ms):
    a = np.asarray(xs_ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max()),
            "samples": int(a.size)}


def run_sizes(args, sizes, names, reducers, stream, bar):
    """Runs every (config, size) of ``sizes``, interleaved: rounds of --chunk batches per
    series, the order rotated each round. Returns {(name, size): [latency ms...]}.

    Interleaving the sizes too (not only the schedulers) matters on a shared machine:
    run one size after the other, a load trend over the minutes of a run reads as a size
    effect (docs/BENCHMARKS.md, "What bounds locality's latency")."""
    configs = []
    for size in sizes:
        series = [Config(n, size, False) for n in names]
        if not args.no_floor:
            series += [Config(n, FLOOR_MB, True) for n in FLOORS]
        for c in series:
            c.size = size  # the series' label (a floor's data is FLOOR_MB whatever the size)
        configs += series
    for c in configs:
        with lowering_options(**vars_of(c.opts)):
            c.deps = Broadcast(wl.generate_dependencies, args.partitions, c.data_mb)
            ray.get(c.deps.eval()[0])

    def batch(c, tag):
        def submit(start):
            with lowering_options(**vars_of(c.opts)):
                node = wl.build_batch(c.deps, reducers[c.actor_key], args.maps,
                                      args.reducers, start, tag)
                return node.eval()
        return Batch(submit=submit, ahead=c.ahead, label=(c.name, tag)), c.lead_s

    plan = []
    for w in range(args.warmup):  # unmeasured: starts workers, places actors
        plan += [batch(c, None) for c in configs]
    rounds = math.ceil(args.iterations / args.chunk)
    k = {(c.name, c.size): 0 for c in configs}
    for r in range(rounds):
        if len(sizes) == 1:  # as before: the order rotated each round
            order = configs[r % len(configs):] + configs[:r % len(configs)]
        else:  # a fixed pseudo-random order per round: no series always first or last
            order = [configs[j] for j in np.random.default_rng(r).permutation(len(configs))]
        for c in order:
            key = (c.name, c.size)
            for _ in range(min(args.chunk, args.iterations - k[key])):
                plan.append(batch(c, (c.name, c.size, k[key])))
                k[key] += 1
    stream.run(with_leads(plan, stream), on_submit=lambda rec: bar.update(1))
    samples: dict[tuple, list[tuple[int, float]]] = {(c.name, c.size): [] for c in configs}
    for actors in reducers.values():
        for recs in ray.get([h.take_records.remote() for h in actors.eval()]):
            for (name, sz, i), lat in recs:
                if (name, sz) in samples:
                    samples[(name, sz)].append((i, lat * 1e3))
    out = {}
    drop = args.iterations // 5  # first fifth of the batches: warm-up
    for key, xs in samples.items():
        out[key] = [ms for i, ms in xs if i >= drop]
    for c in configs:
        c.deps.free()
    return out


def vars_of(opts):
    return {f: getattr(opts, f) for f in ("scheduler", "fuse", "shuffle_by_node",
                                          "preschedule")}


def main(argv=None):
    args = parse_args(argv)
    args.reducers = args.reducers or args.nodes * 2
    args.partitions = args.partitions or args.nodes * 4
    cluster = None
    if args.address:
        from irfront.cluster import connect
        connect(args.address)
    else:
        from irfront.cluster import LocalCluster
        print(f"starting a local cluster: {args.nodes} nodes x {args.cpus_per_node} CPUs "
              f"on 127.0.0.1 ...", flush=True)
        cluster = LocalCluster(num_nodes=args.nodes, cpus_per_node=args.cpus_per_node,
                               object_store_mb=args.object_store_mb)
    try:
        ray.cloudpickle.register_pickle_by_value(wl)
        return run(args)
    finally:
        import irfront
        irfront.shutdown()
        if cluster is not None:
            cluster.shutdown()


def run(args):
    from tqdm import tqdm
    names = args.schedulers
    for n in names:
        options_for(split_lead(n)[0])  # fail early on a bad name
    bases = sorted({options_for(split_lead(FLOORS.get(n, n))[0])[0].scheduler
                    for n in names + ([] if args.no_floor else list(FLOORS))})
    reducers = {b: InitActors(wl.Reducer, args.reducers,
                              [(i,) for i in range(args.reducers)]) for b in bases}
    n_cfg = len(names) + (0 if args.no_floor else len(FLOORS))
    total = len(args.sizes) * n_cfg * (args.warmup + args.iterations)
    stream = MicroBatchStream(interval_s=args.interval_ms / 1e3,
                              max_in_flight=args.max_in_flight,
                              lead_s=lead_s(args))
    results: dict[tuple[str, float], list[float]] = {}
    t0 = time.time()
    with tqdm(total=total, unit="batch", disable=args.no_progress,
              desc="micro-batches") as bar:
        groups = ([args.sizes] if args.size_order == "interleaved"
                  else [[size] for size in args.sizes])
        for sizes in groups:
            results.update(run_sizes(args, sizes, names, reducers, stream, bar))
    wall = time.time() - t0
    stream.close()
    if args.timeline:
        os.makedirs(os.path.dirname(os.path.abspath(args.timeline)), exist_ok=True)
        ray.timeline(filename=args.timeline)

    floor_rows = {n: percentiles([x for (m, _), xs in results.items() if m == n for x in xs])
                  for n in FLOORS if not args.no_floor}
    floor_ms = min((r["p50_ms"] for r in floor_rows.values()), default=None)
    rows = []
    for name in names:
        for size in args.sizes:
            xs = results[(name, size)]
            if not xs:
                continue
            base, lead = split_lead(name)
            sw = describe(options_for(base)[0]) + (f" lead {lead * 1e3:g} ms" if lead else "")
            row = {"scheduler": name, "switches": sw,
                   "data_mb": size, **percentiles(xs)}
            rows.append(row)
    by = {(r["scheduler"], r["data_mb"]): r for r in rows}
    for r in rows:
        v = by.get(("vanilla", r["data_mb"]))
        r["p50_x_floor"] = r["p50_ms"] / floor_ms if floor_ms else None
        r["p50_vs_vanilla"] = r["p50_ms"] / v["p50_ms"] if v else None
        r["p99_vs_vanilla"] = r["p99_ms"] / v["p99_ms"] if v else None
    cols = ["scheduler", "switches", "data_mb", "p50_ms", "p90_ms", "p99_ms", "max_ms",
            "samples", "p50_x_floor", "p50_vs_vanilla", "p99_vs_vanilla"]
    fmt = {c: ".1f" for c in ("p50_ms", "p90_ms", "p99_ms", "max_ms")}
    fmt.update({c: ".2f" for c in ("p50_x_floor", "p50_vs_vanilla", "p99_vs_vanilla")})
    fmt["data_mb"] = "g"
    shape = {"nodes": args.nodes, "cpus_per_node": args.cpus_per_node,
             "partitions": args.partitions, "maps": args.maps, "reducers": args.reducers,
             "interval_ms": args.interval_ms, "max_in_flight": args.max_in_flight,
             "lead_ms": lead_s(args) * 1e3,
             "iterations": args.iterations, "warmup": args.warmup, "chunk": args.chunk,
             "size_order": args.size_order,
             "object_store_mb": args.object_store_mb,
             "address": args.address or "embedded LocalCluster"}
    print()
    common.print_table(rows, cols, fmt, title=(
        f"stream latency, batch start -> reducer ({args.nodes} nodes x "
        f"{args.cpus_per_node} CPUs, {args.partitions} partitions, {args.maps} maps, "
        f"{args.reducers} reducers, one batch / {args.interval_ms:g} ms; {wall:.0f} s)"))
    for n, r in floor_rows.items():
        print(f"{n}: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms "
              f"({r['samples']} samples, 8-byte data)")
    print(f"floor_ms (lower floor p50): {floor_ms:.1f}" if floor_ms else "no floor run")
    if args.json:
        payload = {"runs": [{k: r[k] for k in ("scheduler", "data_mb", "p50_ms", "p90_ms",
                                               "p99_ms", "max_ms", "samples")} | {
            "switches": r["switches"]} for r in rows],
            "floor_ms": floor_ms, "floors": floor_rows, "cluster": shape,
            "machine": common.machine_info() | {"node": platform.node(),
                                                "loadavg_end": os.getloadavg()},
            "wall_s": wall,
            "latencies_ms": {f"{n}@{s:g}": xs for (n, s), xs in results.items()}}
        write_payload(args.json, payload)
        print(f"wrote {args.json}")
    if args.plots:
        paths = plot(args.plots, names, args.sizes, results, floor_ms)
        print("plots: " + ", ".join(paths))
    return rows


def write_payload(path, payload):
    import json
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")


def _log_axis(axis):
    """A log axis with clean labels: majors at 1, 2, 5 x 10^k, as plain numbers; minor
    ticks unlabelled (matplotlib's default labels minors too when a panel spans less
    than a decade, and they overlap)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=30))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10)), numticks=30))
    axis.set_minor_formatter(NullFormatter())


def plot(directory, names, sizes, results, floor_ms):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(directory, exist_ok=True)
    paths = []
    fig, axes = plt.subplots(1, len(sizes), figsize=(3.6 * len(sizes), 3.6), sharey=True,
                             squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for name in names:
            xs = np.sort(results.get((name, size), []))
            if xs.size:
                ax.plot(xs, np.arange(1, xs.size + 1) / xs.size, label=name)
        if floor_ms:
            ax.axvline(floor_ms, color="grey", ls=":", lw=1, label="floor p50")
        ax.set_xscale("log")
        _log_axis(ax.xaxis)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        ax.set_title(f"{size:g} MB per partition", fontsize=10)
        ax.set_xlabel("latency (ms, log)")
        ax.grid(alpha=0.3, which="major")
    axes[0][0].set_ylabel("CDF")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 8), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.88))
    p = os.path.join(directory, "stream_cdf.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for name in names:
        p50 = [np.percentile(results[(name, s)], 50) for s in sizes]
        p99 = [np.percentile(results[(name, s)], 99) for s in sizes]
        line, = ax.plot(sizes, p50, marker="o", label=f"{name} p50")
        ax.plot(sizes, p99, marker="^", ls="--", color=line.get_color(), label=f"{name} p99")
    if floor_ms:
        ax.axhline(floor_ms, color="grey", ls=":", lw=1, label="floor p50")
    ax.set_yscale("log")
    _log_axis(ax.yaxis)
    ax.set_xticks(sizes)
    ax.set_xlabel("data per partition (MB)")
    ax.set_ylabel("latency (ms, log)")
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    p = os.path.join(directory, "stream_latency_vs_size.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


if __name__ == "__main__":
    main()
