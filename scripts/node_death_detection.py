"""How long Ray's node table takes to show a removed node as dead, and whether ray_patch's
raylet probe sees it sooner.

    .venv/bin/python scripts/node_death_detection.py --runs 5
    .venv/bin/python scripts/node_death_detection.py --runs 5 --ray-defaults

Starts a LocalCluster (3 nodes: irfront.cluster.HEALTH_CHECK, or Ray's own health-check
settings with ``--ray-defaults``), then per run: adds a node, waits 3 s, removes it
(``cluster_utils``: the raylet is killed), and polls every 20 ms both ``ray.nodes()`` and a
TCP connect to the node's NodeManagerPort (what ``Runtime.probe_nodes`` does). Prints the
seconds from the kill to each.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (os.path.join(ROOT, "python"), ROOT):
    if p not in sys.path:
        sys.path.insert(0, p)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import ray  # noqa: E402

from irfront.cluster import HEALTH_CHECK, LocalCluster  # noqa: E402

RAY_DEFAULTS = {"health_check_initial_delay_ms": 5000, "health_check_period_ms": 3000,
                "health_check_timeout_ms": 10000, "health_check_failure_threshold": 5}


def refused(addr) -> bool:
    try:
        with socket.create_connection(addr, timeout=0.3):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ray-defaults", action="store_true")
    ap.add_argument("--timeout", type=float, default=40.0)
    args = ap.parse_args()
    cfg = RAY_DEFAULTS if args.ray_defaults else HEALTH_CHECK
    table, probe = [], []
    with LocalCluster(num_nodes=3, cpus_per_node=1, object_store_mb=100,
                      system_config=cfg) as c:
        print("health checks:", {k: ray._config.__getattribute__(k)()
                                 for k in ("health_check_period_ms",
                                           "health_check_failure_threshold",
                                           "health_check_timeout_ms")}, flush=True)
        for r in range(args.runs):
            node = c.add_node(cpus=1)
            hexid = node.node_id
            info = next(n for n in ray.nodes() if n["NodeID"] == hexid)
            addr = (info["NodeManagerAddress"], info["NodeManagerPort"])
            time.sleep(3.0)
            t0 = time.perf_counter()
            c.remove_node(node)
            t_table = t_probe = None
            while time.perf_counter() - t0 < args.timeout and t_table is None:
                now = time.perf_counter() - t0
                if t_probe is None and refused(addr):
                    t_probe = now
                if not next(n for n in ray.nodes() if n["NodeID"] == hexid)["Alive"]:
                    t_table = time.perf_counter() - t0
                time.sleep(0.02)
            print(f"run {r}: node table dead after {t_table} s, raylet port refused after "
                  f"{t_probe} s", flush=True)
            if t_table is not None:
                table.append(t_table)
            if t_probe is not None:
                probe.append(t_probe)
    if table:
        print(f"node table: median {statistics.median(table):.2f} s, max {max(table):.2f} s"
              f" ({len(table)} of {args.runs} runs)")
    if probe:
        print(f"probe: median {statistics.median(probe):.2f} s, max {max(probe):.2f} s")


if __name__ == "__main__":
    main()
