"""What a change of shape costs the resident path: the batches after it, one by one.

    python bench/resident_rebuild.py --json bench/results/resident_rebuild.json

On an embedded 4 x 2-CPU cluster, the streaming benchmark's pipeline (bench/
stream_workload.py: a broadcast read by every partition, 2 map stages, a shuffle into 8
reducers, ``combine=operator.add``) runs --batches batches per phase, one every 100 ms,
each phase after one change:

1. first stream: the reducers and the resident executors are created, channels and
   feeds opened;
2. same shape, a new ``MicroBatchStream``;
3. other reducers (8 actors created before the phase): a new route, new channels;
4. 12 partitions instead of 16: a new placement;
5. a node joins (``Cluster.add_node``), and a new broadcast of 20 partitions is read
   by five nodes: a new executor on the new node.

Per phase: the first batch's latency (its start to its last reducer), the driver's CPU
for it, the first batch fed to every node (``ray_patch.resident``'s feed counters), and
the p50 of the phase's second half. Latency here is to the *last* reducer of a batch
(``bench/stream.py`` counts every reducer's arrival).
"""
from __future__ import annotations

import argparse
import operator
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchpath  # noqa: E402,F401  (Ray on loopback)
import ray  # noqa: E402

import common  # noqa: E402
import stream_workload as wl  # noqa: E402


def _fed() -> int:
    import ray_patch.resident as resident_
    return resident_.fed_batches()


def phase(name: str, deps, reducers, batches: int, interval_s: float) -> dict:
    """``batches`` batches of the pipeline in a new stream; the phase's row."""
    from irfront import Batch, MicroBatchStream
    cpu, fed, nodes = [], [], []

    def make(k):
        def submit(start):
            c0, f0 = time.process_time(), _fed()
            out = wl.build_batch(deps, reducers, 2, reducers.n, start, (name, k),
                                 combine=operator.add).eval()
            cpu.append(time.process_time() - c0)
            fed.append(_fed() - f0)
            nodes.append(len(out))
            return out
        return Batch(submit)

    MicroBatchStream(interval_s=interval_s, max_in_flight=4).run(
        [make(k) for k in range(batches)])
    worst: dict[int, float] = {}
    for h in reducers.eval():
        for (_, k), lat in ray.get(h.take_records.remote()):
            worst[k] = max(worst.get(k, 0.0), lat)
    lat = [worst[k] * 1e3 for k in range(batches)]
    all_fed = next((k for k in range(batches) if fed[k] == nodes[k]), None)
    return {"phase": name, "first_ms": lat[0], "driver_first_ms": cpu[0] * 1e3,
            "first_fed_batch": all_fed, "steady_p50_ms": statistics.median(
                lat[batches // 2:]), "latency_ms": lat, "fed_nodes": fed,
            "source_nodes": nodes}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--interval-ms", type=float, default=100.0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    import irfront
    from irfront import Broadcast, InitActors
    from irfront.cluster import LocalCluster
    ray.cloudpickle.register_pickle_by_value(wl)
    load0 = os.getloadavg()
    rows = []
    with LocalCluster(num_nodes=4, cpus_per_node=2) as cluster:
        irfront.init(address=cluster.address)
        tiny = 8 / (1 << 20)  # floor data: the fixed cost, not the data's
        red1 = InitActors(wl.Reducer, 8, [(i,) for i in range(8)])
        d16 = Broadcast(wl.generate_dependencies, 16, tiny)
        run = lambda name, deps, red: rows.append(  # noqa: E731
            phase(name, deps, red, a.batches, a.interval_ms / 1e3))
        run("first stream: executors created", d16, red1)
        run("same shape, new stream", d16, red1)
        red2 = InitActors(wl.Reducer, 8, [(i,) for i in range(8)])
        ray.get([h.get_total.remote() for h in red2.eval()])  # created: only the route
        run("other reducers: a new route", d16, red2)
        run("12 partitions: a new placement", Broadcast(wl.generate_dependencies, 12,
                                                         tiny), red2)
        cluster.add_node()
        import ray_patch
        ray_patch.refresh_nodes()
        run("a node joined, 20 partitions", Broadcast(wl.generate_dependencies, 20,
                                                       tiny), red2)
        irfront.shutdown()
    print(f"resident rebuilds (4 x 2 CPUs + 1 joining, floor data, {a.batches} batches "
          f"per phase, one per {a.interval_ms:g} ms; load average {load0[0]:.1f} -> "
          f"{os.getloadavg()[0]:.1f})")
    print(f"{'phase':38} {'first batch ms':>14} {'driver ms':>9} {'all fed from':>12} "
          f"{'steady p50 ms':>13}")
    for r in rows:
        print(f"{r['phase']:38} {r['first_ms']:14.1f} {r['driver_first_ms']:9.1f} "
              f"{str(r['first_fed_batch']):>12} {r['steady_p50_ms']:13.1f}")
    if a.json:
        common.write_rows(a.json, rows, load0, "bench/resident_rebuild.py", argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
