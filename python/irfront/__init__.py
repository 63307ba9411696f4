"""irfront: group scheduling of BSP stages on Ray.

Submodules are imported lazily: `irfront.scheduler` (placement core, needs the compiled
`irfront._scheduler` extension) loads on first use. The IR and its driver API are
re-exported here, also lazily:

    from irfront import Broadcast, Map, InitActors, ReduceActors, MapActors
    irfront.init(scheduler="locality")   # or "pack", "vanilla"
"""
from __future__ import annotations

import importlib
import os
from typing import Any

# Keep Ray (and every raylet started from this process) on loopback; must be set before
# ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

_LAZY_SUBMODULES = {"scheduler", "cluster", "nodes", "lower", "errors", "api"}

# Public names -> the submodule that defines them.
_LAZY_ATTRS = {
    "Node": "nodes", "Broadcast": "nodes", "Map": "nodes", "InitActors": "nodes",
    "ReduceActors": "nodes", "MapActors": "nodes", "Objects": "nodes",
    "NodePlacement": "nodes",
    "IRError": "errors",
    "LoweringOptions": "lower", "lowering_options": "lower", "get_options": "lower",
    "set_scheduler": "lower", "get": "lower",
    "init": "api", "shutdown": "api",
    "LocalCluster": "cluster", "connect": "cluster",
}

__all__ = sorted(_LAZY_ATTRS)


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY_ATTRS:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY_ATTRS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
