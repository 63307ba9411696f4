"""Long run: many micro-batches through the reliable driver, watching for leaks.

    python bench/longrun.py                       # 1000 batches, embedded 4x2 LocalCluster
    python bench/longrun.py --batches 200 --json bench/results/longrun.json

The draft's streaming workload (bench/stream_workload.py: --maps map_step stages over
--partitions partitions, a shuffle into one partial sum per reducer) driven by
irfront.recovery.ReliableStream with its default settings (checkpoint every 10 batches,
at most 4 batches in flight, group tasks with 3 retries, unnamed tasks: --name-tasks
names them as ray_patch's default does, which grows the driver), as fast as the pipeline drains
(backpressure holds the source). Every --sample-every batches it samples: the object
stores' use (all nodes: object_store_memory, total minus available), the driver's RSS
(psutil), the
live groups (ray_patch.group_count(): ray_patch's records; core_group_count(): the C++
core's), the driver's in-process memory store, the batches in flight and kept for replay. It prints one row per sample, then
peaks and end values; the group counts must come back to their start values.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import benchpath  # noqa: E402,F401  (first: sys.path, Ray on loopback)

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import ray  # noqa: E402

import common  # noqa: E402
import ray_patch  # noqa: E402
import stream_workload as wl  # noqa: E402
from irfront.recovery import RecoverySettings, ReliableStream, SumReducer  # noqa: E402

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
                    help="KiB per partition (the broadcast array)")
    ap.add_argument("--sample-every", type=int, default=50)
    ap.add_argument("--kill-every", type=int, default=0,
                    help="kill a reducer (ray.kill, restart allowed; round robin) every N "
                         "batches: recovery under a long run (0: no faults)")
    ap.add_argument("--name-tasks", action="store_true",
                    help="name every group task and reducer call (RecoverySettings("
                         "name_tasks=True)): Ray keeps per-name state in the driver")
    ap.add_argument("--json", default=None, help="write the samples and summary here")
    ap.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


def sample(seq: int, t0: float, stream: ReliableStream | None, proc: psutil.Process) -> dict:
    return {
        "batch": seq, "elapsed_s": time.perf_counter() - t0,
        "plasma_mib": plasma_mib(), "driver_store_mib": driver_store_mib(),
        "driver_rss_mib": proc.memory_info().rss / (1 << 20),
        "groups": ray_patch.group_count(), "core_groups": ray_patch.core_group_count(),
        "in_flight": stream.window.in_flight if stream else 0,
        "kept": len(stream.kept) if stream else 0,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    from irfront.cluster import LocalCluster
    cluster = LocalCluster(num_nodes=args.nodes, cpus_per_node=args.cpus_per_node,
                           object_store_mb=args.object_store_mb)
    try:
        ray.cloudpickle.register_pickle_by_value(wl)
        proc = psutil.Process()
        deps = ray.get(wl.generate_dependencies.remote(args.part_kb / 1024))
        dep_ref = ray.put(deps)
        expected_per_batch = float(deps.sum()) * args.partitions
        settings = RecoverySettings(name_tasks=args.name_tasks)
        stages = [(wl.map_step, (0.0,))] * args.maps
        t0 = time.perf_counter()
        rows = [sample(-1, t0, None, proc)]
        start_groups = (rows[0]["groups"], rows[0]["core_groups"])
        bar = None
        if not args.no_progress:
            from tqdm import tqdm
            bar = tqdm(total=args.batches, unit="batch", file=sys.stderr)

        def on_batch(seq: int, stream: ReliableStream) -> None:
            if bar is not None:
                bar.update(1)
            if args.kill_every and (seq + 1) % args.kill_every == 0:
                victim = stream.handles[((seq + 1) // args.kill_every) % len(stream.handles)]
                ray.kill(victim, no_restart=False)
            if (seq + 1) % args.sample_every == 0:
                rows.append(sample(seq, t0, stream, proc))

        def source():
            for _ in range(args.batches):
                yield [dep_ref] * args.partitions

        stream = ReliableStream(SumReducer, args.reducers, stages, wl.shuffle, settings)
        try:
            report = stream.run(source(), on_batch=on_batch)
            rows.append(sample(args.batches - 1, t0, stream, proc))
            states = stream.states()
        finally:
            stream.close()
            if bar is not None:
                bar.close()
        end = sample(args.batches, t0, None, proc)
        rows.append(end)
        total = sum(float(v) for _, v in states)
        exact = abs(total - expected_per_batch * args.batches) <= 1e-9 * abs(total)
        keys = ("plasma_mib", "driver_store_mib", "driver_rss_mib", "groups", "core_groups",
                "in_flight", "kept")
        summary = {
            "batches": report.batches, "elapsed_s": report.elapsed_s,
            "batches_per_s": report.batches / report.elapsed_s,
            "lost_batches": report.lost_batches, "sums_match": exact,
            "checkpoints": report.checkpoints, "recoveries": len(report.recoveries),
            "kills": args.batches // args.kill_every if args.kill_every else 0,
            "replayed": report.replayed,
            "held_back_s": report.backpressure.get("held_back_s"),
            "peak_in_flight": report.backpressure.get("peak_in_flight"),
            "kept_peak": report.kept_peak,
            **{f"peak_{k}": max(r[k] for r in rows) for k in keys},
            **{f"end_{k}": end[k] for k in keys},
            "start_groups": start_groups[0], "start_core_groups": start_groups[1],
            "groups_back_to_start": (end["groups"], end["core_groups"]) == start_groups,
            "settings": {"checkpoint_every": settings.checkpoint_every,
                         "max_in_flight": settings.max_in_flight,
                         "task_retries": settings.task_retries,
                         "name_tasks": settings.name_tasks},
            "workload": {"partitions": args.partitions, "maps": args.maps,
                         "reducers": args.reducers, "part_kb": args.part_kb,
                         "nodes": args.nodes, "cpus_per_node": args.cpus_per_node},
            "machine": common.machine_info(),
        }
        common.print_table(rows, formats={"elapsed_s": ".1f", "plasma_mib": ".1f", "driver_store_mib": ".2f",
                                          "driver_rss_mib": ".1f"},
                           title=f"longrun: samples every {args.sample_every} batches "
                                 "(batch -1: before, last row: after close)")
        print()
        common.print_table([{"metric": k, "value": v} for k, v in summary.items()
                            if not isinstance(v, dict)], title="summary")
        if args.json:
            import json
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump({"summary": summary, "samples": rows}, f, indent=1,
                          default=lambda v: v.item() if hasattr(v, "item") else str(v))
                f.write("\n")
        ok = report.lost_batches == 0 and exact and summary["groups_back_to_start"]
        return 0 if ok else 1
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
