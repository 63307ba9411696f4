"""Fusion: a chain of one-to-one Maps becomes one ``FusedMap`` (one task per partition).

A Map joins the chain ending at a later Map when it has one return, is not evaluated, is
read only by the next Map of the chain (within the DAG being evaluated), and asks Ray for
the same resources, counting the options of an ``f.options(...)`` wrapper (stages with
different resource shapes are never fused; the fused task carries the last stage's
options). The chain's
intermediate objects are then never written to the object store. The last Map may have
num_returns=k (a shuffle). The chain's earlier Maps stay unevaluated: evaluated later on
their own, they run again (tasks are pure).
"""
from __future__ import annotations

import ray_patch.options
from irfront.ir.nodes import FusedMap, Map, Node
from irfront.passes.rewrite import Done, consumers, rewrite

# Task options that shape where and how a task runs: fused stages must agree on them.
RESOURCE_OPTIONS = ray_patch.options.RESOURCE_OPTIONS


def resource_shape(m: Map) -> tuple:
    """The Map's effective resource options (its function's own with an
    ``f.options(...)`` wrapper's on top), normalised: ``f`` and ``f.options(num_cpus=1)``
    have one shape, ``f.options(num_cpus=2)`` another."""
    return ray_patch.options.resource_shape(m.ray_options)


def chain_ending_at(last: Map, done: Done, uses: dict[int, int]) -> list[Map]:
    chain = [last]
    shape = resource_shape(last)
    cur = last
    while True:
        src = cur.objects
        if (not isinstance(src, Map) or src.num_returns != 1 or done(src)
                or uses.get(id(src), 0) != 1 or resource_shape(src) != shape):
            return chain
        chain.insert(0, src)
        cur = src


def apply(root: Node, done: Done) -> Node:
    uses = consumers(root, done)

    def rule(n: Node, rw) -> Node | None:
        if not isinstance(n, Map):
            return None
        chain = chain_ending_at(n, done, uses)
        if len(chain) == 1:
            return None
        return FusedMap(chain, rw(chain[0].objects))

    return rewrite(root, done, rule)
