"""The 2018 draft's streaming pipeline, written with the IR and the draft's calling
conventions (arguments first, the object last; every reducer gets its partitions as
separate arguments), run under each scheduler on a local 4-node cluster.
Usage: python examples/seed_pipeline.py [--size 100000]"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(ROOT, "python", "irfront")):  # run from a source checkout
    sys.path[:0] = [os.path.join(ROOT, "python"), ROOT]

import numpy as np  # noqa: E402
import ray  # noqa: E402

import irfront  # noqa: E402
from irfront import Broadcast, InitActors, Map, ReduceActors  # noqa: E402
from irfront.cluster import LocalCluster  # noqa: E402


@ray.remote
def generate_dependencies(size):
    return np.random.default_rng(0).random(size)


@ray.remote
def map_step(start, x):
    return x + start


@ray.remote
def shuffle(num_reducers, x):
    return tuple(float(x[i::num_reducers].sum()) for i in range(num_reducers))


@ray.remote
class Reducer:
    def __init__(self, index):
        self.index, self.total = index, 0.0

    def reduce(self, *partials):
        self.total += sum(partials)
        return self.total


def main(args) -> None:
    for scheduler in ("vanilla", "pack", "locality"):
        irfront.init(scheduler=scheduler)
        reducers = InitActors(Reducer, args.num_reducers,
                              [[i] for i in range(args.num_reducers)])
        deps = Broadcast(generate_dependencies, args.num_nodes * 2, args.size)
        t0 = time.perf_counter()
        for _ in range(args.iterations):
            map_ins = deps
            for _ in range(args.num_maps):
                map_ins = Map(map_step, map_ins, args=[[1.0] for _ in range(len(map_ins))])
            shuffled = Map(shuffle, map_ins, [[args.num_reducers]] * len(map_ins),
                           num_returns=args.num_reducers)  # reducer i gets return i
            out = ReduceActors("reduce", reducers, shuffled)
            irfront.get(out)
        dt = (time.perf_counter() - t0) / args.iterations
        print(f"{scheduler:9s} {dt * 1e3:7.1f} ms/iteration  totals {irfront.get(out)}")
        print("          ", shuffled.placement())
        print("          ", reducers.placement())


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--num-nodes", type=int, default=4)
    p.add_argument("--num-reducers", type=int, default=4)
    p.add_argument("--num-maps", type=int, default=2)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--size", type=int, default=100_000)
    a = p.parse_args()
    with LocalCluster(num_nodes=a.num_nodes, cpus_per_node=2, object_store_mb=256):
        main(a)
