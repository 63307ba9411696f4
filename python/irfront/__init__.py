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

import importlib
from typing import Any

# Imported with the package: the IR and its lowering (which registers the evaluator that
# ``node.eval()`` uses). A Ray worker that unpickles a reducer class imports this package
# first, so the rest (the driver API, the stream, inference, the local cluster: most of
# the import time) loads on first use instead (PEP 562).
from irfront._version import __version__
from irfront.errors import IRError
from irfront.ir import (REDUCER_OPTIONS, Broadcast, CheckpointedReducer, InitActors, Join,
                        Map, MapActors, NeedsRestore, Node, Objects, ReduceActors,
                        SumReducerBase, combines)
from irfront.lowering import (SCHEDULERS, LoweringOptions, NodePlacement, get_options,
                              lowering_options, options_for, set_options)

_LAZY = {
    "irfront.api": ("get", "init", "set_scheduler", "shutdown"),
    "irfront.cluster": ("LocalCluster", "connect"),
    "irfront.drivers": ("Batch", "BatchRecord", "CheckpointStore", "DirectoryStore",
                        "InFlightWindow", "MicroBatchStream", "RecoveryError",
                        "StreamFinishedError", "StreamReport"),
    "irfront.inference": ("analyze", "explain_inferred", "infer", "is_deferred"),
}
_LAZY_FROM = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _LAZY_FROM.get(name)
    if module is None:
        if f"irfront.{name}" in _LAZY:  # ``irfront.inference.X`` after ``import irfront``
            return importlib.import_module(f"irfront.{name}")
        raise AttributeError(f"module 'irfront' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_FROM) | {m.split(".")[1] for m in _LAZY})


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
