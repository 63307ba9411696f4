"""What a driver keeps after many streams: streams made, run, closed and dropped one
after the other, each with reducers of its own, on the resident path.

    python bench/lifecycle.py --streams 100 --json bench/results/lifecycle.json

On an embedded 4 x 2-CPU cluster, each stream: ``InitActors`` of --reducers plain
reducer actors, 3 batches of the same 8 partitions (the resident path: the third is
fed), ``close()``, every handle dropped. Every --every streams it samples: the reducer
actors Ray still has alive, and on each resident executor its open channels, its
routes, its kept inputs and its process's open file descriptors; and the driver's
route and feed tables. Flat is the target: nothing grows with the number of streams.
"""
from __future__ import annotations

import argparse
import gc
import operator
import os
import time

import benchpath  # noqa: F401  (first: sys.path, Ray on loopback)

import numpy as np  # noqa: E402
import ray  # noqa: E402

import common  # noqa: E402
import ray_patch  # noqa: E402
import ray_patch.resident as resident  # noqa: E402
from irfront import Batch, InitActors, Map, MicroBatchStream, Objects, ReduceActors  # noqa: E402
from irfront.cluster import LocalCluster  # noqa: E402
from ray_patch import executors  # noqa: E402


@ray.remote
class LifecycleReducer:
    def __init__(self):
        self.total = 0

    def reduce(self, *partials):
        self.total += int(sum(int(np.asarray(p).sum()) for p in partials))

    def get(self):
        return self.total


@ray.remote
def split(n, part):
    return tuple(np.array_split(part, n))


def _executor_state(self):
    return {"conns": len(self.conns), "routes": len(self.routes),
            "inputs": len(self.inputs), "fds": len(os.listdir("/proc/self/fd"))}


def one_stream(parts: list, n: int) -> int:
    reducers = InitActors(LifecycleReducer, n)
    refs = [ray.put(p) for p in parts]

    def batch():
        return Batch(lambda start: ReduceActors(
            "reduce", reducers, Map(split, Objects(refs), [(n,)] * len(refs),
                                    num_returns=n), combine=operator.add))

    s = MicroBatchStream(interval_s=0.0)
    s.run(batch() for _ in range(3))
    total = sum(ray.get([h.get.remote() for h in reducers.eval()]))
    s.close()
    return total


def sample(k: int) -> dict:
    from ray._private.state import actors
    gc.collect()
    alive = sum(1 for a in actors().values() if a["State"] == "ALIVE"
                and a["ActorClassName"] == "LifecycleReducer")
    rt = ray_patch.get_runtime()
    ex = list(executors.executor_nodes(rt, "resident").values())
    states = ray.get([h.__ray_call__.remote(_executor_state) for h in ex]) if ex else []
    row = {"streams": k, "reducers_alive": alive,
           "driver_routes": len(resident._routes(rt)),
           "driver_feeds": len(resident._feeds(rt))}
    for key in ("conns", "routes", "inputs", "fds"):
        row[f"executor_{key}_max"] = max((s[key] for s in states), default=0)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--reducers", type=int, default=4)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    load0 = os.getloadavg()
    rows = []
    parts = [np.arange(64) + k for k in range(8)]
    want = sum(int(p.sum()) for p in parts) * 3
    t0 = time.time()
    with LocalCluster(num_nodes=4, cpus_per_node=2, object_store_mb=200):
        for k in range(1, a.streams + 1):
            got = one_stream(parts, a.reducers)
            if got != want:
                raise SystemExit(f"stream {k}: total {got} != {want}")
            if k % a.every == 0 or k == 1:
                time.sleep(1.0)  # Ray ends dropped actors asynchronously
                rows.append(sample(k))
                print(rows[-1], flush=True)
    common.print_table(rows, title=f"after each stream ({time.time() - t0:.0f} s)")
    if a.json:
        common.write_rows(a.json, rows, load0, "bench/lifecycle.py", argv)
    return rows


if __name__ == "__main__":
    main()
