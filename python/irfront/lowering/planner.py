"""The lowering registry: node kind -> lowering function, all registered in one place."""
from __future__ import annotations

from typing import Callable

from irfront.errors import IRError
from irfront.ir.nodes import (NODE_KINDS, Broadcast, FusedMap, GroupedShuffle, InitActors,
                              Join, Map, MapActors, Node, Objects, ReduceActors)
import irfront.lowering.ops as ops
from irfront.lowering.context import Lowered, LoweringContext

LowerFn = Callable[[Node, LoweringContext], Lowered]
LOWERINGS: dict[type, LowerFn] = {}


def register_lowerings() -> None:
    """Registers the lowering of every node kind (the one place that does)."""
    LOWERINGS.update({
        Objects: ops.lower_objects,
        Broadcast: ops.lower_broadcast,
        Map: ops.lower_map,
        Join: ops.lower_join,
        FusedMap: ops.lower_fused_map,
        InitActors: ops.lower_init_actors,
        ReduceActors: ops.lower_reduce_actors,
        MapActors: ops.lower_map_actors,
        GroupedShuffle: ops.lower_grouped_shuffle,
    })
    missing = [k.__name__ for k in NODE_KINDS if k not in LOWERINGS]
    assert not missing, f"node kinds without a lowering: {missing}"


def lower(node: Node, ctx: LoweringContext) -> Lowered:
    """Lowers one node whose inputs are lowered; errors name the user's node."""
    fn = LOWERINGS.get(type(node))
    if fn is None:
        raise IRError(node.label, f"no lowering registered for {type(node).__name__}; "
                      "add it to irfront.lowering.planner.register_lowerings")
    try:
        return fn(node, ctx)
    except IRError:
        raise
    except ValueError as e:  # ray_patch.GroupError and the core's ValueError
        raise IRError((node.replaces or node).label, str(e)) from e


register_lowerings()
