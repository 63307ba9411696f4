"""IR -> IR passes, each ``apply(root, done) -> root``: new nodes, the old ones untouched.

``done(node)`` says whether a node is evaluated already (a leaf: kept as it is). Which
passes run is a choice of the lowering options (``pipeline(opts_enabled)``)."""
from __future__ import annotations

from typing import Callable

from irfront.ir.nodes import Node
from irfront.passes import fusion, grouped_shuffle
from irfront.passes.rewrite import Done

# (switch, pass), in the order they run: fusion first, so a fused shuffle is grouped.
PASSES = (("fuse", fusion.apply), ("shuffle_by_node", grouped_shuffle.apply))


def optimize(root: Node, done: Done, enabled: Callable[[str], bool]) -> Node:
    """Runs every pass whose switch is on."""
    for switch, apply in PASSES:
        if enabled(switch):
            root = apply(root, done)
    return root


__all__ = ["PASSES", "optimize", "fusion", "grouped_shuffle"]
