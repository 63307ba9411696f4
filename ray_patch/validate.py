"""The one argument validator of the project: each check raises ``GroupError`` (a
``ValueError``) whose message names the parameter, shows the expected form and reports
what was given. ray_patch raises them as they are; the IR re-raises them as ``IRError``
with the pipeline node's label in front."""
from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from ray.actor import ActorClass
from ray.remote_function import RemoteFunction

from ray_patch.ray_private import unwrap_actor_class, unwrap_task

MAX_RETURNS = 100_000  # num_returns of one task
MAX_RETRIES = 2**31 - 1
MAX_ID = 2**62  # group ids are int64 in the core


class GroupError(ValueError):
    """Arguments that cannot be submitted as asked; the message says what to pass."""


def task_name(fn: Any) -> str:
    """The short name of a remote function, actor class (or either's ``.options(...)``
    wrapper) or plain callable."""
    if not isinstance(fn, (RemoteFunction, ActorClass)):
        fn = (unwrap_task(fn) or unwrap_actor_class(fn) or (fn,))[0]
    if isinstance(fn, RemoteFunction):
        return fn._function.__name__
    if isinstance(fn, ActorClass):
        return fn.__ray_metadata__.class_name
    return getattr(fn, "__name__", type(fn).__name__)


def check_remote_function(fn: Any, actors_hint: str = "group_actors()"
                          ) -> tuple[RemoteFunction, dict[str, Any]]:
    """A @ray.remote function or its ``f.options(...)`` wrapper: returns ``(function,
    the wrapper's options)`` ({} for a plain remote function)."""
    got = unwrap_task(fn)
    if got is not None:
        return got
    if unwrap_actor_class(fn) is not None:
        raise GroupError(f"task must be a @ray.remote function; got actor class "
                         f"'{task_name(fn)}'; use {actors_hint} for actor classes")
    what = "function" if callable(fn) else type(fn).__name__
    raise GroupError(f"task must be a @ray.remote function; got plain {what} "
                     f"'{task_name(fn)}'; decorate it with @ray.remote")


def check_actor_class(cls: Any) -> tuple[ActorClass, dict[str, Any]]:
    """A @ray.remote class or its ``Cls.options(...)`` wrapper: returns ``(class, the
    wrapper's options)`` ({} for a plain actor class)."""
    got = unwrap_actor_class(cls)
    if got is not None:
        return got
    what = ("remote function" if unwrap_task(cls) is not None else
            f"plain {'class' if isinstance(cls, type) else type(cls).__name__}")
    raise GroupError(f"actor_cls must be a @ray.remote class; got {what} "
                     f"'{task_name(cls)}'; decorate the class with @ray.remote")


def check_optional_int(name: str, value: Any, low: int, high: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise GroupError(f"{name} must be an int or None; got {type(value).__name__} "
                         f"{value!r}")
    if not low <= value <= high:
        raise GroupError(f"{name} must be between {low} and {high}; got {value}")


def check_count(name: str, value: Any, high: int | None = None) -> int:
    """A positive int (a number of objects, actors or returns), at most ``high``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise GroupError(f"{name} must be a positive int; got {value!r}")
    if high is not None and value > high:
        raise GroupError(f"{name} must be at most {high}; got {value}")
    return int(value)


def as_tuples(arg_tuples: Any, count: int | None = None, per: str = "task") -> list[tuple]:
    """One tuple of arguments per task/object/actor; lists are accepted as tuples."""
    example = f"[(x,) for _ in range({count})]" if count is not None else "[(x,) for x in xs]"
    if isinstance(arg_tuples, (str, bytes, dict)) or not hasattr(arg_tuples, "__iter__"):
        raise GroupError(f"args must be a list with one argument tuple per {per}; got "
                         f"{type(arg_tuples).__name__}; e.g. args={example}")
    out = []
    for i, a in enumerate(arg_tuples):
        if isinstance(a, tuple):
            out.append(a)
        elif isinstance(a, list):
            out.append(tuple(a))
        else:
            raise GroupError(f"args[{i}] is {type(a).__name__} {a!r}; each entry must be a "
                             f"tuple or list of arguments, e.g. args={example}")
    if count is not None and len(out) != count:
        raise GroupError(f"got {len(out)} argument tuples for {count} {per}s; pass one "
                         f"per {per}, e.g. args={example}")
    return out


def check_method(cls: ActorClass, method: Any) -> str:
    """``method``: the name of a public method of the actor class."""
    if not isinstance(method, str):
        raise GroupError(f"method must be the method's name as a str; got "
                         f"{type(method).__name__}")
    body = cls.__ray_metadata__.modified_class
    if not callable(getattr(body, method, None)) or method.startswith("__"):
        names = sorted(m for m in dir(body) if not m.startswith("_")
                       and callable(getattr(body, m, None)))
        raise GroupError(f"actor class '{task_name(cls)}' has no method '{method}'; pass "
                         f"one of: {', '.join(names)}")
    return method


# (function, nargs) pairs already checked: a streaming program builds the same nodes every
# micro-batch, and inspect.signature is most of a node's construction cost. The entry
# holds the function itself, so a reused id (a new function) does not hit.
_BINDS_OK: dict[tuple[int, int], Any] = {}


def check_arg_count(fn: Any, nargs: int, what: str) -> None:
    """Raises when a call with ``nargs`` positional arguments cannot bind ``fn``."""
    key = (id(fn), nargs)
    if _BINDS_OK.get(key) is fn:
        return
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*([None] * nargs))
    except TypeError as e:
        raise GroupError(f"{what} takes {_describe(sig)}, but would be called with "
                         f"{nargs} positional argument(s): {e}") from None
    if len(_BINDS_OK) > 10_000:  # bounded: functions come and go in long sessions
        _BINDS_OK.clear()
    _BINDS_OK[key] = fn


def _describe(sig: Any) -> str:
    # Ray adds a ``_ray_trace_ctx`` keyword to actor methods: not the user's.
    return f"({', '.join(str(p) for p in sig.parameters.values() if not p.name.startswith('_ray'))})"

