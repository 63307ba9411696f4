"""Code that runs on Ray's workers for lowered nodes: the fused chain, and the actor-side
picks of a grouped shuffle. Built in functions so that cloudpickle ships it by value
(workers need not import irfront)."""
from __future__ import annotations

from typing import Any, Sequence

import ray
from ray.remote_function import RemoteFunction

from irfront.passes.fusion import RESOURCE_OPTIONS


def _make_fused(fns: tuple, name: str, regroup: tuple | None):
    def fused(counts, x, *flat):
        i = 0
        for f, c in zip(fns, counts):  # the 2018 convention: arguments first, object last
            x = f(*flat[i:i + c], x)
            i += c
        if regroup is not None:  # one object per destination node
            x = tuple(tuple(x[j] for j in g) for g in regroup)
            if len(x) == 1:
                x = x[0]
        return x

    fused.__name__ = fused.__qualname__ = name
    return fused


_FUSED: dict[tuple, tuple[tuple, RemoteFunction]] = {}


def fused_function(tasks: Sequence[RemoteFunction],
                   regroup: tuple[tuple[int, ...], ...] | None = None) -> RemoteFunction:
    """One remote function running ``tasks`` one after the other, called as
    ``fused(counts, x, *flat_args)``: stage s gets the next ``counts[s]`` of
    ``flat_args`` before ``x``. ``regroup`` (or None) gathers the last stage's returns
    into one tuple per group of indices; it is part of the function, not an argument
    (cached per chain and regroup: a stable placement reuses one function, and nothing
    is pickled per task). It carries the stages' resource options (fusion only joins
    stages that agree on them) and the last stage's others."""
    key = (tuple(id(t) for t in tasks), regroup)
    hit = _FUSED.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], tasks)):
        return hit[1]
    name = "+".join(t._function.__name__ for t in tasks)
    opts = {k: v for k, v in tasks[-1]._default_options.items()
            if v is not None and k not in ("num_returns", "name")}
    for k in RESOURCE_OPTIONS:
        v = tasks[0]._default_options.get(k)
        if v is not None:
            opts[k] = v
    body = _make_fused(tuple(t._function for t in tasks), name, regroup)
    fn = ray.remote(**opts)(body) if opts else ray.remote(body)
    _FUSED[key] = (tuple(tasks), fn)
    return fn


def _pick_invoke():
    # actor.__ray_call__(PICK, method, pos, nargs, *args, *per_node_objects): actor gets
    # element ``pos`` of each of its node's objects.
    def pick(self, method, pos, nargs, *a):
        return getattr(self, method)(*a[:nargs], *[o[pos] for o in a[nargs:]])
    return pick


PICK = _pick_invoke()
_PICK_REFS: dict[str, ray.ObjectRef] = {}


def pick_ref() -> ray.ObjectRef:
    """PICK in the object store, once per Ray job: an actor call then passes a reference
    instead of pickling the function into every call."""
    job = ray.get_runtime_context().get_job_id()
    ref = _PICK_REFS.get(job)
    if ref is None:
        ref = _PICK_REFS[job] = ray.put(PICK)
    return ref
