"""The IR: plain-data nodes with the 2018 IR's calling conventions (see irfront/ir/nodes.py)."""
from irfront.ir.nodes import (NODE_KINDS, Broadcast, FusedMap, GroupedShuffle, InitActors,
                              Join, Map, MapActors, Node, Objects, ReduceActors, combines,
                              set_evaluator)
from irfront.ir.reducers import (REDUCER_OPTIONS, CheckpointedReducer, NeedsRestore,
                                 SumReducerBase)

__all__ = ["NODE_KINDS", "Broadcast", "CheckpointedReducer", "FusedMap", "GroupedShuffle",
           "InitActors", "Join", "Map", "MapActors", "NeedsRestore", "Node", "Objects",
           "REDUCER_OPTIONS", "ReduceActors", "SumReducerBase", "combines", "set_evaluator"]
