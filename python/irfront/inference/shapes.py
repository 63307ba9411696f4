"""The shape of a recorded task call: where its one object is, and what runs it as a Map.

The IR calls a Map's task as ``task(*args[i], objects[i])``: the object last, positional.
Real code puts its reference anywhere (``predict.remote(model_ref, batch)``,
``f.remote(x=ref, scale=2)``) and passes options (``f.options(num_cpus=0.5)``). A call is
read as

    lead: every argument but the object, positional ones first, then keyword values
    obj:  the one reference; with no reference, the last argument (a plain value: a
          stage over plain values, ``[f.remote(i) for i in range(n)]``)
    shape: (the object's place: an index or a keyword, the positional count, the
          keyword names)

A call with several references, all of them its last positional arguments
(``add.remote(a, b)``, ``f.remote(*refs)``), is a join: ``obj`` is a ``JoinRefs`` of
them, read as the IR's ``Join`` calls its task (``task(*args[i], *picked)``). Other
places of several references run plainly.

A call whose shape is not the IR's runs as a ``reshaped`` remote function: the same
Python function behind a thin wrapper that puts the arguments back where the program
put them. The wrapper carries the function's name, so Ray names its tasks as the
program's (``ray::predict()``), and the function's own ``@ray.remote`` options; the
call's ``.options(...)`` are applied on top (``task_for``).
"""
from __future__ import annotations

import functools
from typing import Any

import ray
from ray.remote_function import RemoteFunction

from irfront.inference.refs import DeferredActor, DeferredRef, holds_ref

_REF_TYPES = (DeferredRef, ray.ObjectRef)
_CONTAINERS = (list, tuple, dict, set, frozenset)

# Task options a recorded call may carry: the core places such groups (resources), or
# Ray does with the group unpinned (a scheduling strategy or placement group), and the
# rest change nothing the IR models. Others (a runtime_env, a name, _metadata...) run
# the call plainly.
TASK_OPTIONS = frozenset({"num_returns", "num_cpus", "num_gpus", "resources", "memory",
                          "accelerator_type", "max_retries", "retry_exceptions",
                          "scheduling_strategy", "placement_group",
                          "placement_group_bundle_index",
                          "placement_group_capture_child_tasks"})

IR_SHAPE = "ir"  # the object last and positional, no keywords: the task as it is


class JoinRefs(tuple):
    """A join's references (``read_call``'s ``obj`` for a call with several): its last
    positional arguments, in order."""

    __slots__ = ()


def read_call(args: tuple, kwargs: dict) -> tuple[str, tuple, Any, bool, Any]:
    """(why not a Map call or "", lead, obj, whether obj is a reference, shape)."""
    ref_at = None
    refs: list = []  # every reference's place
    # positional places are indices, keyword places their names
    for at, a in [*enumerate(args), *kwargs.items()]:
        why = _plain_value(a)
        if why == "ref":
            refs.append(at)
            ref_at = at
        elif why:
            return why, (), None, False, None
    if len(refs) > 1:  # a join: its references last and positional
        first = len(args) - len(refs)
        if kwargs or refs != list(range(first, len(args))):
            return ("a join whose references are not its last positional arguments "
                    "(a Join's task takes them last)"), (), None, False, None
        return "", args[:first], JoinRefs(args[first:]), True, IR_SHAPE
    is_ref = ref_at is not None
    if ref_at is None:  # a stage over plain values: the last argument is the object
        if args:
            ref_at = len(args) - 1
        elif kwargs:
            ref_at = next(reversed(kwargs))
        else:
            return "no arguments", (), None, False, None
    names = tuple(kwargs)
    if isinstance(ref_at, int):
        obj = args[ref_at]
        lead = args[:ref_at] + args[ref_at + 1:] + tuple(kwargs.values())
    else:
        obj = kwargs[ref_at]
        lead = args + tuple(v for k, v in kwargs.items() if k != ref_at)
    shape = IR_SHAPE if ref_at == len(args) - 1 and not kwargs else (ref_at, len(args),
                                                                       names)
    return "", lead, obj, is_ref, shape


def _plain_value(a: Any) -> str:
    """"ref" for a reference, a reason for what a Map argument cannot be, "" for a
    plain value."""
    t = type(a)
    if t in _REF_TYPES:
        return "ref"
    if t is DeferredActor:
        return "an actor being created among its arguments"
    if t in _CONTAINERS and holds_ref(a):
        return "references inside containers"
    return ""


def reshape(fn: Any, shape: Any) -> Any:
    """``fn``'s Python function called as the program called it, from ``(*lead, obj)``."""
    ref_at, n_pos, names = shape
    rest = tuple(k for k in names if k != ref_at)
    n_lead_pos = n_pos - 1 if isinstance(ref_at, int) else n_pos

    @functools.wraps(fn)
    def call(*a: Any) -> Any:
        obj, lead = a[-1], a[:-1]
        pos = list(lead[:n_lead_pos])
        kw = dict(zip(rest, lead[n_lead_pos:]))
        if isinstance(ref_at, int):
            pos.insert(ref_at, obj)
        else:
            kw[ref_at] = obj
        return fn(*pos, **kw)

    del call.__wrapped__  # Ray reads the signature: this one takes (*lead, obj)
    return call


_CACHE: dict[tuple, tuple[RemoteFunction, RemoteFunction]] = {}
_CACHE_MAX = 1024


def task_for(fn: RemoteFunction, shape: Any, options: dict) -> Any:
    """What a Map over calls of ``fn`` of this shape and these options runs: ``fn``
    itself, or its reshaped twin (one per function and shape), with ``.options(...)``
    when the call had any (called while a session evaluates: Ray's own options)."""
    if shape != IR_SHAPE:
        key = (id(fn), shape)
        hit = _CACHE.get(key)
        if hit is None or hit[0] is not fn:
            if len(_CACHE) >= _CACHE_MAX:
                _CACHE.clear()
            body = reshape(fn._function, shape)
            own = {k: v for k, v in fn._default_options.items() if v is not None}
            twin = ray.remote(**own)(body) if own else ray.remote(body)
            hit = _CACHE[key] = (fn, twin)
        fn = hit[1]
    return fn.options(**options) if options else fn


def options_key(options: dict) -> tuple:
    """A hashable, value-based key of task options (two ``NodeAffinity...(node)``
    objects for one node are the same options)."""
    return tuple(sorted((k, _value_key(v)) for k, v in options.items()))


def _value_key(v: Any) -> Any:
    if isinstance(v, dict):
        return tuple(sorted((str(k), _value_key(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_value_key(x) for x in v)
    if hasattr(v, "__dict__") and not callable(v):
        return (type(v).__name__, tuple(sorted((k, _value_key(x)) for k, x in
                                               vars(v).items())))
    try:
        hash(v)
        return v
    except TypeError:
        return repr(v)
