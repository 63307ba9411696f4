"""How long an embedded LocalCluster takes to start (and to export Ray metrics).

    .venv/bin/python scripts/cluster_start_time.py --runs 3            # as installed
    .venv/bin/python scripts/cluster_start_time.py --runs 3 --minimal  # as without ray[default]

``--minimal`` makes this process see Ray's dashboard dependencies as missing, so Ray starts
each node's dashboard agent with ``--minimal`` (no reporter module, no metrics export):
what a plain ``pip install ray`` gives. Prints one line per run: the seconds from
``LocalCluster(...)`` to a connected driver, and (without ``--minimal``) the seconds until
every alive node's metrics endpoint answers. Run it with nothing else using Ray.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (os.path.join(ROOT, "python"), ROOT):
    if p not in sys.path:
        sys.path.insert(0, p)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def endpoints_up(timeout_s: float) -> float | None:
    import ray
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        ports = [(n["NodeManagerAddress"], n.get("MetricsExportPort"))
                 for n in ray.nodes() if n["Alive"]]
        ok = 0
        for host, port in ports:
            try:
                with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=1):
                    ok += 1
            except OSError:
                pass
        if ports and ok == len(ports):
            return time.perf_counter() - t0
        time.sleep(0.2)
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--minimal", action="store_true")
    args = ap.parse_args()
    if args.minimal:
        sys.modules["ray.dashboard.optional_deps"] = None  # import fails: minimal agents
    from irfront.cluster import LocalCluster
    starts = []
    for r in range(args.runs):
        t0 = time.perf_counter()
        c = LocalCluster(num_nodes=args.nodes, cpus_per_node=2, object_store_mb=200)
        start = time.perf_counter() - t0
        starts.append(start)
        up = None if args.minimal else endpoints_up(60.0)
        c.shutdown()
        print(f"run {r}: start {start:.2f} s"
              + ("" if args.minimal else f", metrics endpoints up {up} s later"), flush=True)
        time.sleep(2)
    print(f"median start {statistics.median(starts):.2f} s over {len(starts)} runs "
          f"({'minimal' if args.minimal else 'ray[default]'} agents)")


if __name__ == "__main__":
    main()
