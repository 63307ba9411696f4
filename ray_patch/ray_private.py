"""Every private Ray attribute ray_patch and irfront read, in one place (Ray 2.60).

- ``RemoteFunction._function`` / ``._default_options``: a task's Python function and the
  options given to ``@ray.remote``.
- the ``FuncWrapper`` that ``RemoteFunction.options(...)`` returns keeps its function and
  options only in its ``remote`` method's closure (``func_cls``, ``updated_options``).
- ``ActorClass.__ray_metadata__`` (``modified_class``, ``class_name``, ``num_cpus``) and
  ``ActorClass._default_options``.
- the ``ActorOptionWrapper`` that ``ActorClass.options(...)`` returns keeps its class and
  options only in its ``remote`` method's closure (``actor_cls``, ``updated_options``).
- ``ActorHandle._actor_id``.
- ``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` (irfront.cluster keeps an embedded
  cluster on loopback).
- ``ActorHandle._serialization_helper`` / ``._deserialization_helper(state, weak_ref)``
  (``weak_handle``: a handle that does not keep its actor alive, as Ray's own
  ``current_actor``).
- ``RemoteFunction._remote`` / ``._serialized_base_runtime_env_info`` and
  ``ray._common.ray_option_utils`` (``task_caller``: what ``f.options(...).remote``
  does, without building Ray's per-call wrapper class).
"""
from __future__ import annotations

from typing import Any, Callable

from ray._common import ray_option_utils
from ray.actor import ActorClass
from ray.remote_function import RemoteFunction


def _unwrap(obj: Any, wrapper: str, base_cell: str, base_type: type
            ) -> tuple[Any, dict[str, Any]] | None:
    """``(base, options that differ from the base's own)`` read from the closure of an
    ``.options(...)`` wrapper's ``remote`` method; None when ``obj`` is not one."""
    if isinstance(obj, base_type):
        return obj, {}
    remote = getattr(obj, "remote", None)
    code = getattr(remote, "__code__", None)
    if type(obj).__name__ != wrapper or code is None or remote.__closure__ is None:
        return None
    cells = dict(zip(code.co_freevars, (c.cell_contents for c in remote.__closure__)))
    base, opts = cells.get(base_cell), cells.get("updated_options")
    if not isinstance(base, base_type) or not isinstance(opts, dict):
        return None
    own = base._default_options
    return base, {k: v for k, v in opts.items() if own.get(k) != v}


def unwrap_task(fn: Any) -> tuple[RemoteFunction, dict[str, Any]] | None:
    """``(remote function, options)`` for a remote function or an ``f.options(...)``
    wrapper; None for anything else."""
    return _unwrap(fn, "FuncWrapper", "func_cls", RemoteFunction)


def unwrap_actor_class(cls: Any) -> tuple[ActorClass, dict[str, Any]] | None:
    """``(actor class, options)`` for an actor class or a ``Cls.options(...)`` wrapper;
    None for anything else."""
    return _unwrap(cls, "ActorOptionWrapper", "actor_cls", ActorClass)


def merged_task_options(fn: RemoteFunction, options: dict[str, Any]) -> dict[str, Any]:
    """``fn``'s own options with ``options`` on top, validated as ``fn.options(...)``
    validates them (without a ``runtime_env``: that one needs Ray's own path)."""
    merged = dict(fn._default_options)
    merged.pop("max_calls", None)
    merged = ray_option_utils.update_options(merged, options)
    ray_option_utils.validate_task_options(
        merged, in_options=True,
        is_generator_callable=fn._is_generator if "num_returns" in options else None)
    return merged


def task_caller(fn: RemoteFunction, options: dict[str, Any]) -> Callable[..., Any]:
    """``fn.options(**options).remote``, validated as Ray validates it, but without the
    wrapper class ``.options()`` builds on every call (its docstring handling is most of
    a pinned task's option cost). Options with a ``runtime_env`` take Ray's own path."""
    if "runtime_env" in options:
        return fn.options(**options).remote
    merged = merged_task_options(fn, options)
    env = fn._serialized_base_runtime_env_info

    def remote(*args: Any) -> Any:
        return fn._remote(args=args, kwargs={}, serialized_runtime_env_info=env, **merged)
    return remote


def weak_handle(handle: Any) -> Any:
    """A handle to the same actor that does not count towards its lifetime: what a cache
    keeps, so that an actor still ends when the user's last handle goes (as in Ray)."""
    from ray.actor import ActorHandle
    return ActorHandle._deserialization_helper(handle._serialization_helper()[0], True)
