"""One lowering function per node kind: ``lower_x(node, ctx) -> Lowered``.

Each submits through ``ctx.submitter`` (vanilla or grouped, chosen once per evaluation),
so none of them branches on the scheduler. The calling conventions are the IR's
(irfront/ir/nodes.py): arguments first, the object(s) last.
"""
from __future__ import annotations

from typing import Any, Sequence

import ray

import ray_patch.serialized as serialized_
from irfront.errors import IRError
from irfront.ir.nodes import (Broadcast, FusedMap, GroupedShuffle, InitActors, Join,
                              Map, MapActors, Node, Objects, ReduceActors)
from irfront.ir.reducers import REDUCER_OPTIONS
from irfront.lowering.context import Lowered, LoweringContext, ReducerCall
from irfront.lowering.fused import PICK, PICK_ORDERED, fused_function, node_task_function
from irfront.lowering.resident import lower_resident


def flat_objects(src: Node, value: list) -> list:
    """The objects a consumer of ``src`` gets: num_returns=k tasks give k each."""
    if isinstance(src, (Map, FusedMap, Join)) and src.num_returns > 1:
        return [r for refs in value for r in refs]
    return list(value)


# ---- sources --------------------------------------------------------------------------------
def lower_objects(node: Objects, ctx: LoweringContext) -> Lowered:
    """The objects as refs, values put into the object store. Inside a stream driver
    on the resident path, values stay values: the tasks that read them get them as
    arguments (a resident executor in its feed's frame, straight from the driver; a
    Ray task through Ray, which puts a large one itself), so a batch's new data is not
    put and then read back. ``eval()`` of such a node gives those values, as of an
    ``inline`` one (plain values a program passed to ``.remote()``, under infer)."""
    if node.inline or (ctx.results.call_log is not None
                       and ctx.options.enabled("resident")):
        return Lowered(list(node.objects), ctx.submitter.new_group())
    refs = [o if isinstance(o, ray.ObjectRef) else ray.put(o) for o in node.objects]
    return Lowered(refs, ctx.submitter.new_group())


def lower_broadcast(node: Broadcast, ctx: LoweringContext) -> Lowered:
    gid = ctx.submitter.new_group()
    refs = ctx.submitter.tasks(node.task, [node.args], group_id=gid, depends_on=None)
    return Lowered([refs[0]] * node.n, gid)


# ---- maps -----------------------------------------------------------------------------------
def submit_chain(ctx: LoweringContext, chain: Sequence[Map], src: Node,
                 regroup: tuple[tuple[int, ...], ...] | None = None,
                 group_id: int | None = None) -> Lowered:
    """One group of tasks, one per object of ``src``, running ``chain`` (one Map, or a
    fused chain); with ``regroup``, the last stage's returns gathered per group."""
    base = ctx.lowered(src)
    objs = flat_objects(src, base.value)
    if len(chain) == 1 and regroup is None:
        m = chain[0]
        fn, name = m.task, None
        calls = [(*m.arg(i), o) for i, o in enumerate(objs)]
    else:
        fn = fused_function([m.function for m in chain], regroup, chain[-1].ray_options)
        name = fn._function.__name__
        calls = []
        for i, o in enumerate(objs):
            args = [m.arg(i) for m in chain]
            calls.append((tuple(len(a) for a in args), o, *(x for a in args for x in a)))
    k = chain[-1].num_returns if regroup is None else len(regroup)
    gid = ctx.submitter.new_group() if group_id is None else group_id
    refs = ctx.submitter.tasks(fn, calls, group_id=gid, depends_on=base.group_id,
                               num_returns=k, name=name)
    return Lowered(refs, gid, base.group_id)


def lower_map(node: Map, ctx: LoweringContext) -> Lowered:
    return submit_chain(ctx, (node,), node.objects)


def lower_fused_map(node: FusedMap, ctx: LoweringContext) -> Lowered:
    return submit_chain(ctx, node.chain, node.objects)


def lower_join(node: Join, ctx: LoweringContext) -> Lowered:
    """One group of tasks, task i reading the objects it picks (placed with them)."""
    base = ctx.lowered(node.objects)
    objs = flat_objects(node.objects, base.value)
    calls = [(*node.arg(i), *[objs[j] for j in p]) for i, p in enumerate(node.picks)]
    gid = ctx.submitter.new_group()
    refs = ctx.submitter.tasks(node.task, calls, group_id=gid, depends_on=base.group_id,
                               num_returns=node.num_returns)
    return Lowered(refs, gid, base.group_id)


# ---- actors ---------------------------------------------------------------------------------
def _actor_options(actors: InitActors) -> dict[str, Any]:
    """The node's ``Cls.options(...)``; exactly-once reducers are restarted by Ray and
    re-sent calls by the driver, unless the class or the node set those options."""
    if not actors.checkpointed:
        return dict(actors.actor_options)
    own = actors.ray_options
    return {**actors.actor_options,
            **{k: v for k, v in REDUCER_OPTIONS.items() if own.get(k) is None}}


def ensure_actors(ctx: LoweringContext, actors: InitActors, consumer: Node | None,
                  depends_on: int | None, inputs: list[list] | None) -> list:
    """The actors' handles; the first consumer places them, with its data and group."""
    if id(actors) in ctx.local or ctx.results.done(actors):
        return ctx.value(actors)  # raises if freed
    gid = ctx.submitter.new_group()
    directory = ctx.results.actor_directory
    durable = directory.find(actors) if directory is not None and actors.checkpointed \
        else None
    if durable is not None and durable.handles is not None:
        handles = list(durable.handles)  # a durable stream's actors, found alive
    else:
        opts, names = _actor_options(actors), None
        if durable is not None:  # named, detached: they outlive this driver
            opts = {**opts, "lifetime": "detached", "namespace": durable.namespace}
            names = durable.names
        cls = actors.actor_cls
        if ctx.options.enabled("resident") and not actors.checkpointed:
            # its methods locked, so a resident channel never runs beside one
            cls = serialized_.serialized_class(cls)
        try:
            handles = ctx.submitter.actors(
                cls, [actors.arg(i) for i in range(actors.n)], group_id=gid,
                depends_on=depends_on, inputs=inputs, actor_options=opts, names=names)
        except ValueError as e:
            by = f" (placing for {consumer.label})" if consumer is not None else ""
            raise IRError(actors.label, f"{e}{by}") from e
        if ctx.options.enabled("resident") and not actors.checkpointed:
            serialized_.mark_serialized(actors.actor_cls, handles)
    if durable is not None:
        ctx.results.set_next_seq(actors, durable.next_seq)
        directory.started(actors, handles)
    out = Lowered(handles, gid, depends_on)
    ctx.local[id(actors)] = out
    ctx.results.record(actors, out, ctx.submitter)
    return handles


def lower_init_actors(node: InitActors, ctx: LoweringContext) -> Lowered:
    """Evaluated on its own (no consumer yet): placed with no data to follow."""
    ensure_actors(ctx, node, None, None, None)
    return ctx.local[id(node)]


def call_actors(ctx: LoweringContext, node: ReduceActors | MapActors, handles: list,
                calls: list[tuple], depends_on: int | None, picks: list | None = None,
                order: tuple[int, ...] | None = None) -> Lowered:
    """``node.method`` on every actor: actor i gets ``*calls[i]``. With ``picks``
    (position, number of leading arguments) per actor, ``calls[i]`` ends with per-node
    objects from which the actor takes element ``position`` each; with ``order`` too,
    each object holds one piece per partition and ``order`` gives the partition of each
    piece, in the order they arrive. Exactly-once reducers get ``apply_batch(seq,
    method, ...)`` and the calls are logged for replay."""
    actors, method = node.actors, node.method
    seq = None
    if actors.checkpointed:
        seq = ctx.results.next_seq(actors)
        calls = [(seq, method, *c) for c in calls]
        method = "apply_batch"
        if picks is not None:
            picks = [(p, nargs + 2) for p, nargs in picks]
    invoke = None
    if picks is not None and order is not None:
        invoke = PICK_ORDERED
        calls = [(method, p, nargs, order, *c) for (p, nargs), c in zip(picks, calls)]
    elif picks is not None:
        invoke = PICK
        calls = [(method, p, nargs, *c) for (p, nargs), c in zip(picks, calls)]
    gid = ctx.submitter.new_group()
    refs = ctx.submitter.actor_calls(handles, method, calls, group_id=gid,
                                     depends_on=depends_on, invoke=invoke,
                                     name=f"{actors.name}.{node.method}")
    log = ctx.results.call_log
    if seq is not None and log is not None:
        for i, (c, ref) in enumerate(zip(calls, refs)):
            log.append(ReducerCall(actors, i, seq, method, c, invoke, ref))
    return Lowered(refs, gid, depends_on)


def reduce_inputs(node: ReduceActors, value: list) -> list[list]:
    """The objects each actor gets: the i-th return of every task of a shuffle with one
    return per actor, else every object."""
    if node.shuffled:
        return [[refs[i] for refs in value] for i in range(node.actors.n)]
    objs = flat_objects(node.objects, value)
    return [objs] * node.actors.n


def lower_reduce_actors(node: ReduceActors, ctx: LoweringContext) -> Lowered:
    src = ctx.lowered(node.objects)
    per_actor = reduce_inputs(node, src.value)
    handles = ensure_actors(ctx, node.actors, node, src.group_id, per_actor)
    calls = [(*node.arg(i), *objs) for i, objs in enumerate(per_actor)]
    return call_actors(ctx, node, handles, calls, src.group_id)


def lower_map_actors(node: MapActors, ctx: LoweringContext) -> Lowered:
    src = ctx.lowered(node.objects)
    objs = flat_objects(node.objects, src.value)
    handles = ensure_actors(ctx, node.actors, node, src.group_id, [[o] for o in objs])
    calls = [(*node.arg(i), o) for i, o in enumerate(objs)]
    return call_actors(ctx, node, handles, calls, src.group_id)


def lower_grouped_shuffle(node: GroupedShuffle, ctx: LoweringContext) -> Lowered:
    """Actors placed first (from the shuffle's inputs: each reads from every task), then
    the shuffle writing one object per actor node, then the actors' calls."""
    red, shuffle = node.reduce, node.shuffle
    chain = shuffle.chain if isinstance(shuffle, FusedMap) else (shuffle,)
    n = red.actors.n
    base_objs = flat_objects(shuffle.objects, ctx.value(shuffle.objects))
    gid = ctx.submitter.new_group()  # the shuffle's: the actors depend on it
    handles = ensure_actors(ctx, red.actors, red, gid, [base_objs] * n)
    where = ctx.submitter.actor_nodes(handles)
    if where is None:  # actors not placed by this submitter: one object per actor
        out = submit_chain(ctx, chain, shuffle.objects, group_id=gid)
        calls = [(*red.arg(i), *[refs[i] for refs in out.value]) for i in range(n)]
        res = call_actors(ctx, red, handles, calls, gid)
    else:
        res = _shuffle_by_node(ctx, red, chain, shuffle.objects, handles, where, gid)
    # The shuffle's own node carries the group (placement(), freeing), not futures.
    ctx.results.record(shuffle.replaces or shuffle,
                       Lowered(None, gid, ctx.group_of(shuffle.objects)), ctx.submitter)
    return res


def _shuffle_by_node(ctx: LoweringContext, red: ReduceActors, chain: Sequence[Map],
                     src: Node, handles: list, where: list[int], gid: int) -> Lowered:
    """The shuffle writes one object per actor node (with ``batch_tasks``: one task per
    source node, too; or, when the reduce declares ``combine``, one merged partial per
    actor); each actor picks its pieces."""
    batch = ctx.options.enabled("batch_tasks")
    if batch and red.combine is not None and ctx.options.enabled("combine"):
        res = _combined_per_node(ctx, red, chain, src, handles, gid, red.combine)
        if res is not None:
            return res
    by_node: dict[int, list[int]] = {}
    for i, nid in enumerate(where):
        by_node.setdefault(nid, []).append(i)
    regroup = tuple(tuple(by_node[k]) for k in sorted(by_node))
    slot = {i: (g, p) for g, members in enumerate(regroup) for p, i in enumerate(members)}
    single = len(regroup) == 1
    per_node = shuffle_per_node(ctx, chain, src, regroup, gid) if batch else None
    order = None
    if per_node is not None:  # one object per (source node, destination node)
        sources = [refs for _, refs in per_node.values()]
        # a piece per partition: put back in partition order
        order = tuple(i for idx, _ in per_node.values() for i in idx)
    else:  # one object per (partition, destination node)
        sources = submit_chain(ctx, chain, src, regroup, group_id=gid).value
    calls, picks = [], []
    for i in range(red.actors.n):
        g, p = slot[i]
        calls.append((*red.arg(i), *[r if single else r[g] for r in sources]))
        picks.append((p, len(red.arg(i))))
    return call_actors(ctx, red, handles, calls, gid, picks, order)


def _combined_per_node(ctx: LoweringContext, red: ReduceActors, chain: Sequence[Map],
                       src: Node, handles: list, gid: int, combine: Any
                       ) -> Lowered | None:
    """The shuffle run per node, merging its partitions' pieces per actor (the reduce's
    declared ``combine``): one small object per (source node, actor), and each actor's
    call is a plain method call with one partial per source node (no pick). None when
    the submitter does not run tasks per node (nothing submitted then)."""
    n = red.actors.n
    regroup = tuple((i,) for i in range(n))
    if ctx.options.enabled("resident") and ctx.results.call_log is not None:
        # the resident path (lowering/resident.py): executors feed the reducers
        base, fn, calls, node_call = _node_work(ctx, chain, src, regroup, combine)
        res = lower_resident(ctx, red, fn, calls, node_call, handles, gid, base.group_id)
        if res is not None:
            return res
    per_node = shuffle_per_node(ctx, chain, src, regroup, gid, combine)
    if per_node is None:
        return None
    sources = [refs for _, refs in per_node.values()]
    calls = [(*red.arg(i), *[refs[i] for refs in sources]) for i in range(n)]
    return call_actors(ctx, red, handles, calls, gid)


def shuffle_per_node(ctx: LoweringContext, chain: Sequence[Map], src: Node,
                     regroup: tuple[tuple[int, ...], ...], group_id: int,
                     combine: Any = None) -> dict[int, tuple[list[int], Any]] | None:
    """The shuffle placed per partition, then run as one task per node that writes one
    object per destination node group (pieces of all its partitions, or with
    ``combine`` one merged piece per actor): with n partitions on m nodes, m x groups
    objects instead of n x groups."""
    base, fn, calls, node_call = _node_work(ctx, chain, src, regroup, combine)
    return ctx.submitter.node_tasks(fn, calls, node_call, group_id=group_id,
                                    depends_on=base.group_id, num_returns=len(regroup),
                                    name=fn._function.__name__)


def _node_work(ctx: LoweringContext, chain: Sequence[Map], src: Node,
               regroup: tuple[tuple[int, ...], ...], combine: Any) -> tuple:
    """A per-node shuffle's parts: (the source's Lowered, the node task function, one
    argument tuple per partition (for placement), ``node_call(indices)``: a node's
    task arguments)."""
    base = ctx.lowered(src)
    objs = flat_objects(src, base.value)
    calls = [(*(a for m in chain for a in m.arg(i)), o) for i, o in enumerate(objs)]
    fn = node_task_function([m.function for m in chain], regroup, chain[-1].ray_options,
                            combine)

    def node_call(idx: list[int]) -> tuple:
        counts = tuple(tuple(len(m.arg(i)) for m in chain) for i in idx)
        flat: list = []
        for i in idx:
            flat.append(objs[i])
            for m in chain:
                flat.extend(m.arg(i))
        return (counts, *flat)

    return base, fn, calls, node_call
