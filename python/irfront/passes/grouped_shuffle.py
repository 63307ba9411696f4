"""Grouped shuffle: a shuffle (a Map or FusedMap with one return per actor) feeding
ReduceActors becomes a ``GroupedShuffle``: each task writes one object per destination
node (holding the pieces of that node's actors) instead of one per actor, so a task of n
returns to m nodes writes m objects, not n. Applies to grouped schedulers only (the
actors' nodes must be known), with more than one actor, to a shuffle not yet evaluated.
"""
from __future__ import annotations

from irfront.ir.nodes import FusedMap, GroupedShuffle, Map, Node, ReduceActors
from irfront.passes.rewrite import Done, rewrite


def apply(root: Node, done: Done) -> Node:
    def rule(n: Node, rw) -> Node | None:
        if not isinstance(n, ReduceActors) or not n.shuffled or n.actors.n < 2:
            return None
        src = rw(n.objects)
        if done(n.objects) or not isinstance(src, (Map, FusedMap)):
            return None
        return GroupedShuffle(src, n)

    return rewrite(root, done, rule)
