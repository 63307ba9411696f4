"""irfront: group scheduling of BSP stages on Ray.

    import irfront
    from irfront import Broadcast, Map, InitActors, ReduceActors, MapActors
    irfront.init(scheduler="locality")   # or "pack", "spread", "vanilla"

Layers, bottom up (each imports only those below it; see docs/ARCHITECTURE.md):
``ray_patch.scheduler`` (the C++ core's face) -> ``ray_patch`` (group submission on Ray)
-> ``irfront.ir`` (plain-data nodes) -> ``irfront.passes`` (IR -> IR) ->
``irfront.lowering`` (IR -> Ray tasks) -> ``irfront.drivers`` (the micro-batch stream)
-> ``irfront.inference`` (plain Ray code -> IR) -> ``irfront.api`` / ``irfront.cluster``
and this module.
"""
from __future__ import annotations

from irfront._version import __version__
from irfront.api import get, init, set_scheduler, shutdown
from irfront.cluster import LocalCluster, connect
from irfront.drivers import (Batch, BatchRecord, CheckpointStore, DirectoryStore,
                             InFlightWindow, MicroBatchStream, RecoveryError,
                             StreamFinishedError, StreamReport)
from irfront.errors import IRError
from irfront.inference import analyze, explain_inferred, infer, is_deferred
from irfront.ir import (REDUCER_OPTIONS, Broadcast, CheckpointedReducer, InitActors, Join,
                        Map, MapActors, NeedsRestore, Node, Objects, ReduceActors,
                        SumReducerBase, combines)
from irfront.lowering import (SCHEDULERS, LoweringOptions, NodePlacement, get_options,
                              lowering_options, options_for, set_options)

__all__ = [
    "__version__", "analyze", "Batch", "BatchRecord", "Broadcast",
    "CheckpointedReducer", "CheckpointStore", "combines", "connect", "DirectoryStore",
    "explain_inferred", "get", "get_options", "infer", "InFlightWindow", "init",
    "InitActors", "IRError", "is_deferred", "Join", "LocalCluster", "lowering_options",
    "LoweringOptions", "Map", "MapActors", "MicroBatchStream", "NeedsRestore", "Node",
    "NodePlacement", "Objects", "options_for", "RecoveryError", "ReduceActors",
    "REDUCER_OPTIONS", "SCHEDULERS", "set_options", "set_scheduler", "shutdown",
    "StreamFinishedError", "StreamReport", "SumReducerBase",
]
