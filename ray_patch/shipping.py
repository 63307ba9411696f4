"""Functions that travel inside every call, pickled once on the driver.

An actor call that runs a function the worker does not have (``handle.__ray_call__
.remote(fn, ...)``, or a persistent executor's ``run(fn, ...)``) can pass it three ways:

- as the function itself: Ray cloudpickles it into every call (tens of microseconds of
  driver CPU per call for a closure);
- as an ``ObjectRef`` of it (``ray.put`` once): nothing is pickled per call, but the
  worker reads it from the node's object store on every call, through the raylet, and
  a copy is pulled to each node first: on a 2-core machine that cost about 3 ms of a
  batch's latency in bench/stream.py;
- as an ``Inline`` (here): the function's bytes are made once, and each call carries
  them inline in the task (Ray pickles the wrapper as ``(cloudpickle.loads, (bytes,))``,
  a memory copy). The worker unpickles a few kilobytes per call (about 10-30 us) and
  never touches the object store.

Arguments are packed for the same reason (``pack``): Ray serialises each argument of a
call on its own (about 8-15 us each on the driver), so a call's plain values travel as one
tuple and only its ``ObjectRef`` arguments stay top-level (Ray resolves those, and only
those, into values before the call runs), each distinct ref once. With 4 refs and 7
plain values an actor call cost 218-239 us of driver CPU; packed, 144-150 us.
"""
from __future__ import annotations

from typing import Any, Callable

import itertools
import threading

import ray
from ray import cloudpickle


_inline_keys = itertools.count()


class Inline:
    """``fn`` pickled once; unpickles to ``fn`` itself (not to an ``Inline``) wherever it
    is sent, so the receiver calls it as it would call ``fn``."""

    __slots__ = ("fn", "blob", "key")

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self.blob = cloudpickle.dumps(fn)
        self.key = next(_inline_keys)  # names it where it is kept (resident executors)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # when called on the driver
        return self.fn(*args, **kwargs)

    def __reduce__(self) -> tuple:
        return cloudpickle.loads, (self.blob,)

    def __repr__(self) -> str:
        return f"Inline({getattr(self.fn, '__name__', self.fn)!r}, {len(self.blob)} bytes)"


def _unpacker() -> Callable[[tuple, tuple], list]:
    # Built in a function so that cloudpickle ships it by value (no import on workers).
    def unpack(spec: tuple, refs: tuple) -> Any:
        """The arguments ``pack`` took apart: ``spec = (values, ((position, ref index),
        ...))``; ``refs``: the resolved top-level ref arguments."""
        values, slots = spec
        if not slots:
            return values
        out = list(values)
        for pos, k in slots:
            out[pos] = refs[k]
        return out
    return unpack


unpack = _unpacker()


def pack(args: tuple | list) -> tuple[tuple, list]:
    """``args`` as ``(spec, refs)``: every top-level ``ObjectRef`` (each distinct one once)
    in ``refs``, to be passed top-level; the rest in ``spec`` (one argument). A call
    ``f(spec, *refs)`` whose body runs ``unpack(spec, refs)`` sees the values as
    ``f(*args)`` would (refs nested in containers stay refs in both)."""
    ref_type = ray.ObjectRef
    values: list | None = None
    slots: list[tuple[int, int]] = []
    refs: list = []
    seen: dict = {}
    for pos, a in enumerate(args):
        if isinstance(a, ref_type):
            if values is None:
                values = list(args)
            k = seen.get(a)
            if k is None:
                k = seen[a] = len(refs)
                refs.append(a)
            slots.append((pos, k))
            values[pos] = None
    return (tuple(args) if values is None else tuple(values), tuple(slots)), refs


def _method_shim(fn: Callable[..., Any]) -> Callable[..., Any]:
    # By value, as above: ``__ray_call__`` runs it on the actor as shim(actor, spec, *refs).
    def packed_call(self: Any, spec: tuple, *refs: Any) -> Any:
        return fn(self, *unpack(spec, refs))
    packed_call.__name__ = packed_call.__qualname__ = getattr(fn, "__name__", "call")
    return packed_call


_lock = threading.Lock()
_MADE: dict[tuple[str, int], tuple[Any, Inline]] = {}


def _once(kind: str, fn: Any, make: Callable[[Any], Callable[..., Any]]) -> Inline:
    """``Inline(make(fn))``, made once per (kind, function object)."""
    with _lock:
        hit = _MADE.get((kind, id(fn)))
        if hit is None or hit[0] is not fn:
            if len(_MADE) > 10_000:  # bounded: functions come and go in long runs
                _MADE.clear()
            hit = _MADE[(kind, id(fn))] = (fn, Inline(make(fn)))
    return hit[1]


def inline(fn: Callable[..., Any]) -> Inline:
    """``fn`` pickled once (what a persistent executor's call runs)."""
    return _once("fn", fn, lambda f: f)


def packed_invoke(fn: Callable[..., Any]) -> Inline:
    """For ``handle.__ray_call__.remote(packed_invoke(fn), spec, *refs)`` with ``(spec,
    refs) = pack(args)``: runs ``fn(actor, *args)`` on the actor. Made once per ``fn``."""
    return _once("invoke", fn, _method_shim)
