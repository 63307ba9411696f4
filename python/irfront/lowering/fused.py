"""Code that runs on Ray's workers for lowered nodes: the fused chain, and the actor-side
picks of a grouped shuffle. Built in functions so that cloudpickle ships it by value
(workers need not import irfront)."""
from __future__ import annotations

from typing import Any, Sequence

import ray
from ray.remote_function import RemoteFunction


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


_CACHE: dict[tuple, tuple[tuple, RemoteFunction]] = {}


def _remote_for_chain(kind: str, tasks: Sequence[RemoteFunction], regroup: tuple | None,
                      make: Any, suffix: str = "",
                      options: dict[str, Any] | None = None, *extra: Any) -> RemoteFunction:
    """``make(functions, name, regroup, *extra)`` as a remote function, cached per kind,
    chain, regroup, options and ``extra`` (a stable placement reuses one function:
    nothing is pickled per task). It carries ``options``: the last stage's effective
    options (its function's own with an ``f.options(...)`` wrapper's on top; default:
    the function's own). Fusion only joins stages with equal resource options, so those
    are every stage's."""
    if options is None:
        options = tasks[-1]._default_options
    opts = {k: v for k, v in options.items()
            if v is not None and k not in ("num_returns", "name")}
    key = (kind, tuple(id(t) for t in tasks), regroup,
           tuple(sorted((k, repr(v)) for k, v in opts.items())), tuple(map(id, extra)))
    hit = _CACHE.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], (*tasks, *extra))):
        return hit[1]
    name = "+".join(t._function.__name__ for t in tasks) + suffix
    body = make(tuple(t._function for t in tasks), name, regroup, *extra)
    fn = ray.remote(**opts)(body) if opts else ray.remote(body)
    _CACHE[key] = ((*tasks, *extra), fn)
    return fn


def fused_function(tasks: Sequence[RemoteFunction],
                   regroup: tuple[tuple[int, ...], ...] | None = None,
                   options: dict[str, Any] | None = None) -> RemoteFunction:
    """One remote function running ``tasks`` one after the other, called as
    ``fused(counts, x, *flat_args)``: stage s gets the next ``counts[s]`` of
    ``flat_args`` before ``x``. ``regroup`` (or None) gathers the last stage's returns
    into one tuple per group of indices. ``options``: the task options it carries (see
    ``_remote_for_chain``)."""
    return _remote_for_chain("fused", tasks, regroup, _make_fused, options=options)


def _make_node_task(fns: tuple, name: str, regroup: tuple, combine: Any = None):
    def node_task(counts, *flat):
        # counts[p][s]: stage s's argument count for the node's partition p; ``flat`` is,
        # per partition, its object then its stages' arguments.
        outs = [[] for _ in regroup]
        i = 0
        for per_stage in counts:
            x = flat[i]
            i += 1
            for f, c in zip(fns, per_stage):
                x = f(*flat[i:i + c], x)
                i += c
            for g, members in enumerate(regroup):
                if combine is None:
                    outs[g].append(tuple(x[j] for j in members))
                elif not outs[g]:
                    outs[g] = [x[j] for j in members]
                else:  # one partial per destination actor, merged over the partitions
                    acc = outs[g]
                    for p, j in enumerate(members):
                        acc[p] = combine(acc[p], x[j])
        if combine is None:
            # per destination node: one piece per partition, each a tuple of its
            # actors' pieces
            res = tuple(tuple(o) for o in outs)
        else:  # one group per actor: its merged piece itself
            res = tuple(o[0] for o in outs)
        return res if len(res) > 1 else res[0]

    node_task.__name__ = node_task.__qualname__ = name
    return node_task


def node_task_function(tasks: Sequence[RemoteFunction],
                       regroup: tuple[tuple[int, ...], ...],
                       options: dict[str, Any] | None = None,
                       combine: Any = None) -> RemoteFunction:
    """One remote function that runs the chain ``tasks`` for every partition a node holds
    and returns one object per destination node group of ``regroup``: the node's pieces
    for that group, one per partition; with ``combine`` (ReduceActors' declared merge),
    ``regroup`` has one group per actor, ``((0,), (1,), ...)``, and each object is that
    actor's piece merged over the node's partitions."""
    if combine is None:
        return _remote_for_chain("node", tasks, regroup, _make_node_task, "@node", options)
    return _remote_for_chain("node", tasks, regroup, _make_node_task, "@node+combine",
                             options, combine)


def _pick_invoke():
    # actor.__ray_call__(PICK, method, pos, nargs, *args, *per_node_objects): actor gets
    # element ``pos`` of each of its node's objects.
    def pick(self, method, pos, nargs, *a):
        return getattr(self, method)(*a[:nargs], *[o[pos] for o in a[nargs:]])
    return pick


def _pick_ordered_invoke():
    # actor.__ray_call__(PICK_ORDERED, method, pos, nargs, order, *args, *node_objects):
    # each node object holds one piece per partition of that node; the actor takes
    # element ``pos`` of every piece, and puts the pieces back in partition order.
    def pick_ordered(self, method, pos, nargs, order, *a):
        got = [piece[pos] for o in a[nargs:] for piece in o]
        ordered = [None] * len(got)
        for k, p in enumerate(order):
            ordered[p] = got[k]
        return getattr(self, method)(*a[:nargs], *ordered)
    return pick_ordered


# ray_patch.call_actors ships them pickled once, inside each call (ray_patch.shipping).
PICK = _pick_invoke()
PICK_ORDERED = _pick_ordered_invoke()
