"""Cached group plans: a group whose shape and input locations equal an earlier group's
reuses that group's placement instead of calling the core's policy again.

A streaming pipeline submits the same stages every micro-batch: the same function, the
same number of tasks, inputs on the same nodes (the broadcast copy, or the outputs of a
stage that was itself placed the same way). Drizzle (SOSP'17) amortises scheduling
decisions over micro-batches; here the decision is the core's placement. A reused plan
is still recorded in the core (``record_placement``: its load counts), so later groups
see it as they would a solved one.

The key of a group is its policy, its tasks' CPU and resource demand, and for every
input of every task the node it was produced on (outputs of groups ray_patch knows), or
the object itself (anything else: Ray's lookup decides, so the same object is needed).
What the key leaves out, other groups' load, is why a plan expires:

- when the node table changes (a node joins, dies or changes its CPUs or resources,
  or a failure is reported): ``invalidate``;
- after ``max_uses`` reuses or ``max_age_s`` seconds, so drifting load is seen again.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ray_patch.ids import NO_NODE


@dataclass
class Plan:
    nodes: np.ndarray  # int64, one node per task (a private copy)
    version: int  # the node table version it was made under
    made: float  # time.monotonic() when solved
    uses: int = 0


class PlanCache:
    """Placements by group key, valid for one node table version."""

    def __init__(self, max_uses: int = 100, max_age_s: float = 5.0,
                 max_plans: int = 4096):
        self.max_uses = max_uses
        self.max_age_s = max_age_s
        self.max_plans = max_plans
        self.version = 0  # bumped by invalidate()
        self.hits = 0
        self.misses = 0
        self.expired = 0
        self.reasons: collections.deque[str] = collections.deque(maxlen=8)  # newest last
        self._plans: dict[tuple, Plan] = {}

    def key(self, policy: str, task_cpus: np.ndarray, task_refs: list[list[Any]],
            resources: dict[str, float] | None, registry: dict, groups: dict) -> tuple:
        """The group's key (see the module docstring)."""
        sig = []
        for refs in task_refs:
            row = []
            for ref in refs:
                k = ref.binary()
                hit = registry.get(k)
                rec = groups.get(hit[0]) if hit is not None else None
                node = int(rec.nodes[hit[1]]) if rec is not None else NO_NODE
                row.append(node if node != NO_NODE else k)
            sig.append(tuple(row))
        res = tuple(sorted(resources.items())) if resources else ()
        return policy, task_cpus.tobytes(), res, tuple(sig)

    def get(self, key: tuple) -> np.ndarray | None:
        """The nodes of a valid plan for ``key`` (a copy), or None."""
        plan = self._plans.get(key)
        if plan is None:
            self.misses += 1
            return None
        if (plan.version != self.version or plan.uses >= self.max_uses
                or time.monotonic() - plan.made > self.max_age_s):
            del self._plans[key]
            self.expired += 1
            self.misses += 1
            return None
        plan.uses += 1
        self.hits += 1
        return plan.nodes.copy()

    def put(self, key: tuple, nodes: np.ndarray) -> None:
        if len(self._plans) >= self.max_plans:  # bounded: shapes come and go
            self._plans.clear()
        self._plans[key] = Plan(np.array(nodes, dtype=np.int64), self.version,
                                time.monotonic())

    def drop(self, key: tuple) -> None:
        self._plans.pop(key, None)

    def invalidate(self, reason: str) -> None:
        """The node table changed (``reason`` says how): every plan is stale."""
        self.version += 1
        self.reasons.append(reason)
        self._plans.clear()

    def stats(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "expired": self.expired,
                "plans": len(self._plans), "version": self.version,
                "invalidated_by": list(self.reasons)}
