"""The hooks in Ray that inference needs, installed once per process.

Patched: ``RemoteFunction._remote`` (``f.remote()`` and ``f.options(...).remote()`` both
end there), ``RemoteFunction.options`` (while recording, a light wrapper that validates
the options as Ray does but builds no wrapper class per call), ``ActorClass._remote`` (actor creation, with or without options),
``ActorMethod._remote`` (methods of real handles), and the module functions ``ray.get``,
``ray.wait``, ``ray.kill``, ``ray.cancel`` and ``time.sleep`` (evaluation points).

Each hook asks ``route()`` for the calling thread's recording session. Without one (any
other thread, a worker, irfront's own submissions while a session evaluates) the call goes
to Ray unchanged, except that deferred values in its arguments are resolved first: a
deferred reference kept past its block still means its object. The hooks stay installed
once inference has been used, so that holds for references kept after the block too.
"""
from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from typing import Any, Callable

import ray
from ray.actor import ActorClass, ActorMethod
from ray.remote_function import RemoteFunction

from irfront.inference.quiet import is_quiet
from irfront.inference.refs import has_deferred, realise
from irfront.lowering.options import lowering_options
from ray_patch.ray_private import merged_task_options

_local = threading.local()
_lock = threading.Lock()
ORIGINAL: dict[str, Callable] = {}


def route() -> Any:
    """The calling thread's recording session, or None (not recording, suspended, or
    irfront's own calls: ``quiet``)."""
    s = getattr(_local, "session", None)
    return s if s is not None and not s.suspended and not is_quiet() else None


def current() -> Any:
    """The calling thread's session, suspended or not."""
    return getattr(_local, "session", None)


def set_current(session: Any) -> None:
    _local.session = session


def _plain_args(args: Any, kwargs: Any) -> tuple[Any, Any]:
    if args and has_deferred(args):
        args = realise(tuple(args))
    if kwargs and has_deferred(kwargs):
        kwargs = realise(dict(kwargs))
    return args, kwargs


def _task_remote(self, args=None, kwargs=None, **options):
    s = route()
    if s is not None:
        return s.task(self, tuple(args or ()), dict(kwargs or {}), options)
    args, kwargs = _plain_args(args, kwargs)
    return ORIGINAL["task"](self, args=args, kwargs=kwargs, **options)


class _RecordedOptions:
    """What ``f.options(...)`` returns while recording: ``.remote()`` goes to the session
    with the merged, validated options; ``.bind()`` (Ray's DAG API) is Ray's own."""

    __slots__ = ("fn", "options", "merged")

    def __init__(self, fn: RemoteFunction, options: dict):
        self.fn, self.options = fn, options
        self.merged = merged_task_options(fn, options)

    def remote(self, *args, **kwargs):
        s = route()
        if s is None:
            return ORIGINAL["options"](self.fn, **self.options).remote(*args, **kwargs)
        return s.task(self.fn, args, kwargs, dict(self.merged))

    def bind(self, *args, **kwargs):
        return ORIGINAL["options"](self.fn, **self.options).bind(*args, **kwargs)


def _task_options(self, **options):
    if route() is None or "runtime_env" in options:
        return ORIGINAL["options"](self, **options)
    return _RecordedOptions(self, options)


def _actor_remote(self, args=None, kwargs=None, **options):
    s = route()
    if s is not None:
        return s.actor(self, tuple(args or ()), dict(kwargs or {}), options)
    args, kwargs = _plain_args(args, kwargs)
    return ORIGINAL["actor"](self, args=args, kwargs=kwargs, **options)


def _method_remote(self, args=None, kwargs=None, **options):
    s = route()
    if s is not None:
        s.before_plain("a method of an actor created outside irfront.infer", args, kwargs,
                       actor_call=True)
    args, kwargs = _plain_args(args, kwargs)
    return ORIGINAL["method"](self, args, kwargs, **options)


def _evaluation_point(what: str) -> None:
    s = route()
    if s is not None and s.pending:
        s.flush(what)


def _get(object_refs, *args, **kwargs):
    _evaluation_point("ray.get")
    return ORIGINAL["get"](realise(object_refs, 1), *args, **kwargs)


def _wait(object_refs, *args, **kwargs):
    _evaluation_point("ray.wait")
    if not has_deferred(object_refs, 1):
        return ORIGINAL["wait"](object_refs, *args, **kwargs)
    real = [realise(r, 0) for r in object_refs]
    back = {r: o for r, o in zip(real, object_refs)}
    ready, rest = ORIGINAL["wait"](real, *args, **kwargs)
    return [back[r] for r in ready], [back[r] for r in rest]


def _kill(actor, *args, **kwargs):
    _evaluation_point("ray.kill")
    return ORIGINAL["kill"](realise(actor, 0), *args, **kwargs)


def _cancel(ref, *args, **kwargs):
    # About to be cancelled: lowered as Ray tasks, not as calls to a persistent executor
    # (an actor call that has started cannot be cancelled).
    with lowering_options(executors=False) if has_deferred(ref, 0) else nullcontext():
        _evaluation_point("ray.cancel")
    return ORIGINAL["cancel"](realise(ref, 0), *args, **kwargs)


def _sleep(seconds):
    _evaluation_point("time.sleep")
    return ORIGINAL["sleep"](seconds)


def install() -> None:
    """Installs the hooks (once; later calls do nothing)."""
    with _lock:
        if ORIGINAL:
            return
        ORIGINAL.update(task=RemoteFunction._remote, options=RemoteFunction.options,
                        actor=ActorClass._remote,
                        method=ActorMethod._remote, get=ray.get, wait=ray.wait,
                        kill=ray.kill, cancel=ray.cancel, sleep=time.sleep)
        RemoteFunction._remote = _task_remote
        RemoteFunction.options = _task_options
        ActorClass._remote = _actor_remote
        ActorMethod._remote = _method_remote
        ray.get, ray.wait, ray.kill, ray.cancel = _get, _wait, _kill, _cancel
        time.sleep = _sleep


def uninstall() -> None:
    """Puts Ray's own functions back (tests; deferred values kept afterwards must be
    resolved by hand)."""
    with _lock:
        if not ORIGINAL:
            return
        RemoteFunction._remote = ORIGINAL["task"]
        RemoteFunction.options = ORIGINAL["options"]
        ActorClass._remote = ORIGINAL["actor"]
        ActorMethod._remote = ORIGINAL["method"]
        ray.get, ray.wait = ORIGINAL["get"], ORIGINAL["wait"]
        ray.kill, ray.cancel = ORIGINAL["kill"], ORIGINAL["cancel"]
        time.sleep = ORIGINAL["sleep"]
        ORIGINAL.clear()
