"""Driver memory probe: RSS slope per micro-batch of one driver variant.

    python bench/mem_probe.py --serve /tmp/addr          # holds a 4x2 LocalCluster
    python bench/mem_probe.py --address $(cat /tmp/addr) --variant plain --batches 400
    touch /tmp/addr.stop                                 # the server shuts its cluster down

Each variant runs in its own driver process (so RSS figures do not mix) against the
same cluster: the draft's workload (8 partitions of 256 KiB, 2 ``map_step(start, batch)``
stages, ``shuffle(4, batch)`` into 4 partial sums, 4 exactly-once ``SumReducerBase``
actors under ``irfront.REDUCER_OPTIONS``), at most 4 batches in flight.

- ``plain``: a plain Ray loop, no options (reducer calls ``apply_batch(seq, "reduce",
  *partials)``, as the IR driver sends them);  ``plain_names``: a unique task name on
  every task and actor call (what ray_patch once did);  ``plain_pin``: soft node affinity
  on every task;
- ``stream``: the IR driver, ``irfront.MicroBatchStream`` (checkpoint every 10 batches,
  exactly-once reducers) over ``Objects -> Map(map_step) x 2 -> Map(shuffle,
  num_returns=4) -> ReduceActors("reduce")`` under the default lowering options
  (locality), tasks unnamed (``ray_patch.configure(name_tasks=False)``);
  ``stream_names``: the same with ray_patch's default names (one per group,
  ``f"{fn}[g{gid}]"``). ``stream_noname`` is kept as another name of ``stream``.

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

import common  # noqa: E402


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


VARIANTS = ("plain", "plain_names", "plain_pin", "stream", "stream_names", "stream_noname")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve")
    ap.add_argument("--address")
    ap.add_argument("--variant", default="plain", choices=VARIANTS)
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--every", type=int, default=25)
    a = ap.parse_args()
    load0 = os.getloadavg()
    if a.serve:
        serve(a.serve)
        return 0
    from irfront.cluster import connect
    connect(a.address)
    import stream_workload as wl
    import ray_patch
    from irfront import (REDUCER_OPTIONS, Batch, InitActors, Map, MicroBatchStream,
                         Objects, ReduceActors, SumReducerBase)
    SumReducer = ray.remote(**REDUCER_OPTIONS)(SumReducerBase)
    ray.cloudpickle.register_pickle_by_value(wl)
    proc = psutil.Process()
    deps = ray.get(wl.generate_dependencies.remote(0.25))
    dep = ray.put(deps)
    xs, ys = [], []

    def on_batch(seq):
        if seq + 1 >= a.warmup and (seq + 1 - a.warmup) % a.every == 0:
            xs.append(seq + 1)
            ys.append(proc.memory_info().rss / 1024)

    t0 = time.perf_counter()
    if a.variant.startswith("stream"):
        if a.variant != "stream_names":
            ray_patch.configure(name_tasks=False)
        reducers = InitActors(SumReducer, 4, [(i,) for i in range(4)])

        def build(start):
            x = Objects([dep] * 8)
            for _ in range(2):
                x = Map(wl.map_step, x, [(start,)] * 8)
            sh = Map(wl.shuffle, x, [(4,)] * 8, num_returns=4)
            return ReduceActors("reduce", reducers, sh)

        count = iter(range(1 << 62))
        with MicroBatchStream(interval_s=0.0, max_in_flight=4, checkpoint_every=10) as s:
            s.run((Batch(submit=build) for _ in range(a.batches)),
                  on_submit=lambda rec: on_batch(next(count)))
            lost = s.stats.lost_calls
        for h in reducers.eval():
            ray.kill(h)
        if lost:
            print(f"lost {lost} reducer calls", file=sys.stderr)
            return 1
    else:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        strats = [NodeAffinitySchedulingStrategy(n["NodeID"], soft=True)
                  for n in ray.nodes() if n["Alive"]]
        reducers = [SumReducer.remote(i) for i in range(4)]
        ray.get([r.last_applied.remote() for r in reducers])
        names = a.variant == "plain_names"
        pin = a.variant == "plain_pin"
        k = [0]

        def opts(f, **o):
            k[0] += 1
            if names:
                o["name"] = f"{f._function.__name__}[g{k[0]}:0]"
            if pin:
                o["scheduling_strategy"] = strats[k[0] % len(strats)]
            return f.options(**o) if o else f

        window = collections.deque()
        for seq in range(a.batches):
            while len(window) >= 4:
                ray.get(window.popleft())
            xs_ = [dep] * 8
            for _ in range(2):
                xs_ = [opts(wl.map_step).remote(0.0, x) for x in xs_]
            sh = [opts(wl.shuffle, num_returns=4).remote(4, x) for x in xs_]
            calls = []
            for i, r in enumerate(reducers):
                m = r.apply_batch
                if names:
                    m = m.options(name=f"apply_batch[g{seq}:{i}]")
                calls.append(m.remote(seq, "reduce", *[p[i] for p in sh]))
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
                   and k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"},
           "provenance": common.provenance(load0)}
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
