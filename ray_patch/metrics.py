"""ray_patch's Ray metrics (``ray.util.metrics``), exported by each node's metrics agent
(Prometheus text format on the node's ``MetricsExportPort``; Ray prefixes the names with
``ray_``; the agent needs ``ray[default]``).

| metric | kind | recorded | tags |
|---|---|---|---|
| ``irfront_live_groups`` | gauge | ray_patch's live groups (records in the runtime's registry), set when a group is recorded and when queued frees are applied | |
| ``irfront_placement_solve_seconds`` | histogram | time in the C++ core per group placement (``Placement.solve_ms``) | ``policy`` |
| ``irfront_group_bytes_moved`` | histogram | input bytes the core's placement leaves off the reading task's node, per group (``Placement.bytes_moved``; inputs of known groups count ``default_object_bytes`` each) | ``policy`` |
| ``irfront_plans_reused`` | counter | groups placed by reusing a cached plan (ray_patch.plans), not by the core's policy | ``policy`` |
| ``irfront_node_failures`` | counter | nodes ray_patch saw die (node table, or the opt-in raylet probe) | |

The metric objects are made on first use, once Ray is connected (Ray's metrics need a
core worker), and recorded once per group, never per task. ``enabled = False`` (or
``IRFRONT_METRICS=0`` in the environment) turns every record into a no-op; a metric that
cannot be made (an old or minimal Ray) turns them off too, with one warning in the log.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import ray
from ray.util.metrics import Counter, Gauge, Histogram

log = logging.getLogger("irfront.ray_patch")

enabled = os.environ.get("IRFRONT_METRICS", "1") not in ("0", "false", "no", "")

SOLVE_BOUNDARIES = [1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05,
                    0.1, 0.25, 1.0]
BYTES_BOUNDARIES = [float(1 << s) for s in range(10, 36, 2)]  # 1 KiB .. 16 GiB


class _Metrics:
    def __init__(self) -> None:
        self.live_groups = Gauge(
            "irfront_live_groups",
            description="Groups ray_patch keeps a record of (submitted, not freed).")
        self.solve = Histogram(
            "irfront_placement_solve_seconds",
            description="Time in the C++ core per group placement.",
            boundaries=SOLVE_BOUNDARIES, tag_keys=("policy",))
        self.bytes_moved = Histogram(
            "irfront_group_bytes_moved",
            description="Input bytes a group's placement leaves off the reading task's "
                        "node (the core's estimate).",
            boundaries=BYTES_BOUNDARIES, tag_keys=("policy",))
        self.plans_reused = Counter(
            "irfront_plans_reused",
            description="Groups placed by reusing a cached plan instead of the core's "
                        "policy.", tag_keys=("policy",))
        self.node_failures = Counter(
            "irfront_node_failures",
            description="Nodes ray_patch saw die (node table or raylet probe).")
        self.tags: dict[str, dict[str, str]] = {}  # policy -> its tag dict, reused


_M: _Metrics | None = None
_FAILED = False


def _get() -> _Metrics | None:
    global _M, _FAILED
    if _M is not None:
        return _M
    if not enabled or _FAILED or not ray.is_initialized():
        return None
    try:
        _M = _Metrics()
    except Exception as e:  # pragma: no cover - a Ray without custom metrics
        _FAILED = True
        log.warning("Ray metrics unavailable (%s: %s): irfront_* metrics off",
                    type(e).__name__, e)
    return _M


def _tags(m: _Metrics, policy: str) -> dict[str, str]:
    tags = m.tags.get(policy)
    if tags is None:
        tags = m.tags[policy] = {"policy": policy}
    return tags


def placed(policy: str, solve_ms: float, bytes_moved: int) -> None:
    """One group placed by the core."""
    m = _M or _get()
    if m is None:
        return
    tags = _tags(m, policy)
    m.solve.observe(solve_ms * 1e-3, tags)
    m.bytes_moved.observe(max(0, bytes_moved), tags)


def plan_reused(policy: str) -> None:
    """One group placed from a cached plan."""
    m = _M or _get()
    if m is not None:
        m.plans_reused.inc(1, _tags(m, policy))


def live_groups(n: int) -> None:
    m = _M or _get()
    if m is not None:
        m.live_groups.set(n)


def node_failures(n: int) -> None:
    m = _M or _get()
    if m is not None and n:
        m.node_failures.inc(n)


def objects() -> Any:
    """The metric objects (None before the first record or when off); for tests."""
    return _M
