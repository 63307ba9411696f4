"""The same program in plain Ray, unchanged, under @irfront.infer: its .remote() calls
are recorded up to each evaluation point (here ray.get), matched to the IR's nodes and
run group-scheduled. Run: .venv/bin/python examples/first_infer.py"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "python"), ROOT]  # run from a source checkout

import ray  # noqa: E402

import irfront  # noqa: E402
from first_ir import Total, double, load, split  # noqa: E402  (the same tasks)


@irfront.infer
def pipeline(size=1000, batches=3):
    totals = [Total.remote(i) for i in range(4)]
    data = load.remote(size)
    for _ in range(batches):
        xs = [double.remote(data) for _ in range(8)]
        parts = [split.options(num_returns=4).remote(4, x) for x in xs]
        out = [t.add.remote(*[p[i] for p in parts]) for i, t in enumerate(totals)]
        print(ray.get(out))
    return ray.get(out)


if __name__ == "__main__":
    with irfront.LocalCluster(num_nodes=4, cpus_per_node=2):
        assert pipeline() == [12000.0] * 4
        print(pipeline.explain())  # what was matched, and what ran as plain Ray (why)
