"""Every private Ray attribute ray_patch and irfront read, in one place (Ray 2.60).

- ``RemoteFunction._function`` / ``._default_options``: a task's Python function and the
  options given to ``@ray.remote``.
- the ``FuncWrapper`` that ``RemoteFunction.options(...)`` returns keeps its function and
  options only in its ``remote`` method's closure (``func_cls``, ``updated_options``).
- ``ActorClass.__ray_metadata__`` (``modified_class``, ``class_name``, ``num_cpus``) and
  ``ActorClass._default_options``.
- ``ActorHandle._actor_id``.
- ``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` (irfront.cluster keeps an embedded
  cluster on loopback).
"""
from __future__ import annotations

from typing import Any

from ray.remote_function import RemoteFunction


def unwrap_task(fn: Any) -> tuple[RemoteFunction, dict[str, Any]] | None:
    """``(remote function, options)`` for a remote function or an ``f.options(...)``
    wrapper; None for anything else."""
    if isinstance(fn, RemoteFunction):
        return fn, {}
    remote = getattr(fn, "remote", None)
    code = getattr(remote, "__code__", None)
    if type(fn).__name__ != "FuncWrapper" or code is None or remote.__closure__ is None:
        return None
    cells = dict(zip(code.co_freevars, (c.cell_contents for c in remote.__closure__)))
    base, opts = cells.get("func_cls"), cells.get("updated_options")
    if not isinstance(base, RemoteFunction) or not isinstance(opts, dict):
        return None
    own = base._default_options
    return base, {k: v for k, v in opts.items() if own.get(k) != v}
