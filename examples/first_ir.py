"""A first irfront program, written with the IR: a broadcast array read by 8 partitions,
one map stage, a shuffle into 4 reducer actors, three times. Each stage is one group,
placed by the C++ core. Run: .venv/bin/python examples/first_ir.py"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "python"), ROOT]  # run from a source checkout

import numpy as np  # noqa: E402
import ray  # noqa: E402

import irfront  # noqa: E402
from irfront import Broadcast, InitActors, Map, ReduceActors  # noqa: E402


@ray.remote
def load(size):
    return np.ones(size)


@ray.remote
def double(x):
    return x * 2


@ray.remote
def split(n, x):  # arguments first, the object last
    return tuple(float(c.sum()) for c in np.array_split(x, n))


@ray.remote
class Total:
    def __init__(self, i):
        self.total = 0.0

    def add(self, *partials):
        self.total += sum(partials)
        return self.total


def main(size=1000, batches=3):
    totals = InitActors(Total, 4, [[i] for i in range(4)])  # 4 reducer actors
    data = Broadcast(load, 8, size)                         # one array, 8 partitions
    for _ in range(batches):
        x = Map(double, data)                               # 8 tasks, one group
        parts = Map(split, x, [[4]] * 8, num_returns=4)     # reducer i gets return i
        out = ReduceActors("add", totals, parts)            # totals[i].add(*partials)
        print(irfront.get(out))                             # evaluates the batch
    print(parts.placement())                                # where its tasks ran
    return irfront.get(out)


if __name__ == "__main__":
    with irfront.LocalCluster(num_nodes=4, cpus_per_node=2):
        assert main() == [12000.0] * 4
