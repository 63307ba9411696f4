"""IR passes that use a group's semantics, applied at evaluation under LoweringOptions.

Each pass is a switch on ``LoweringOptions`` (``None``: on under ``locality`` and off under
``vanilla`` and ``pack``, except ``preschedule``, off by default: see DEFAULT_ON;
``True``/``False`` force it). Nodes stay data: the passes only change how a node is
lowered, and results are the same as without them.

- ``fuse``: a chain of Maps, each one-to-one (num_returns=1) and consumed only by the
  next within the subtree being evaluated, runs as ONE Ray task per partition: the
  underlying Python functions (``remote_fn._function``) are composed in one task, so
  the chain's intermediate objects are never written to the object store. The last Map
  of the chain may have num_returns=k (a shuffle). The fused group is placed like any
  Map group (it depends on the chain's input group), and its group id, futures and
  ``placement()`` belong to the chain's last node. The chain's earlier Maps stay
  unevaluated: evaluated later on their own, they run again (tasks are pure).
- ``shuffle_by_node`` (grouped schedulers only): a Map with num_returns == number of
  actors feeding ReduceActors writes one object per destination NODE, holding the
  partitions of that node's actors, instead of one per actor; each actor picks its
  own. The actors are placed first (lazily, as always: by their first ReduceActors),
  from the shuffle's input objects, so their nodes are known when the shuffle is
  submitted. The shuffle node gets the group id and ``placement()`` of the shuffle
  group, but no futures of its own (its objects are per node): evaluating it on its own
  later runs it again.
- ``preschedule``: read by the micro-batch driver (``irfront.stream``, via
  ``prescheduling(opts)``): the next batch is built, placed and submitted before its
  start, its tasks gated on the start time. Nothing changes in lowering.
"""
from __future__ import annotations

import collections
from typing import Any

import ray
from ray.remote_function import RemoteFunction

from irfront import lower
from irfront.lower import Lowered, LoweringOptions, evaluate, flat_objects, register
from irfront.nodes import Map, Node, ReduceActors

SWITCHES = ("fuse", "shuffle_by_node", "preschedule")
# On by default under locality: fusion and the grouped shuffle. ``preschedule`` is not:
# it takes the driver's submission (12-30 ms per batch) off the critical path and lowers
# p50 in most runs, but in the two full runs on a quiet machine it raised p99 at 1 and
# 4 MB (617 vs 255 ms, 814 vs 543 ms; docs/BENCHMARKS.md), where without it p99 stayed
# under half of vanilla's at every size. Switch it on with preschedule=True.
DEFAULT_ON = ("fuse", "shuffle_by_node")


def enabled(opts: LoweringOptions, switch: str) -> bool:
    """Whether an optimisation is on: its field, or by default on under locality only."""
    value = getattr(opts, switch)
    if value is None:
        return opts.scheduler == "locality" and switch in DEFAULT_ON
    return bool(value)


def prescheduling(opts: LoweringOptions | None = None) -> bool:
    return enabled(opts or lower.get_options(), "preschedule")


# ---- chains ---------------------------------------------------------------------------------
def _consumers(root: Node) -> collections.Counter:
    """How many times each node (by id) is an input within the subtree of ``root``."""
    count: collections.Counter = collections.Counter()
    seen: set[int] = set()
    stack = [root]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.evaluated:  # an evaluated node's inputs are not lowered again
            continue
        for i in n.inputs:
            count[id(i)] += 1
            stack.append(i)
    return count


def fusable_chain(last: Map) -> list[Map]:
    """The longest chain of Maps ending at ``last`` that can run as one task per
    partition: every earlier member has num_returns=1, is not evaluated and is consumed
    only by the next member (within ``last``'s subtree). A one-element list otherwise."""
    chain = [last]
    uses = _consumers(last)
    cur = last
    while True:
        src = cur.objects
        if (not isinstance(src, Map) or src.num_returns != 1 or src.evaluated
                or src._freed or uses[id(src)] != 1):
            break
        chain.insert(0, src)
        cur = src
    return chain


# ---- the fused task ---------------------------------------------------------------------------
def _make_fused(fns: tuple, name: str):
    # A closure: cloudpickle ships it (and the composed functions) by value.
    def fused(x, counts, regroup, *flat):
        i = 0
        for f, c in zip(fns, counts):
            x = f(x, *flat[i:i + c])
            i += c
        if regroup is not None:  # one object per destination node
            x = tuple(tuple(x[j] for j in g) for g in regroup)
            if len(x) == 1:
                x = x[0]
        return x

    fused.__name__ = fused.__qualname__ = name
    return fused


_FUSED: dict[tuple, tuple[tuple, RemoteFunction]] = {}


def fused_function(tasks: tuple[RemoteFunction, ...]) -> RemoteFunction:
    """One remote function running ``tasks`` one after the other (cached per chain).

    Called as ``fused(x, counts, regroup, *flat_args)``: stage s gets the next
    ``counts[s]`` of ``flat_args``; ``regroup`` (or None) gathers the last stage's
    returns into one tuple per group of indices. CPUs: the largest of the chain's."""
    key = tuple(id(t) for t in tasks)
    hit = _FUSED.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], tasks)):
        return hit[1]
    name = "+".join(t._function.__name__ for t in tasks)
    cpus = max(float(t._default_options.get("num_cpus", 1) or 0) for t in tasks)
    fn = ray.remote(num_cpus=cpus)(_make_fused(tuple(t._function for t in tasks), name))
    _FUSED[key] = (tasks, fn)
    return fn


def _lower_chain(chain: list[Map], opts: LoweringOptions,
                 regroup: tuple[tuple[int, ...], ...] | None = None,
                 group_id: int | None = None) -> Lowered:
    """Lowers a chain (one or more Maps) as one group of fused tasks."""
    first, last = chain[0], chain[-1]
    base = first.objects
    objs = flat_objects(base, evaluate(base, opts, consumer=first))
    fn = fused_function(tuple(m.task for m in chain))
    calls = []
    for i, o in enumerate(objs):
        counts, flat = [], []
        for m in chain:
            a = m.args[i] if m.args is not None else ()
            counts.append(len(a))
            flat.extend(a)
        calls.append((o, tuple(counts), regroup, *flat))
    k = last.num_returns if regroup is None else len(regroup)
    dep = base.group_id
    if not opts.grouped:
        task = opts.plain(fn) if k == 1 else opts.plain(fn, num_returns=k)
        return Lowered([task.remote(*c) for c in calls], lower._new_group_id(opts), dep)
    import ray_patch
    refs = ray_patch.submit_group(fn, calls, group_id=group_id, group_dependency=dep,
                                  policy=opts.task_policy,
                                  num_returns=k if k > 1 else None,
                                  name=fn._function.__name__,
                                  max_retries=opts.task_retries)
    return Lowered(list(refs), refs.group_id, dep)


@register(Map)
def lower_map_fused(node: Map, opts: LoweringOptions) -> Lowered:
    """``lower.lower_map``, or the fused chain ending at ``node`` when ``fuse`` is on."""
    if enabled(opts, "fuse"):
        chain = fusable_chain(node)
        if len(chain) > 1:
            return _lower_chain(chain, opts)
    return lower.lower_map(node, opts)


# ---- shuffle by node --------------------------------------------------------------------------
def _pick_invoke():
    # Built here (pickled by value): actor i gets element ``pos`` of each per-node object.
    return lambda self, method, pos, n, *a: getattr(self, method)(
        [o[pos] for o in a[:n]], *a[n:])


PICK_INVOKE = _pick_invoke()


def _node_shuffle_applies(node: ReduceActors, opts: LoweringOptions) -> bool:
    src = node.objects
    return (opts.grouped and enabled(opts, "shuffle_by_node") and isinstance(src, Map)
            and node.actors.n > 1 and src.num_returns == node.actors.n
            and not src.evaluated and not src._freed)


def _actor_nodes(handles: list) -> list[int] | None:
    import ray_patch
    rt = ray_patch.get_runtime()
    nodes = [rt.actor_node.get(h._actor_id.binary()) for h in handles]
    return None if any(n is None for n in nodes) else nodes


@register(ReduceActors)
def lower_reduce_by_node(node: ReduceActors, opts: LoweringOptions) -> Lowered:
    """``lower.lower_reduce_actors``, or, with ``shuffle_by_node``: actors placed first,
    the shuffle (fused with its chain when ``fuse`` is on) writing one object per node."""
    if not _node_shuffle_applies(node, opts):
        return lower.lower_reduce_actors(node, opts)
    src: Map = node.objects
    chain = fusable_chain(src) if enabled(opts, "fuse") else [src]
    base = chain[0].objects
    base_objs = flat_objects(base, evaluate(base, opts, consumer=chain[0]))
    n = node.actors.n
    # Place the actors (if not yet) from the shuffle's inputs: each reads from every task.
    # They depend on the shuffle's group, as without this pass: its id is reserved first.
    import ray_patch
    shuffle_gid = ray_patch.new_group_id()
    handles = lower.ensure_actors(node, node.actors, opts, shuffle_gid, [base_objs] * n)
    where = _actor_nodes(handles)
    if where is None:  # actors not placed by this runtime: no node to group by
        ray_patch.free_groups([shuffle_gid])
        return lower.lower_reduce_actors(node, opts)
    by_node: dict[int, list[int]] = {}
    for i, nid in enumerate(where):
        by_node.setdefault(nid, []).append(i)
    regroup = tuple(tuple(by_node[nid]) for nid in sorted(by_node))
    pos = {}
    for g, members in enumerate(regroup):
        for p, i in enumerate(members):
            pos[i] = (g, p)
    out = _lower_chain(chain, opts, regroup, group_id=shuffle_gid)
    # The shuffle node carries the group (placement(), freeing), not per-actor futures.
    src._set_result(out.value, out.group_id, opts.scheduler, out.depends_on)
    src._value = None
    single = len(regroup) == 1
    extra = node.args or [()] * n
    calls = []
    for i in range(n):
        g, p = pos[i]
        objs = [r if single else r[g] for r in out.value]
        calls.append((node.method, p, len(objs), *objs, *extra[i]))
    refs = ray_patch.call_actors(handles, node.method, calls, group_dependency=out.group_id,
                                 invoke=PICK_INVOKE, name=f"{node.actors.name}.{node.method}")
    return Lowered(list(refs), refs.group_id, out.group_id)


def describe(opts: LoweringOptions) -> str:
    """``"fuse,shuffle_by_node"``: the switches on under ``opts`` ("-" if none)."""
    on = [s for s in SWITCHES if enabled(opts, s)]
    return ",".join(on) or "-"


def options_for(name: str) -> tuple[LoweringOptions, str]:
    """Benchmark names -> options: ``vanilla``, ``pack``, ``locality``, with suffixes
    ``-nofuse``, ``-noshuffle``, ``-noahead`` (switch off), ``+fuse``, ``+shuffle``,
    ``+ahead`` (switch on), or ``-plain`` (all off). Returns (options, name)."""
    import re
    parts = re.split(r"(?=[-+])", name.strip())
    base = parts[0]
    opts = LoweringOptions(scheduler=base)
    field = {"fuse": "fuse", "shuffle": "shuffle_by_node", "ahead": "preschedule"}
    for p in parts[1:]:
        sign, what = p[0], p[1:]
        if sign == "-" and what == "plain":
            opts = opts.replace(fuse=False, shuffle_by_node=False, preschedule=False)
            continue
        if sign == "-" and what.startswith("no"):
            what, value = what[2:], False
        elif sign == "+":
            value = True
        else:
            what = None
        if what not in field:
            raise ValueError(f"unknown scheduler variant {name!r}: {p!r}; use e.g. "
                             "locality-nofuse, locality-noshuffle, locality-noahead, "
                             "locality-plain, vanilla+fuse")
        opts = opts.replace(**{field[what]: value})
    for s in ("fuse", "shuffle_by_node", "preschedule"):
        opts = opts.replace(**{s: enabled(opts, s)})
    return opts, name
