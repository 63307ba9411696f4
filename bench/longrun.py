"""Long run: many micro-batches through the exactly-once IR driver, watching for leaks.

    python bench/longrun.py                       # 1000 batches, embedded 4x2 LocalCluster
    python bench/longrun.py --batches 200 --kill-every 50 --json bench/results/longrun.json

The draft's streaming workload (bench/stream_workload.py's tasks) written in the IR with
the 2018 calling conventions: ``Objects`` (--partitions handles of one --part-kb array),
--maps ``Map(map_step, x, [(start,)] * n)`` stages (``map_step(start, batch)``), a shuffle
``Map(shuffle, x, [(reducers,)] * n, num_returns=reducers)`` into one partial sum per
reducer, and ``ReduceActors("reduce", reducers, shuffled)`` on exactly-once reducers
(``SumReducerBase`` under ``@ray.remote(**irfront.REDUCER_OPTIONS)``: reducer i gets
``reduce(*partials_i)``). ``irfront.MicroBatchStream`` drives it as fast as the pipeline
drains (``interval_s=0``; backpressure holds the source) with --checkpoint-every 10 and
--max-in-flight 4, under the --scheduler lowering options (default ``locality``: fused
map chain, shuffle by node, node-batched tasks; group tasks with 3 Ray retries). Tasks are
unnamed (``ray_patch.configure(name_tasks=False)``); --name-tasks keeps ray_patch's
default (one name per group, ``f"{fn}[g{gid}]"``), which grows the driver a little per
batch.

Every --sample-every batches it samples: the object stores' use (all nodes:
object_store_memory, total minus available), the driver's RSS (psutil), the live groups
(ray_patch.group_count(): ray_patch's records; core_group_count(): the C++ core's), the
driver's in-process memory store, the batches in flight, and the reducer calls kept for
replay (the most for one reducer). It prints one row per sample, then peaks and end
values. It exits 0 only if no reducer call was lost, every reducer applied calls
0..batches-1, the reducers' totals add up to the expected sum, and the group counts came
back to their start values once the stream and its nodes were dropped.

--kill-every N kills one reducer (``ray.kill(no_restart=False)``, round robin) after every
N-th batch is submitted: Ray restarts it, the driver restores its last checkpoint and
replays the calls kept after it.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import benchpath  # noqa: E402,F401  (first: sys.path, Ray on loopback)

import psutil  # noqa: E402
import ray  # noqa: E402

import common  # noqa: E402
import irfront  # noqa: E402
import ray_patch  # noqa: E402
import stream_workload as wl  # noqa: E402
from irfront import (REDUCER_OPTIONS, Batch, InitActors, Map, MicroBatchStream,  # noqa: E402
                     Objects, ReduceActors, SumReducerBase)

SumReducer = ray.remote(**REDUCER_OPTIONS)(SumReducerBase)


def plasma_mib() -> float:
    """MiB in use in the object stores of all alive nodes: the object_store_memory
    resource, total minus available (Ray's GCS view, refreshed about every second)."""
    total = ray.cluster_resources().get("object_store_memory", 0.0)
    free = ray.available_resources().get("object_store_memory", 0.0)
    return (total - free) / (1 << 20)


def driver_store_mib() -> float:
    """MiB in the driver's in-process memory store (small objects it owns, inlined)."""
    try:
        cw = ray._private.worker.global_worker.core_worker
        return cw.get_local_memory_store_bytes_used() / (1 << 20)
    except Exception:  # a private API of Ray 2.60; absent elsewhere
        return float("nan")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--cpus-per-node", type=int, default=2)
    ap.add_argument("--object-store-mb", type=int, default=256, help="per node")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--maps", type=int, default=2)
    ap.add_argument("--reducers", type=int, default=4)
    ap.add_argument("--part-kb", type=float, default=256.0,
                    help="KiB per partition (one array, every partition a handle to it)")
    ap.add_argument("--scheduler", default="locality",
                    help="lowering options by series name (irfront.options_for): vanilla, "
                         "pack, locality, locality-nofuse, locality-plain, ...")
    ap.add_argument("--checkpoint-every", type=int, default=10)
    ap.add_argument("--max-in-flight", type=int, default=4)
    ap.add_argument("--restart-timeout-s", type=float, default=120.0)
    ap.add_argument("--sample-every", type=int, default=50)
    ap.add_argument("--kill-every", type=int, default=0,
                    help="kill a reducer (ray.kill, restart allowed; round robin) after "
                         "every N-th batch: recovery under a long run (0: no faults)")
    ap.add_argument("--name-tasks", action="store_true",
                    help="keep ray_patch's task names (one per group): Ray keeps per-name "
                         "state in the driver for good (default: unnamed)")
    ap.add_argument("--json", default=None, help="write the samples and summary here")
    ap.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


def kept_calls(stream: MicroBatchStream | None) -> int:
    """The most reducer calls kept for replay by one reducer right now."""
    if stream is None:
        return 0
    return max((len(k) for g in stream.reducers.values() for k in g.kept), default=0)


def sample(seq: int, t0: float, stream: MicroBatchStream | None,
           proc: psutil.Process) -> dict:
    return {
        "batch": seq, "elapsed_s": time.perf_counter() - t0,
        "plasma_mib": plasma_mib(), "driver_store_mib": driver_store_mib(),
        "driver_rss_mib": proc.memory_info().rss / (1 << 20),
        "groups": ray_patch.group_count(), "core_groups": ray_patch.core_group_count(),
        "in_flight": stream.window.in_flight if stream else 0,
        "kept": kept_calls(stream),
    }


def build_batch(parts: list, reducers: InitActors, maps: int, num_reducers: int, start):
    """One micro-batch as IR (evaluated by the driver)."""
    x = Objects(parts)
    for _ in range(maps):
        x = Map(wl.map_step, x, [(start,)] * len(parts))
    shuffled = Map(wl.shuffle, x, [(num_reducers,)] * len(parts), num_returns=num_reducers)
    return ReduceActors("reduce", reducers, shuffled)


def main(argv=None) -> int:
    args = parse_args(argv)
    opts = irfront.options_for(args.scheduler)
    cluster = irfront.LocalCluster(num_nodes=args.nodes, cpus_per_node=args.cpus_per_node,
                                   object_store_mb=args.object_store_mb)
    try:
        return run(args, opts)
    finally:
        cluster.shutdown()


def run(args, opts) -> int:
    load0 = os.getloadavg()
    ray.cloudpickle.register_pickle_by_value(wl)
    if not args.name_tasks:
        ray_patch.configure(name_tasks=False)
    proc = psutil.Process()
    deps = ray.get(wl.generate_dependencies.remote(args.part_kb / 1024))
    dep_ref = ray.put(deps)
    expected_per_batch = float(deps.sum()) * args.partitions
    t0 = time.perf_counter()
    rows = [sample(-1, t0, None, proc)]
    start_groups = (rows[0]["groups"], rows[0]["core_groups"])
    bar = None
    if not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(total=args.batches, unit="batch", file=sys.stderr)
    n = args.reducers
    reducers = InitActors(SumReducer, n, [(i,) for i in range(n)])
    stream = MicroBatchStream(interval_s=0.0, max_in_flight=args.max_in_flight,
                              checkpoint_every=args.checkpoint_every,
                              restart_timeout_s=args.restart_timeout_s)
    count = iter(range(1 << 62))
    kills = 0

    def on_submit(rec) -> None:
        nonlocal kills
        seq = next(count)
        if bar is not None:
            bar.update(1)
        if args.kill_every and (seq + 1) % args.kill_every == 0:
            handles = reducers.eval()
            ray.kill(handles[((seq + 1) // args.kill_every) % len(handles)],
                     no_restart=False)
            kills += 1
        if (seq + 1) % args.sample_every == 0:
            rows.append(sample(seq, t0, stream, proc))

    def source():
        for _ in range(args.batches):
            yield Batch(submit=lambda start: build_batch(
                [dep_ref] * args.partitions, reducers, args.maps, n, start))

    with irfront.lowering_options(opts):
        try:
            stream.run(source(), on_submit=on_submit)
            rows.append(sample(args.batches - 1, t0, stream, proc))
            handles = reducers.eval()
            totals = ray.get([h.get_total.remote() for h in handles])
            lasts = ray.get([h.last_applied.remote() for h in handles])
            report = stream.report()
            stats = stream.stats
        finally:
            stream.close()
            if bar is not None:
                bar.close()
    # Drop the reducers (their group and actors) so that the group counts can come back.
    for h in reducers.eval():
        ray.kill(h)
    reducers.free()
    del reducers, handles
    gc.collect()
    end = sample(args.batches, t0, None, proc)
    rows.append(end)
    total = sum(float(v) for v in totals)
    exact = abs(total - expected_per_batch * args.batches) <= 1e-9 * abs(total)
    all_applied = all(last == args.batches - 1 for last in lasts)
    keys = ("plasma_mib", "driver_store_mib", "driver_rss_mib", "groups", "core_groups",
            "in_flight", "kept")
    summary = {
        "batches": stats.batches, "elapsed_s": stats.elapsed_s,
        "batches_per_s": stats.batches / stats.elapsed_s,
        "lost_calls": stats.lost_calls, "all_calls_applied": all_applied,
        "sums_match": exact, "checkpoints": stats.checkpoints,
        "recoveries": len(stats.recoveries), "kills": kills, "replayed": stats.replayed,
        "recovery_s_max": max((r["seconds"] for r in stats.recoveries), default=0.0),
        "held_back_s": report.get("held_back_s"),
        "peak_in_flight": report.get("peak_in_flight"),
        "kept_peak": stats.kept_peak,
        **{f"peak_{k}": max(r[k] for r in rows) for k in keys},
        **{f"end_{k}": end[k] for k in keys},
        "start_groups": start_groups[0], "start_core_groups": start_groups[1],
        "groups_back_to_start": (end["groups"], end["core_groups"]) == start_groups,
        "settings": {"checkpoint_every": args.checkpoint_every,
                     "max_in_flight": args.max_in_flight,
                     "restart_timeout_s": args.restart_timeout_s,
                     "scheduler": args.scheduler, "switches": opts.describe(),
                     "task_retries": opts.task_retries, "name_tasks": args.name_tasks},
        "workload": {"partitions": args.partitions, "maps": args.maps,
                     "reducers": args.reducers, "part_kb": args.part_kb,
                     "nodes": args.nodes, "cpus_per_node": args.cpus_per_node},
        "recoveries_detail": stats.recoveries,
        "machine": common.machine_info(),
    }
    common.print_table(rows, formats={"elapsed_s": ".1f", "plasma_mib": ".1f",
                                      "driver_store_mib": ".2f", "driver_rss_mib": ".1f"},
                       title=f"longrun: samples every {args.sample_every} batches "
                             "(batch -1: before, last row: after the stream and its "
                             "reducers were dropped)")
    print()
    common.print_table([{"metric": k, "value": v} for k, v in summary.items()
                        if not isinstance(v, (dict, list))], title="summary")
    if args.json:  # rows: the samples
        common.write_rows(args.json, rows, load0, "bench/longrun.py", summary=summary)
    ok = (stats.lost_calls == 0 and all_applied and exact
          and summary["groups_back_to_start"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
