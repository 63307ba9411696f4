"""irfront: group scheduling of BSP stages on Ray.

Submodules are imported lazily: `irfront.scheduler` (placement core, needs the compiled
`irfront._scheduler` extension) loads on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY_SUBMODULES = {"scheduler"}


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
