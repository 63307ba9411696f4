"""Where the driver's time goes in one batch of new data, by way of handing it over.

    python bench/newdata_profile.py --size-mb 4 --json bench/results/newdata_profile.json

On an embedded 4 x 2-CPU cluster, ``bench/stream.py``'s pipeline (two map stages, a
shuffle into 8 reducers, ``combine=operator.add``) runs --batches batches of new data
(--size-mb MB of float64 in 16 partitions, 4 distinct batches used in turn) for each
way of handing a batch over:

- ``values``: ``Objects(parts)`` (inside a stream on the resident path: not put; each
  node's partitions travel in its executor's frame);
- ``put``: ``Objects([ray.put(p) for p in parts])`` (the refs are read back from the
  driver's store and sent in the frames);
- ``put-noresident``: the same under ``locality-noresident`` (each node's executor is
  called through Ray, whose workers pull the partitions from the driver's node).

The driver is profiled (``cProfile``) over the batches after the first --warmup; each
row gives, per batch, the driver's CPU time in all and in the steps that move data:
``ray.put``, reading refs back (``ray.get`` in ``resident._sendable``), building frames
(``wire.dumps``), sending them (``socket.sendall``), and placing the group.
"""
from __future__ import annotations

import argparse
import cProfile
import operator
import os
import pstats
import time

import benchpath  # noqa: F401  (first: sys.path, Ray on loopback)

import ray  # noqa: E402

import baselines as bl  # noqa: E402
import common  # noqa: E402
import stream_workload as wl  # noqa: E402
from irfront import Batch, InitActors, MicroBatchStream, Objects  # noqa: E402
from irfront.cluster import LocalCluster  # noqa: E402
from irfront.lowering.options import lowering_options, options_for  # noqa: E402

WAYS = {"values": "locality", "put": "locality", "put-noresident": "locality-noresident"}
# (label, file suffix, function name) of the steps reported per batch (cumulative time)
STEPS = [("put_ms", "worker.py", "put"), ("read_back_ms", "resident.py", "_sendable"),
         ("frames_ms", "wire.py", "dumps"), ("send_ms", "~", "<method 'sendall' of "
                                             "'_socket.socket' objects>"),
         ("place_ms", "submit.py", "place")]


def _step_ms(stats: pstats.Stats, suffix: str, name: str, batches: int) -> float:
    total = 0.0
    for (path, _, fn), (_, _, _, cum, _) in stats.stats.items():
        if fn == name and path.endswith(suffix):
            total += cum
    return total / batches * 1e3


def profile(way: str, reducers: InitActors, pool: list, batches: int,
            warmup: int) -> dict:
    prof = cProfile.Profile()
    count = [0]

    def submit(start):
        parts = pool[count[0] % len(pool)]
        count[0] += 1
        if count[0] > warmup:
            prof.enable()
        try:
            src = Objects(list(parts) if way == "values" else [ray.put(p) for p in parts])
            return wl.build_batch(src, reducers, 2, reducers.n, start, None,
                                  combine=operator.add).eval()
        finally:
            prof.disable()

    stream = MicroBatchStream(interval_s=0.1, max_in_flight=4)
    with lowering_options(options_for(WAYS[way])):
        stream.run(Batch(submit=submit) for _ in range(batches))
    stream.close()
    measured = batches - warmup
    stats = pstats.Stats(prof)
    row = {"way": way, "batches": measured,
           "driver_ms": stats.total_tt / measured * 1e3}
    for label, suffix, name in STEPS:
        row[label] = _step_ms(stats, suffix, name, measured)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=float, default=4.0)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.batches <= a.warmup:
        ap.error("--batches must exceed --warmup")
    load0 = os.getloadavg()
    rows = []
    with LocalCluster(num_nodes=4, cpus_per_node=2, object_store_mb=1024):
        ray.cloudpickle.register_pickle_by_value(wl)
        bl.ship_by_value()
        reducers = InitActors(wl.Reducer, 8, [(i,) for i in range(8)])
        pool = [bl.new_partitions(a.size_mb, 16, seed) for seed in range(4)]
        for way in WAYS:
            t = time.time()
            rows.append(profile(way, reducers, pool, a.batches, a.warmup))
            print(f"{way}: {time.time() - t:.0f} s", flush=True)
    common.print_table(rows, title=f"driver time per {a.size_mb:g} MB batch of new data "
                                   f"(ms, cProfile)")
    if a.json:
        common.write_rows(a.json, rows, load0, "bench/newdata_profile.py", argv)
    return rows


if __name__ == "__main__":
    main()
