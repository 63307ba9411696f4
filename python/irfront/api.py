"""The driver's entry points: connect to Ray and pick the scheduler for the program."""
from __future__ import annotations

from typing import Any

import ray

from irfront import lower


def init(scheduler: str = "locality", address: str | None = None,
         **options: Any) -> lower.LoweringOptions:
    """Chooses how every IR node evaluated from now on is lowered, and connects Ray.

    ``scheduler``: "locality" (default: groups placed by the C++ core for least bytes
    moved, balanced), "pack" (the 2018 draft's rule) or "vanilla" (plain ``.remote()``,
    Ray places each task). ``address``: a Ray cluster to join (``ray.init(address=...)``);
    omitted, Ray must be initialised already (e.g. by ``irfront.cluster.LocalCluster``).
    Other keywords are ``LoweringOptions`` fields. Returns the options now in force.
    """
    if address is not None and not ray.is_initialized():
        from irfront.cluster import connect
        connect(address)
    lower.set_options(lower.get_options().replace(scheduler=scheduler, **options))
    return lower.get_options()


def shutdown() -> None:
    """Frees every group ray_patch holds and disconnects from Ray."""
    import ray_patch
    rt = ray_patch.runtime.current_runtime()
    if rt is not None:
        ray_patch.free_groups(list(rt.groups))
    ray_patch.reset()
    if ray.is_initialized():
        ray.shutdown()
