"""Driver memory probe: RSS slope per micro-batch of one driver variant.

    python bench/mem_probe.py --serve /tmp/addr          # holds a 4x2 LocalCluster
    python bench/mem_probe.py --address $(cat /tmp/addr) --variant plain --batches 400

Each variant runs in its own driver process (so RSS figures do not mix) against the
same cluster: the draft's workload (8 partitions of 256 KiB, 2 map_step stages, a
shuffle into 4 partial sums, 4 SumReducer actors), at most 4 batches in flight.

- ``plain``: plain Ray, no options;  ``plain_names``: a unique task name on every task
  and actor call (what ray_patch did);  ``plain_pin``: soft node affinity on every task;
- ``stream``: irfront.recovery.ReliableStream (ray_patch) with its defaults (unnamed
  tasks); ``stream_names``: the same with ``RecoverySettings(name_tasks=True)`` (every
  group task and reducer call named by its group, ``f"{fn}[g{gid}]"``);
  ``stream_noname``: ``stream_names`` with ``ray_patch.configure(name_tasks=False)``.

Ray settings go through the environment (e.g. RAY_task_events_report_interval_ms=0).
Prints one JSON line: RSS after the warm-up, at the end, and the least-squares slope in
KiB per batch over the samples after the warm-up.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

import benchpath  # noqa: E402,F401  (first: sys.path, Ray on loopback)

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import ray  # noqa: E402


def serve(path: str) -> None:
    from irfront.cluster import LocalCluster
    c = LocalCluster(num_nodes=4, cpus_per_node=2, object_store_mb=256, connect=False,
                     pythonpath=[benchpath.HERE])
    try:
        with open(path + ".tmp", "w") as f:
            f.write(c.address)
        os.replace(path + ".tmp", path)
        while not os.path.exists(path + ".stop"):
            time.sleep(0.5)
    finally:
        c.shutdown()


def slope(xs, ys) -> float:
    if len(xs) < 2:
        return float("nan")
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve")
    ap.add_argument("--address")
    ap.add_argument("--variant", default="plain")
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--every", type=int, default=25)
    a = ap.parse_args()
    if a.serve:
        serve(a.serve)
        return 0
    from irfront.cluster import connect
    connect(a.address)
    import stream_workload as wl
    from irfront.recovery import RecoverySettings, ReliableStream, SumReducer
    import ray_patch
    ray.cloudpickle.register_pickle_by_value(wl)
    proc = psutil.Process()
    deps = ray.get(wl.generate_dependencies.remote(0.25))
    dep = ray.put(deps)
    xs, ys = [], []

    def on_batch(seq, *_):
        if seq + 1 >= a.warmup and (seq + 1 - a.warmup) % a.every == 0:
            xs.append(seq + 1)
            ys.append(proc.memory_info().rss / 1024)

    t0 = time.perf_counter()
    if a.variant.startswith("stream"):
        if a.variant == "stream_noname":
            ray_patch.configure(name_tasks=False)
        named = a.variant in ("stream_names", "stream_noname")
        s = ReliableStream(SumReducer, 4, [(wl.map_step, (0.0,))] * 2, wl.shuffle,
                           RecoverySettings(name_tasks=True) if named else RecoverySettings())
        try:
            s.run(([dep] * 8 for _ in range(a.batches)), on_batch=on_batch)
        finally:
            s.close()
    else:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        strats = [NodeAffinitySchedulingStrategy(n["NodeID"], soft=True)
                  for n in ray.nodes() if n["Alive"]]
        reducers = [SumReducer.remote(i) for i in range(4)]
        ray.get([r.ping.remote() for r in reducers])
        names = a.variant == "plain_names"
        pin = a.variant == "plain_pin"
        k = [0]

        def opts(f, **o):
            k[0] += 1
            if names:
                o["name"] = f"{f._function.__name__ if hasattr(f, '_function') else 'apply'}" \
                            f"[g{k[0]}:0]"
            if pin:
                o["scheduling_strategy"] = strats[k[0] % len(strats)]
            return f.options(**o) if o else f

        window = collections.deque()
        for seq in range(a.batches):
            while len(window) >= 4:
                ray.get(window.popleft())
            xs_ = [dep] * 8
            for _ in range(2):
                xs_ = [opts(wl.map_step).remote(x, 0.0) for x in xs_]
            sh = [opts(wl.shuffle, num_returns=4).remote(x, 4) for x in xs_]
            calls = []
            for i, r in enumerate(reducers):
                m = r.apply
                if names:
                    m = m.options(name=f"apply[g{seq}:{i}]")
                calls.append(m.remote(seq, *[p[i] for p in sh]))
            window.append(calls)
            on_batch(seq)
        while window:
            ray.get(window.popleft())
        for r in reducers:
            ray.kill(r)
    out = {"variant": a.variant, "batches": a.batches, "s": round(time.perf_counter() - t0, 1),
           "rss_warm_mib": round(ys[0] / 1024, 1), "rss_end_mib": round(ys[-1] / 1024, 1),
           "slope_kib_per_batch": round(slope(xs, ys), 2),
           "env": {k: v for k, v in os.environ.items() if k.startswith("RAY_")
                   and k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}}
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
