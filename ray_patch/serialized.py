"""Plain actors behind a resident channel keep Ray's one-method-at-a-time contract.

A reducer of the resident path gets pieces on a channel thread as well as Ray's method
calls. An exactly-once reducer (``CheckpointedReducer``) holds its lock in every method.
A plain actor class that runs one method at a time (Ray's default) is created from a
*locked twin* instead (``serialized_class``): the same class with every method run under
the actor's ``_irf_lock``, the lock a channel frame takes. Only actors made from a twin
(``mark_serialized``), or of a class that allows concurrency, take pieces on a channel
(``channel_safe``); an async class never does.
"""
from __future__ import annotations

import inspect
import threading
from typing import Any, Sequence

import ray

from ray_patch import channel
from ray_patch.lru import LRU
from ray_patch.runtime import current_runtime, get_runtime

_lock = threading.Lock()

# id(user's ActorClass) -> (it, its locked twin, channel-safe): per process, as classes
# are; the actors made from a twin are the runtime's ("serialized_actors" table)
_SERIALIZED: dict[int, Any] = {}


def _wants_lock(body: type, options: dict) -> bool:
    return int(options.get("max_concurrency") or 1) <= 1 and not _is_async(body)


def _is_async(body: type) -> bool:
    return any(inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f)
               for _, f in inspect.getmembers(body, inspect.isfunction))


def serialized_class(actor_cls: Any) -> Any:
    """For a plain actor class that runs one method at a time (Ray's default): the same
    class with every method run under the actor's ``_irf_lock`` (the lock a channel
    frame takes), so the resident path's pieces never run beside a method Ray runs.
    The class itself where it allows concurrency, is async, or cannot be subclassed."""
    with _lock:
        hit = _SERIALIZED.get(id(actor_cls))
        if hit is not None and hit[0] is actor_cls:
            return hit[1]
    modified = actor_cls.__ray_metadata__.modified_class
    body = getattr(modified, "__ray_actor_class__", modified)
    options = dict(actor_cls._default_options)
    twin = actor_cls
    if _wants_lock(body, options):
        methods = {name: channel.locked(fn) for name, fn in inspect.getmembers(
            body, inspect.isfunction) if not name.startswith("__")
            and not inspect.isgeneratorfunction(fn)}
        try:
            cls = type(body.__name__, (body,), methods)
        except TypeError:  # a metaclass or __init_subclass__ that refuses it
            cls = None
        if cls is not None:
            cls.__qualname__, cls.__module__ = body.__qualname__, body.__module__
            cls.__doc__ = body.__doc__
            twin = ray.remote(**options)(cls) if options else ray.remote(cls)
    # a channel is safe on its actors: locked, or a class that allows concurrency
    ok = twin is not actor_cls or not (_wants_lock(body, options) or _is_async(body))
    with _lock:
        if len(_SERIALIZED) > 1024:
            _SERIALIZED.clear()
        _SERIALIZED[id(actor_cls)] = (actor_cls, twin, ok)
    return twin


def mark_serialized(actor_cls: Any, handles: Sequence[Any]) -> None:
    """Records that ``handles`` were made from ``serialized_class``'s twin (or from a
    class that allows concurrency): a channel may apply pieces on them."""
    with _lock:
        hit = _SERIALIZED.get(id(actor_cls))
        if hit is None or hit[0] is not actor_cls or not hit[2]:
            return
        made = _serialized_actors(get_runtime())
        for h in handles:
            made[h._actor_id.binary()] = True


def channel_safe(actor_cls: Any, handles: Sequence[Any], checkpointed: bool) -> bool:
    """Whether pieces may reach these actors on a channel: exactly-once reducers (every
    method locked), or plain actors made by ``serialized_class``. An async class never:
    Ray awaits its methods on the actor's own event loop."""
    body = actor_cls.__ray_metadata__.modified_class
    if _is_async(body):
        return False
    if checkpointed:
        return True
    rt = current_runtime()
    if rt is None:
        return False
    with _lock:
        made = _serialized_actors(rt)
        return all(h._actor_id.binary() in made for h in handles)


def _serialized_actors(rt: Any) -> LRU:
    """The actors of this runtime made from a locked twin (bounded: one that falls out
    only loses the channel, its pieces go through Ray)."""
    return rt.table("serialized_actors", 100_000)
