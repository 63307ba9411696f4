"""What a group submission costs the driver over plain ``.remote()``, per task.

    python bench/submit_overhead.py --json bench/results/submit_overhead.json

On an embedded 4 x 2-CPU cluster: rounds of ``--tasks`` tiny tasks submitted with plain
``.remote()`` and as one group (``ray_patch.group_starmap``), interleaved, each round
waited for before the next. The driver's wall time of the submission alone (not the
tasks' run) is timed; the table gives the median per task of each, and their difference
(the target: under 1 ms per task). ``tests/test_ray_patch.py`` counts what a group
submission adds (one placement, no Ray round trip) instead of timing it: a time under
``make test``'s load measures the load.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import benchpath  # noqa: F401  (first: sys.path, Ray on loopback)

import ray  # noqa: E402

import common  # noqa: E402
import ray_patch  # noqa: E402
from irfront.cluster import LocalCluster  # noqa: E402

TARGET_MS = 1.0


@ray.remote
def add(x, y):
    return x + y


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    load0 = os.getloadavg()
    per = {"plain": [], "group": []}
    with LocalCluster(num_nodes=4, cpus_per_node=2, object_store_mb=200):
        args = [(i, 0) for i in range(a.tasks)]
        for _ in range(3):  # warm the workers and the core
            ray.get([add.remote(*x) for x in args])
            refs = ray_patch.group_starmap(add, args)
            ray.get(list(refs))
            ray_patch.free_groups([refs.group_id])
        for r in range(a.rounds):
            for kind in (("plain", "group") if r % 2 == 0 else ("group", "plain")):
                t0 = time.perf_counter()
                if kind == "plain":
                    refs = [add.remote(*x) for x in args]
                else:
                    refs = ray_patch.group_starmap(add, args)
                dt = time.perf_counter() - t0
                ray.get(list(refs))
                if kind == "group":
                    ray_patch.free_groups([refs.group_id])
                per[kind].append(dt / a.tasks * 1e3)
    plain, group = statistics.median(per["plain"]), statistics.median(per["group"])
    rows = [{"tasks": a.tasks, "rounds": a.rounds, "plain_ms_per_task": plain,
             "group_ms_per_task": group, "overhead_ms_per_task": group - plain,
             "target_ms": TARGET_MS, "met": group - plain < TARGET_MS}]
    common.print_table(rows, title="driver time per task submitted (median of rounds)")
    if a.json:
        common.write_json(a.json, [dict(rows[0], provenance=common.provenance(load0),
                                        samples_ms=per)])
        print(f"wrote {a.json}")
    return rows


if __name__ == "__main__":
    main()
