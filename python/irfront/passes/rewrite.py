"""Building blocks of IR -> IR passes: a node rebuilt over new inputs, and a bottom-up
rewrite of a DAG that keeps every node it does not change (same object)."""
from __future__ import annotations

from typing import Callable

from irfront.ir.nodes import (FusedMap, GroupedShuffle, Join, Map, MapActors, Node,
                              ReduceActors)

Done = Callable[[Node], bool]  # whether a node is already evaluated (a leaf for passes)


def with_inputs(node: Node, inputs: tuple[Node, ...]) -> Node:
    """A new node like ``node`` over ``inputs`` (standing for ``node``'s user node)."""
    if all(a is b for a, b in zip(inputs, node.inputs)):
        return node
    origin = node.replaces or node
    if isinstance(node, Map):
        return Map(node.task, inputs[0], node.args, node.num_returns, replaces=origin)
    if isinstance(node, Join):
        return Join(node.task, inputs[0], node.picks, node.args, node.num_returns,
                    replaces=origin)
    if isinstance(node, FusedMap):
        return FusedMap(node.chain, inputs[0])
    if isinstance(node, ReduceActors):
        return ReduceActors(node.method, node.actors, inputs[1], node.args,
                            combine=node.combine, replaces=origin)
    if isinstance(node, MapActors):
        return MapActors(node.method, node.actors, inputs[1], node.args, replaces=origin)
    if isinstance(node, GroupedShuffle):
        return GroupedShuffle(with_inputs(node.shuffle, (inputs[1],)), node.reduce)
    raise TypeError(f"{node.label}: a pass cannot rebuild a {node.kind} over new inputs")


def consumers(root: Node, done: Done) -> dict[int, int]:
    """How many times each node (by id) is an input of a node still to be evaluated."""
    count: dict[int, int] = {}
    for n in root.walk():
        if done(n):
            continue
        for i in n.inputs:
            count[id(i)] = count.get(id(i), 0) + 1
    return count


def rewrite(root: Node, done: Done, rule: Callable[[Node, Callable[[Node], Node]], Node | None]
            ) -> Node:
    """Applies ``rule(node, rw)`` bottom-up; ``rule`` returns a replacement (built with
    ``rw`` on the inputs it keeps) or None to keep the node over rewritten inputs.
    Evaluated nodes are leaves: neither they nor their inputs are rewritten."""
    memo: dict[int, Node] = {}

    def rw(n: Node) -> Node:
        hit = memo.get(id(n))
        if hit is not None:
            return hit
        if done(n) or not n.inputs:
            out = n
        else:
            out = rule(n, rw)
            if out is None:
                out = with_inputs(n, tuple(rw(i) for i in n.inputs))
        memo[id(n)] = out
        return out

    return rw(root)
