"""The program's entry points: connect to Ray, pick the scheduler, fetch results."""
from __future__ import annotations

from typing import Any

import ray

import ray_patch
import ray_patch.executors as executors
from irfront.cluster import quiet_shutdown, release_runtime
from irfront.errors import note_node
from irfront.ir.nodes import Node
from irfront.lowering.options import LoweringOptions, get_options, set_options


def init(scheduler: str = "locality", address: str | None = None,
         **options: Any) -> LoweringOptions:
    """Chooses how every IR node evaluated from now on is lowered, and connects Ray.

    ``scheduler``: "locality" (default: groups placed by the C++ core for least bytes
    moved, balanced, with fusion and the grouped shuffle), "pack", "spread", or "vanilla"
    (plain ``.remote()``: Ray places each task). ``address``: a Ray cluster to join
    (``ray.init(address=...)``, Ray's own node addresses untouched); omitted, Ray must be
    initialised already (``ray.init()``, or ``irfront.cluster.LocalCluster``). Other
    keywords are ``LoweringOptions`` fields. Returns the options now in force.
    """
    if address is not None and not ray.is_initialized():
        ray.init(address=address)
    set_options(get_options().replace(scheduler=scheduler, **options))
    return get_options()


def set_scheduler(scheduler: str) -> None:
    """Switches the scheduler of every node evaluated from now on."""
    set_options(get_options().replace(scheduler=scheduler))


def shutdown() -> None:
    """Frees every group ray_patch holds and disconnects from Ray."""
    rt = ray_patch.current_runtime()
    if rt is not None:
        ray_patch.free_groups(list(rt.groups))
        for h in executors.forget(rt):  # the persistent per-node stage executors
            ray.kill(h)
    release_runtime()  # its tables (the resident feeds' connections close), while Ray
    quiet_shutdown()  # is up


def get(x: Any, timeout: float | None = None) -> Any:
    """``ray.get`` for IR nodes and futures: a node (or a list of nodes) is evaluated and
    fetched; a failing group task's error gets a note naming its group."""
    if isinstance(x, Node):
        return x.get(timeout)
    if isinstance(x, (list, tuple)) and x and all(isinstance(n, Node) for n in x):
        return [n.get(timeout) for n in x]
    try:
        return ray.get(x, timeout=timeout)
    except ray.exceptions.RayError as e:
        label = _group_label_of(x)
        if label:
            note_node(e, label)
        raise


def _group_label_of(x: Any) -> str:
    """The group of the first ref in ``x`` that failed, as ``name[g7:3]`` (or "")."""
    rt = ray_patch.current_runtime()
    if rt is None:
        return ""
    refs = [x] if isinstance(x, ray.ObjectRef) else [r for r in x if isinstance(r, ray.ObjectRef)]
    for r in refs:
        hit = rt.registry.get(r.binary())
        if hit is None:
            continue
        try:
            ray.get(r, timeout=0)
        except ray.exceptions.GetTimeoutError:
            continue
        except ray.exceptions.RayError:
            rec = rt.groups.get(hit[0])
            return f"{rec.name if rec is not None else '?'}[g{hit[0]}:{hit[1]}]"
    return ""
