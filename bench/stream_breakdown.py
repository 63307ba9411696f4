"""Where a locality micro-batch's latency goes, per data size (bench/stream.py's workload).

    python bench/stream_breakdown.py --sizes 1,4,8,16 --schedulers locality,locality+ahead \
        --iterations 30 --json bench/results/stream_breakdown.json

The workload is bench/stream_workload.py's ``build_batch`` in the IR, with the 2018
calling conventions: ``Broadcast(generate_dependencies, nodes * 4, size)``, --maps
``Map(map_step, x, [(start,)] * n)``, ``Map(shuffle, x, [(reducers,)] * n,
num_returns=reducers)`` and ``ReduceActors("reduce", reducers, shuffled, [(start, tag)] *
reducers)`` (reducer i: ``reduce(start, tag, *partials_i)``, recording its latency), on
nodes * 2 plain reducer actors, driven by ``irfront.MicroBatchStream`` (one batch every
--interval-ms, at most --max-in-flight unfinished). Scheduler names are
``irfront.options_for`` names (``locality``, ``locality+ahead``, ``locality-nofuse``,
...); a suffix ``@MS`` sets a pre-scheduling series' lead, as in bench/stream.py.

Per size and scheduler (interleaved as in bench/stream.py: rounds of --chunk batches):
- latency (batch start -> reducer), as bench/stream.py;
- per batch, from Ray's task events (``ray.timeline()``) of the fused shuffle tasks
  (ray_patch names them once per group, ``map_step+map_step+shuffle[g<gid>]``: task
  names are switched on here):
  ``submit``: driver time in ``submit`` (MicroBatchStream's submit_s);
  ``to_run``: batch start -> a fused task starts running (median / last of the tasks;
  with ``batch_tasks``, on under locality, one task runs a node's share of partitions per
  CPU slot, so there are fewer tasks than partitions),
  ``run``: a fused task's running time (median / max), ``run_sum``: the tasks summed,
  ``tail``: the last fused task's end -> the last reducer's arrival;
- ``in_flight``: batches unfinished (by their last reducer arrival) at each batch's start;
  ``overlapping_submit``: ms of other batches' driver submission (``submit``) that fell
  inside this batch's start -> last arrival (pre-scheduling moves the next batch's
  submission into the current batch's run when the lead exceeds interval - latency);
- ``probe``: the fused task's work alone, on an idle cluster, pinned to each node:
  ``get`` (ray.get of the broadcast object: zero-copy from the node's store, or a
  transfer) and ``compute`` (map_step x maps + the shuffle's partial sums), ms;
- ``copies``: nodes holding a copy of the broadcast object after the run (evicted copies
  would be re-transferred each batch);
- ``cpu``: machine CPU % (psutil, 2 cores = 100 %) sampled during the run, and the CPU
  time this benchmark's own processes (driver, and the cluster's process tree: GCS,
  raylets, Ray workers) spent per batch, by kind: the pipeline's own demand on the 2
  cores, whatever else runs on the machine.
A size "floor" is the floor's 8-byte data (bench/stream.py).
"""
from __future__ import annotations

import argparse
import math
import os
import threading
import time

import benchpath  # noqa: E402,F401  (first: sys.path, Ray on loopback)

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import ray  # noqa: E402

import ray_patch  # noqa: E402
import stream_workload as wl  # noqa: E402
from irfront import (Batch, Broadcast, InitActors, MicroBatchStream,  # noqa: E402
                     lowering_options, options_for)

FLOOR_MB = 8 / (1 << 20)  # as bench/stream.py: 8 bytes, one float per partition


def split_lead(name: str) -> tuple[str, float | None]:
    """``"locality+ahead@25"`` -> ``("locality+ahead", 0.025)``; no suffix: lead None."""
    if "@" not in name:
        return name, None
    base, ms = name.split("@", 1)
    return base, float(ms) / 1e3


def lead_s(args) -> float:
    """The pre-scheduling lead: --lead-ms, else a quarter of the interval."""
    return (args.lead_ms if args.lead_ms is not None else args.interval_ms / 4) / 1e3


def with_leads(plan, stream):
    """Yields the plan's batches, setting the stream's pre-scheduling lead per batch
    (``MicroBatchStream.run`` reads ``lead_s`` when it takes each batch)."""
    default = stream.lead_s
    for b, lead in plan:
        stream.lead_s = default if lead is None else lead
        yield b
    stream.lead_s = default


def write_payload(path, payload):
    import json
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=lambda v: v.item() if hasattr(v, "item")
                  else str(v))
        f.write("\n")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--cpus-per-node", type=int, default=2)
    ap.add_argument("--object-store-mb", type=int, default=2048)
    ap.add_argument("--maps", type=int, default=2)
    ap.add_argument("--sizes", default="1,4,8,16")
    ap.add_argument("--schedulers", default="locality,locality+ahead")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=5)
    ap.add_argument("--interval-ms", type=float, default=100.0)
    ap.add_argument("--max-in-flight", type=int, default=4)
    ap.add_argument("--lead-ms", type=float, default=None, help="as bench/stream.py")
    ap.add_argument("--probe-reps", type=int, default=10)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    a.sizes = [FLOOR_MB if s == "floor" else float(s) for s in a.sizes.split(",") if s]
    a.schedulers = [s for s in a.schedulers.split(",") if s]
    return a


@ray.remote(num_cpus=1)
def probe(holder, maps, reducers, reps):
    """The fused task's work, timed: get of the broadcast object, then the chain."""
    ref = holder[0]
    gets, comps = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        x = ray.get(ref)
        t1 = time.perf_counter()
        for _ in range(maps):
            x = wl.map_step._function(0.0, x)
        wl.shuffle._function(reducers, x)
        t2 = time.perf_counter()
        gets.append((t1 - t0) * 1e3)
        comps.append((t2 - t1) * 1e3)
        del x
    return gets, comps


class CpuSampler(threading.Thread):
    def __init__(self, period=0.2):
        super().__init__(daemon=True)
        self.period, self.samples, self._halt = period, [], threading.Event()

    def run(self):
        psutil.cpu_percent(None)
        while not self._halt.wait(self.period):
            self.samples.append(psutil.cpu_percent(None))

    def stop(self):
        self._halt.set()
        self.join()
        return self.samples


def _kind(proc):
    try:
        name = " ".join(proc.cmdline()[:3]) or proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if proc.pid == os.getpid():
        return "driver"
    if "raylet" in name:
        return "raylet"
    if "gcs_server" in name:
        return "gcs"
    if "default_worker" in name or name.startswith("ray::"):
        return "workers"
    return "other_ray"


def tree_cpu():
    """{pid: (kind, cpu seconds)} of this process and all its descendants."""
    me = psutil.Process(os.getpid())
    out = {}
    for p in [me] + me.children(recursive=True):
        try:
            t = p.cpu_times()
            out[p.pid] = (_kind(p), t.user + t.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def cpu_per_batch(before, after, batches):
    """CPU ms per batch by process kind, between two ``tree_cpu`` snapshots."""
    by: dict[str, float] = {}
    for pid, (kind, t1) in after.items():
        if kind is None:
            continue
        t0 = before.get(pid, (kind, 0.0))[1]
        by[kind] = by.get(kind, 0.0) + (t1 - t0)
    res = {k: v * 1e3 / batches for k, v in by.items()}
    res["total"] = sum(res.values())
    return res


def q(xs, p):
    return float(np.percentile(xs, p)) if len(xs) else float("nan")


def task_times(gids):
    """{shuffle gid: [(start, end, deserialize_s) s per fused task]}, from ray.timeline()
    (Ray's task events; the state API needs the dashboard, not started here). ray_patch
    names a group's tasks once, ``f"{fn}[g{gid}]"`` (the fused chain: ``map_step+...+
    shuffle[g7]``): an event's task is told apart by its ``args.task_id``."""
    import re
    want = set(gids)
    per: dict[str, list] = {}  # task id -> [start, end, deserialize_s, gid]
    pat = re.compile(r"\+shuffle\[g(\d+)\]")
    events = ray.timeline()
    for ev in events:
        m = pat.search(str(ev.get("cat", "")) + " " + str(ev.get("name", "")))
        if not m or int(m.group(1)) not in want or "dur" not in ev:
            continue
        tid = (ev.get("args") or {}).get("task_id") or f"{ev.get('tid')}@{ev['ts']}"
        ts, dur = float(ev["ts"]) / 1e6, float(ev["dur"]) / 1e6
        cur = per.setdefault(tid, [ts, ts + dur, 0.0, int(m.group(1))])
        cur[0], cur[1] = min(cur[0], ts), max(cur[1], ts + dur)
    for ev in events:  # argument deserialisation, reported as its own event per task
        tid = (ev.get("args") or {}).get("task_id")
        if tid in per and "deserialize" in str(ev.get("cat", "")) and "dur" in ev:
            per[tid][2] = max(per[tid][2], float(ev["dur"]) / 1e6)
    out: dict[int, list] = {g: [] for g in gids}
    for start, end_, deser, g in per.values():
        out[g].append((start, end_, deser))
    return out


def main(argv=None):
    args = parse_args(argv)
    from irfront.cluster import LocalCluster
    reducers_n, parts = args.nodes * 2, args.nodes * 4
    cluster = LocalCluster(num_nodes=args.nodes, cpus_per_node=args.cpus_per_node,
                           object_store_mb=args.object_store_mb)
    try:
        ray.cloudpickle.register_pickle_by_value(wl)
        ray_patch.configure(name_tasks=True)  # task_times finds the shuffle by its name
        return run(args, reducers_n, parts)
    finally:
        import irfront
        irfront.shutdown()
        cluster.shutdown()


def run(args, reducers_n, parts):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    node_ids = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    bases = sorted({options_for(split_lead(n)[0]).scheduler for n in args.schedulers})
    reducers = {b: InitActors(wl.Reducer, reducers_n, [(i,) for i in range(reducers_n)])
                for b in bases}
    stream = MicroBatchStream(interval_s=args.interval_ms / 1e3,
                              max_in_flight=args.max_in_flight, lead_s=lead_s(args))
    report = {"args": {k: v for k, v in vars(args).items()}, "sizes": {}}
    for size in args.sizes:
        # --- probe: the fused task's work alone, per node, on an idle cluster
        ref = wl.generate_dependencies.options(scheduling_strategy=(
            NodeAffinitySchedulingStrategy(node_ids[0], soft=False))).remote(size)
        ray.get(ref)
        probes = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            nid, soft=False)).remote([ref], args.maps, reducers_n, args.probe_reps)
            for nid in node_ids])
        first_get = [p[0][0] for p in probes]
        gets = [g for p in probes for g in p[0][1:]]
        comps = [c for p in probes for c in p[1]]
        del ref
        entry = {"probe": {"first_get_ms_per_node": first_get,
                           "get_ms_p50": q(gets, 50), "compute_ms_p50": q(comps, 50),
                           "compute_ms_p90": q(comps, 90),
                           "cpu_ms_per_batch": q(comps, 50) * parts}}
        # --- the pipeline, interleaved, as bench/stream.py
        configs = []
        for name in args.schedulers:
            base, lead = split_lead(name)
            opts = options_for(base)
            with lowering_options(opts):
                deps = Broadcast(wl.generate_dependencies, parts, size)
                ray.get(deps.eval()[0])
            configs.append({"name": name, "opts": opts, "deps": deps, "gids": {}, "lead": lead,
                            "recs": []})

        def batch(c, tag):
            def submit(start):
                with lowering_options(c["opts"]):
                    node = wl.build_batch(c["deps"], reducers[c["opts"].scheduler],
                                          args.maps, reducers_n, start, tag)
                    refs = node.eval()
                if tag is not None:
                    c["gids"][tag[2]] = node.objects.group_id
                return refs
            return (Batch(submit=submit, ahead=c["opts"].preschedule, label=(c["name"], tag)),
                    c["lead"])

        plan = []
        for _ in range(args.warmup):
            plan += [batch(c, None) for c in configs]
        k = {c["name"]: 0 for c in configs}
        for r in range(math.ceil(args.iterations / args.chunk)):
            order = configs[r % len(configs):] + configs[:r % len(configs)]
            for c in order:
                for _ in range(min(args.chunk, args.iterations - k[c["name"]])):
                    plan.append(batch(c, (c["name"], size, k[c["name"]])))
                    k[c["name"]] += 1
        cpu = CpuSampler()
        cpu.start()
        la0 = os.getloadavg()[0]
        c0, t0 = tree_cpu(), time.time()
        records = stream.run(with_leads(plan, stream))
        c1, wall = tree_cpu(), time.time() - t0
        cpu_samples = cpu.stop()
        entry["own_cpu_ms_per_batch"] = cpu_per_batch(c0, c1, len(plan))
        entry["own_cpu_share_of_2_cores"] = (entry["own_cpu_ms_per_batch"]["total"]
                                             * len(plan) / 1e3 / wall / 2)
        entry["batches_per_s"] = len(plan) / wall
        entry["cpu_percent_p50"] = q(cpu_samples, 50)
        entry["cpu_percent_mean"] = float(np.mean(cpu_samples)) if cpu_samples else None
        entry["loadavg_start_end"] = [la0, os.getloadavg()[0]]
        lat: dict[tuple, list] = {}
        for actors in reducers.values():
            for recs in ray.get([h.take_records.remote() for h in actors.eval()]):
                for (name, sz, i), l in recs:
                    if sz == size:
                        lat.setdefault((name, i), []).append(l)
        all_gids = [g for c in configs for g in c["gids"].values()]
        times = task_times(all_gids)
        # batch start and end (last reducer arrival), for the in-flight count
        starts, rec_sub = {}, {}
        for rec in records:
            name, tag = rec.label
            if tag is not None:
                starts[(name, tag[2])] = (rec.start, rec.submit_s)
                rec_sub[(name, tag[2])] = rec.submitted
        ends = sorted((s + max(lat.get(key, [0.0])), s) for key, (s, _) in starts.items())
        # driver submissions (any series) that ran while a batch was unfinished
        subs = [(r.submitted, r.submitted + r.submit_s) for r in records]
        entry["schedulers"] = {}
        drop = args.iterations // 5
        for c in configs:
            name = c["name"]
            rows = []
            for i in range(drop, args.iterations):
                if (name, i) not in starts or (name, i) not in lat:
                    continue
                s, sub = starts[(name, i)]
                ts = times.get(c["gids"].get(i), [])
                l = lat[(name, i)]
                row = {"lat_p50_ms": q(l, 50) * 1e3, "lat_max_ms": max(l) * 1e3,
                       "submit_ms": sub * 1e3,
                       "in_flight": sum(1 for e, s0 in ends if s0 < s < e),
                       "overlapping_submit_ms": sum(
                           max(0.0, min(b, s + max(lat[(name, i)])) - max(a, s))
                           for a, b in subs if not (a == rec_sub.get((name, i)))) * 1e3}
                if ts:
                    st = np.array([t[0] for t in ts]) - s
                    en = np.array([t[1] for t in ts]) - s
                    run_ = en - st
                    row.update({"n_tasks": len(ts),
                                "deser_p50_ms": q([t[2] for t in ts], 50) * 1e3,
                                "to_run_p50_ms": q(st, 50) * 1e3,
                                "to_run_max_ms": st.max() * 1e3,
                                "run_p50_ms": q(run_, 50) * 1e3,
                                "run_max_ms": run_.max() * 1e3,
                                "run_sum_ms": run_.sum() * 1e3,
                                "last_end_ms": en.max() * 1e3,
                                "tail_ms": (max(l) - en.max()) * 1e3})
                rows.append(row)
            summ = {}
            for key in rows[0] if rows else []:
                vals = [r[key] for r in rows if key in r]
                summ[key] = {"p50": q(vals, 50), "p90": q(vals, 90)}
            all_l = [x * 1e3 for i in range(drop, args.iterations)
                     for x in lat.get((name, i), [])]
            entry["schedulers"][name] = {"latency_p50_ms": q(all_l, 50),
                                         "latency_p99_ms": q(all_l, 99),
                                         "per_batch": summ, "batches": rows}
            ref0 = c["deps"].eval()[0]
            info = ray.experimental.get_object_locations([ref0]).get(ref0, {})
            entry["schedulers"][name]["copies"] = len(info.get("node_ids") or [])
            c["deps"].free()
        report["sizes"][f"{size:g}"] = entry
        print_size(size, entry)
    stream.close()
    if args.json:
        write_payload(args.json, report)
        print(f"wrote {args.json}")
    return report


def print_size(size, e):
    p = e["probe"]
    print(f"\n== {size:g} MB per partition: probe get {p['get_ms_p50']:.2f} ms "
          f"(first, per node: {', '.join(f'{x:.1f}' for x in p['first_get_ms_per_node'])}), "
          f"compute {p['compute_ms_p50']:.2f} ms p50 ({p['compute_ms_p90']:.2f} p90) "
          f"-> {p['cpu_ms_per_batch']:.0f} CPU-ms per batch; machine CPU "
          f"{e['cpu_percent_p50']:.0f}% p50 (mean {e['cpu_percent_mean']:.0f}%), "
          f"load {e['loadavg_start_end'][0]:.1f}->{e['loadavg_start_end'][1]:.1f}")
    own = e["own_cpu_ms_per_batch"]
    print("  own CPU ms per batch: " + ", ".join(f"{k} {v:.1f}" for k, v in own.items())
          + f"; = {100 * e['own_cpu_share_of_2_cores']:.0f}% of the 2 cores at "
          f"{e['batches_per_s']:.1f} batches/s")
    keys = ["lat_p50_ms", "lat_max_ms", "submit_ms", "deser_p50_ms", "to_run_p50_ms",
            "to_run_max_ms", "run_p50_ms", "run_max_ms", "run_sum_ms", "last_end_ms",
            "tail_ms", "in_flight", "overlapping_submit_ms"]
    for name, s in e["schedulers"].items():
        pb = s["per_batch"]
        cells = "  ".join(f"{k.replace('_ms', '')}={pb[k]['p50']:.1f}/{pb[k]['p90']:.1f}"
                          for k in keys if k in pb)
        print(f"  {name}: latency p50 {s['latency_p50_ms']:.1f} p99 "
              f"{s['latency_p99_ms']:.1f} ms, copies of broadcast {s['copies']}; per batch "
              f"(p50/p90 over batches, ms from batch start): {cells}")


if __name__ == "__main__":
    main()
