"""Recorded Ray calls -> IR nodes: the patterns of the 2018 IR, recognised in a recorded
graph (``match(records) -> Plan``).

    one call whose result many tasks read             Broadcast(f, n, *args)
    the same function over every object of a stage    Map(f, stage, args)   (object last)
      (with num_returns=k: a shuffle)                 Map(f, stage, args, num_returns=k)
    calls of one function each reading several
      objects of one stage, last (a join)             Join(f, stage, picks, args)
    actors of one class created one after another     InitActors(cls, n, args)
    one method on every actor, each given all objects
      of a stage (or the i-th return of every task)   ReduceActors(m, actors, stage, args)
    one method on every actor, actor i given object i MapActors(m, actors, stage, args)

A call that fits no pattern runs as plain Ray, with the reason kept for ``explain``. A
stage is matched only as a whole: a Map's tasks must read every object of their source
exactly once (in any order), and an actor group's calls must reach every actor once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import ray

from irfront.errors import IRError
from irfront.inference.refs import DeferredActor, DeferredRef, realise
from irfront.inference.shapes import IR_SHAPE, JoinRefs, task_for
from irfront.ir.nodes import (Broadcast, InitActors, Join, Map, MapActors, Node, Objects,
                              ReduceActors)
from irfront.lowering.evaluation import EVALUATOR


# ---- what the session records --------------------------------------------------------------
NOTHING = object()  # the object of a call with no arguments


@dataclass(eq=False)
class TaskRec:
    """A task call read as ``task(*lead, obj)`` (``shapes.read_call``): ``obj`` the one
    reference (``is_ref``), or a plain value in its place, or NOTHING (no arguments)."""

    fn: Any
    lead: tuple
    obj: Any
    num_returns: int
    outs: list
    plain: Callable[[], Any]  # submits it as plain Ray; returns what .remote() returns
    is_ref: bool = True
    shape: Any = IR_SHAPE  # where the object goes in the program's call
    options: dict = field(default_factory=dict)  # .options(...) beyond fn's own
    key: tuple = ()  # calls with one key can be one Map: function, shape, options, widths

    @property
    def args(self) -> tuple:
        """The arguments of ``task_of(self)``: the lead, then the object (a join's
        objects)."""
        if type(self.obj) is JoinRefs:
            return self.lead + self.obj
        return self.lead if self.obj is NOTHING else self.lead + (self.obj,)


def task_of(rec: TaskRec) -> Any:
    """What an IR node over calls like ``rec`` runs (the function, or its reshaped twin,
    with the call's options)."""
    return task_for(rec.fn, rec.shape, rec.options)


@dataclass(eq=False)
class ActorRec:
    """``cls.remote(*args)`` with the class's own options."""

    cls: Any
    args: tuple
    out: DeferredActor
    plain: Callable[[], Any]


@dataclass(eq=False)
class MethodRec:
    """``actor.method.remote(*lead, *objs)`` on a deferred actor: ``objs`` references."""

    actor: DeferredActor
    method: str
    lead: tuple
    objs: tuple
    out: DeferredRef
    plain: Callable[[], Any]


Record = TaskRec | ActorRec | MethodRec


@dataclass
class Plan:
    """What one evaluation point runs: ``steps`` in the order of their first call (an IR
    node to evaluate, or a plain call), and what was recognised (``nodes``, the user-level
    nodes in order) and not (``plain``: (call, reason))."""

    steps: list = field(default_factory=list)
    nodes: list = field(default_factory=list)
    plain: list = field(default_factory=list)
    build_s: float = 0.0  # in the IR nodes' constructors


def name_of(rec: Record) -> str:
    if isinstance(rec, TaskRec):
        return rec.fn._function.__qualname__
    if isinstance(rec, ActorRec):
        return rec.cls.__ray_metadata__.class_name
    return f"{rec.actor._cls.__ray_metadata__.class_name}.{rec.method}"


# ---- where a reference comes from ----------------------------------------------------------
class _Sources:
    """Per deferred reference of this plan: its producing record; per record: its group."""

    def __init__(self, records: Sequence[Record]):
        self.producer: dict[int, tuple[Record, int]] = {}
        for rec in records:
            outs = rec.outs if isinstance(rec, TaskRec) else (
                [rec.out] if isinstance(rec, MethodRec) else [])
            for j, r in enumerate(outs):
                self.producer[id(r)] = (rec, j)
        self.group_of: dict[int, "_Group"] = {}

    def origin(self, ref: Any) -> tuple:
        """("pending", group, record, j) | ("node", node, flat index) | ("ext",)."""
        if type(ref) is DeferredRef:
            hit = self.producer.get(id(ref))
            if hit is not None:
                rec, j = hit
                return ("pending", self.group_of.get(id(rec)), rec, j)
            at = getattr(ref._thunk, "at", None)
            if at is not None:
                return ("node",) + at
        return ("ext",)


@dataclass(eq=False)
class _Group:
    """Records matched as one stage (or one source call)."""

    kind: str  # task | values | join | source | actors | method
    recs: list
    key: tuple = ()
    node: Node | None = None
    order: list | None = None  # records in the node's task/actor order
    why: str = ""  # why not matched (plain)
    pos: dict = field(default_factory=dict)  # id(record) -> its index in order
    reads: set = field(default_factory=set)  # ids of the objects its tasks read

    @property
    def first(self) -> int:
        return self.recs[0]._seq


# ---- the matcher ---------------------------------------------------------------------------
def match(records: Sequence[Record]) -> Plan:
    for i, r in enumerate(records):
        r._seq = i
    src = _Sources(records)
    actors = _actor_groups(records)
    t0 = time.thread_time()
    for g in actors:  # first: method calls are grouped by their actors' node
        _try_build(g, src, {})
    built = time.thread_time() - t0
    methods = _method_groups(records, src)
    tasks = _task_groups(records, src)
    groups = sorted(actors + methods + tasks, key=lambda g: g.first)
    consumers = _consumer_counts(groups, src)
    t0 = time.thread_time()
    for g in groups:
        if g.kind != "actors":
            _try_build(g, src, consumers)
    built += time.thread_time() - t0
    plan = _plan(groups)
    plan.build_s = built
    return plan


def _try_build(g: "_Group", src: "_Sources", consumers: dict[int, int]) -> None:
    try:
        _build(g, src, consumers)
    except IRError as e:  # a pattern that the IR's own checks refuse runs plainly
        g.node, g.why = None, f"the IR refused it: {e}"
    if g.node is None and g.kind == "actors":
        for r in g.recs:
            _bind_plain(r)
    if g.node is not None:
        g.pos = {id(r): t for t, r in enumerate(g.order)}


def _task_groups(records: Sequence[Record], src: _Sources) -> list[_Group]:
    """Tasks of one function (and num_returns) reading one source; a second read of the
    same object starts a new group (the next batch), a source call is a group alone."""
    out: list[_Group] = []
    open_: dict[tuple, _Group] = {}
    values: dict[tuple, _Group] = {}
    for rec in records:  # first, calls over plain values: one stage per key
        if type(rec) is not TaskRec or rec.is_ref:
            continue
        g = None if rec.obj is NOTHING else values.get(rec.key)
        if g is None:
            g = _Group("values", [], rec.key)
            out.append(g)
            if rec.obj is not NOTHING:
                values[rec.key] = g
        g.recs.append(rec)
        src.group_of[id(rec)] = g
    for g in out:  # one call alone is a source: a Broadcast when a stage reads it
        if len(g.recs) == 1:
            g.kind = "source"
    for rec in records:
        if type(rec) is not TaskRec or not rec.is_ref:
            continue
        if type(rec.obj) is JoinRefs:
            _add_join(rec, src, open_, out)
            continue
        o = src.origin(rec.obj)
        key = rec.key + _where(o)
        g = open_.get(key)
        if g is not None and o[0] != "ext" and not _broadcast_like(o) and \
                id(rec.obj) in g.reads:
            g = None
        if g is None:
            g = open_[key] = _Group("task", [], key)
            out.append(g)
        g.recs.append(rec)
        g.reads.add(id(rec.obj))
        src.group_of[id(rec)] = g
    return out


def _where(o: tuple) -> tuple:
    return (o[0], id(o[1])) if o[0] in ("pending", "node") else ("ext",)


def _add_join(rec: TaskRec, src: _Sources, open_: dict, out: list) -> None:
    """A join joins the open group of its key reading the stage its first object comes
    from; one that reads an object the group read already starts a new group."""
    key = rec.key + _where(src.origin(rec.obj[0]))
    g = open_.get(key)
    if g is not None and any(id(x) in g.reads for x in rec.obj):
        g = None
    if g is None:
        g = open_[key] = _Group("join", [], key)
        out.append(g)
    g.recs.append(rec)
    g.reads.update(id(x) for x in rec.obj)
    src.group_of[id(rec)] = g


def _broadcast_like(o: tuple) -> bool:
    """A source every task reads whole: a source call, or an evaluated Broadcast."""
    if o[0] == "pending":
        return o[1] is not None and o[1].kind == "source"
    return o[0] == "node" and isinstance(o[1], Broadcast)


def _actor_groups(records: Sequence[Record]) -> list[_Group]:
    """Consecutive creations of one class."""
    out: list[_Group] = []
    prev: Record | None = None
    for rec in records:
        if isinstance(rec, ActorRec):
            if isinstance(prev, ActorRec) and prev.cls is rec.cls and \
                    len(prev.args) == len(rec.args):
                out[-1].recs.append(rec)
            else:
                out.append(_Group("actors", [rec]))
        prev = rec
    return out


def _method_groups(records: Sequence[Record], src: _Sources) -> list[_Group]:
    """One method on the actors of one actor group, each actor once; any other call on
    those actors closes the group (per-actor order is program order)."""
    out: list[_Group] = []
    open_: dict[int, _Group] = {}
    for rec in records:
        if not isinstance(rec, MethodRec):
            continue
        key = id(rec.actor._node)
        g = open_.get(key)
        if g is None or g.key[0] != rec.method or len(g.key[1]) != len(rec.lead) or \
                any(r.actor is rec.actor for r in g.recs):
            g = open_[key] = _Group("method", [], (rec.method, rec.lead))
            out.append(g)
        g.recs.append(rec)
        src.group_of[id(rec)] = g
    return out


def _consumer_counts(groups: Sequence[_Group], src: _Sources) -> dict[int, int]:
    """Per source-call group: the size of the first task group reading it (a Broadcast's
    n)."""
    n: dict[int, int] = {}
    for g in groups:
        if g.kind not in ("task", "join"):
            continue
        obj = g.recs[0].obj
        o = src.origin(obj[0] if g.kind == "join" else obj)
        if o[0] == "pending" and o[1] is not None and o[1].kind == "source":
            n.setdefault(id(o[1]), len(g.recs))
    return n


def _build(g: _Group, src: _Sources, consumers: dict[int, int]) -> None:
    if g.kind == "source":
        rec = g.recs[0]
        n = consumers.get(id(g))
        if n is None:
            g.why = "a single task that no stage reads: nothing to group"
        elif rec.num_returns != 1:
            g.why = "a broadcast task with num_returns > 1"
        else:
            g.node = Broadcast(task_of(rec), n, *rec.args)
            g.order = [rec]
    elif g.kind in ("task", "values"):
        _build_map(g, src)
    elif g.kind == "join":
        _build_join(g, src)
    elif g.kind == "actors":
        recs = g.recs
        g.node = InitActors(recs[0].cls, len(recs), [r.args for r in recs])
        g.order = recs
        for i, r in enumerate(recs):
            r.out._bind(g.node, i)
    else:
        _build_actor_call(g, src)


def _stage_of(refs: Sequence[Any], src: _Sources) -> tuple[Node | None, list[int], str]:
    """The one node ``refs`` come from and each ref's flat index in its outputs; or
    (None, [], why)."""
    node, idx = None, []
    for r in refs:
        o = src.origin(r)
        if o[0] == "pending":
            g = o[1]
            if g is None or g.node is None:
                return None, [], "its input stage was not matched"
            if g.kind == "source":
                at = 0
            else:
                t = g.pos[id(o[2])]
                at = t * g.node.num_returns + o[3] if isinstance(g.node, (Map, Join)) \
                    else t
            here = g.node
        elif o[0] == "node":
            here, at = o[1], o[2]
        else:
            return None, [], "it reads references from outside irfront.infer"
        if node is None:
            node = here
        elif here is not node:
            return None, [], "its objects come from more than one stage"
        idx.append(at)
    return node, idx, ""


def _build_map(g: _Group, src: _Sources) -> None:
    recs = g.recs
    first = src.origin(recs[0].obj)
    if first[0] == "ext":  # real references (or plain calls' results, or plain values)
        g.node = Map(task_of(recs[0]), Objects([realise(r.obj, 0) for r in recs],
                                               inline=True),
                     [r.lead for r in recs],
                     num_returns=recs[0].num_returns)
        g.order = recs
        return
    node, idx, why = _stage_of([r.obj for r in recs], src)
    if node is None:
        g.why = why
        return
    if isinstance(node, Broadcast):
        if len(recs) != node.n:
            g.why = (f"{len(recs)} tasks read a broadcast made for {node.n}: a Map over it "
                     "has one task per handle")
            return
        order = recs
    else:
        if sorted(idx) != list(range(node.num_objects)):
            g.why = (f"its {len(recs)} tasks read {len(set(idx))} of the "
                     f"{node.num_objects} objects of {node.label}: a Map reads each once")
            return
        order = [r for _, r in sorted(zip(idx, recs), key=lambda p: p[0])]
    g.node = Map(task_of(recs[0]), node, [r.lead for r in order],
                 num_returns=recs[0].num_returns)
    g.order = order


def _build_join(g: _Group, src: _Sources) -> None:
    """Joins reading one stage (or only references made outside the block): a Join,
    task i picking its objects' places in that stage."""
    recs = g.recs
    flat = [x for r in recs for x in r.obj]
    if all(src.origin(x)[0] == "ext" for x in flat):
        node: Node | None = Objects([realise(x, 0) for x in flat], inline=True)
        idx = list(range(len(flat)))
    else:
        node, idx, why = _stage_of(flat, src)
        if node is None:
            g.why = why
            return
    picks, at = [], 0
    for r in recs:
        picks.append(tuple(idx[at:at + len(r.obj)]))
        at += len(r.obj)
    g.node = Join(task_of(recs[0]), node, picks, [r.lead for r in recs],
                  num_returns=recs[0].num_returns)
    g.order = recs


def _build_actor_call(g: _Group, src: _Sources) -> None:
    recs = g.recs
    actors = recs[0].actor._node
    if actors is None or not isinstance(actors, InitActors):
        g.why = "its actors were not created as one group"
        return
    if len(recs) != actors.n:
        g.why = (f"called on {len(recs)} of the {actors.n} actors created together: "
                 "ReduceActors / MapActors call every actor once")
        return
    by_actor = sorted(recs, key=lambda r: r.actor._index)
    lead = [r.lead for r in by_actor]
    objs = [r.objs for r in by_actor]
    if not objs[0]:
        g.why = "no object arguments: nothing to reduce"
        return
    method = recs[0].method
    if all(o == objs[0] for o in objs) and all(type(x) is DeferredRef for x in objs[0]):
        node, idx, why = _stage_of(objs[0], src)
        # (one actor: its one return of every task is every object, either way)
        if isinstance(node, Map) and node.num_returns == actors.n and actors.n > 1:
            g.why = ("every actor gets every return of a shuffle with one return per "
                     "actor; the IR would give actor i the i-th returns only")
        elif node is not None and idx == list(range(node.num_objects)):
            g.node = ReduceActors(method, actors, node, lead)
        else:
            g.why = why or "its objects are not one stage's, in order"
    elif all(len(o) == 1 for o in objs):
        node, idx, why = _stage_of([o[0] for o in objs], src)
        if node is not None and idx == list(range(node.num_objects)):
            g.node = MapActors(method, actors, node, lead)
        else:
            g.why = why or "actor i does not get object i of one stage"
    else:  # a shuffle: actor i gets the i-th return of every task, in task order
        node, idx, why = _stage_of(objs[0], src)
        k = actors.n
        ok = isinstance(node, Map) and node.num_returns == k and all(
            _stage_of(o, src)[:2] == (node, [t * k + i for t in range(len(node))])
            for i, o in enumerate(objs))
        if ok:
            g.node = ReduceActors(method, actors, node, lead)
        else:
            g.why = why or ("actor i's objects are not the i-th returns of every task of "
                            "one shuffle, in task order")
    if g.node is not None:
        g.order = by_actor


def _plan(groups: Sequence[_Group]) -> Plan:
    plan = Plan()
    steps: list[tuple[int, str, Any]] = []  # (first record, kind, node or record)
    read = set()
    for g in groups:
        if g.node is not None:
            for n in g.node.walk():
                if n is not g.node:
                    read.add(id(n))
    for g in groups:
        if g.node is None:
            for r in g.recs:
                plan.plain.append((r, g.why))
                _bind_plain(r)
            steps.extend((r._seq, "plain", r) for r in g.recs)
            continue
        plan.nodes.append(g.node)
        _bind_node(g)
        if not isinstance(g.node, InitActors) and id(g.node) not in read:
            steps.append((g.first, "eval", g.node))
    steps.sort(key=lambda s: s[0])  # stable: a node before plain calls from its first
    plan.steps = [(kind, x) for _, kind, x in steps]
    return plan


class _At:
    """A thunk: position ``path`` of ``node.eval()``; ``at`` names (node, flat index)."""

    __slots__ = ("node", "path", "at")

    def __init__(self, node: Node, path: tuple, flat: int):
        self.node, self.path, self.at = node, path, (node, flat)

    def __call__(self) -> ray.ObjectRef:
        v = self.node.eval()
        for p in self.path:
            v = v[p]
        return v


class _CallAt(_At):
    """Actor call ``t`` of an actor group's node: its ref, or where the node ran on the
    resident path inside a stream (``Results.answering``) its reducer's answer, made a
    ref on first use (``waitables()``: what a stream driver waits on instead)."""

    __slots__ = ()

    def __call__(self) -> ray.ObjectRef:
        answer = self._answer()
        return self.node.eval()[self.path[0]] if answer is None else answer.ref()

    def waitables(self) -> list | None:
        answer = self._answer()
        return None if answer is None else answer.waitables()

    def _answer(self) -> Any:
        self.node.eval()
        calls = EVALUATOR.results.calls(self.node)
        return None if calls is None else calls[self.path[0]]


def _bind_node(g: _Group) -> None:
    node = g.node
    if isinstance(node, InitActors):
        return  # bound when built
    for t, rec in enumerate(g.order):
        if isinstance(rec, TaskRec):
            if isinstance(node, Broadcast):
                rec.outs[0]._bind(_At(node, (0,), 0))
            elif rec.num_returns == 1:
                rec.outs[0]._bind(_At(node, (t,), t))
            else:
                for j, r in enumerate(rec.outs):
                    r._bind(_At(node, (t, j), t * rec.num_returns + j))
        else:
            rec.out._bind(_CallAt(node, (t,), t))


class _PlainCall:
    """A thunk that submits a record as plain Ray once and picks output ``j``."""

    __slots__ = ("rec", "j")

    def __init__(self, rec: Record, j: int):
        self.rec, self.j = rec, j

    def __call__(self) -> Any:
        out = run_plain(self.rec)
        return out[self.j] if isinstance(out, list) else out


def run_plain(rec: Record) -> Any:
    """Submits ``rec`` as plain Ray (once; later calls give the same result)."""
    done = getattr(rec, "_result", None)
    if done is None:
        done = rec._result = (rec.plain(),)
    return done[0]


def _bind_plain(rec: Record) -> None:
    if isinstance(rec, TaskRec):
        for j, r in enumerate(rec.outs):
            r._bind(_PlainCall(rec, j if rec.num_returns != 1 else 0))
    elif isinstance(rec, MethodRec):
        rec.out._bind(_PlainCall(rec, 0))
    else:
        rec.out._handle = None
        rec.out._node = _PlainActor(rec)
        rec.out._index = 0


class _PlainActor:
    """Stands for an InitActors node of a plainly created actor: ``eval()[0]``."""

    def __init__(self, rec: ActorRec):
        self.rec = rec

    def eval(self) -> list:
        return [run_plain(self.rec)]
