"""``irfront.infer``: plain Ray code, recorded up to each evaluation point and run through
the IR.

    @irfront.infer                    # or: with irfront.infer(): ...
    def main():
        refs = [f.remote(x) for x in xs]
        ...

Inside, ``f.remote(...)``, ``f.options(num_returns=k).remote(...)``, ``cls.remote(...)``
and ``actor.method.remote(...)`` are recorded and return deferred values (``refs.py``).
The recorded graph is matched to IR nodes (``match.py``) and evaluated, with the passes,
placement and lowering of ``node.eval()``, at an *evaluation point*:

- ``ray.get``, ``ray.wait``, ``ray.kill``, ``ray.cancel`` or ``time.sleep`` (the driver is
  about to block: what is recorded is submitted first);
- a deferred value used as a real one (an attribute read, pickled inside another object);
- the graph closing: an actor group got its call on every actor and every recorded task's
  result has been read by another recorded call (one micro-batch of a streaming loop);
- a call that is not recognised and reads recorded results;
- ``max_pending`` recorded calls; the end of the block (the decorated function returns:
  deferred values in what it returns come back as real ``ObjectRef`` / ``ActorHandle``).

A task call is read by ``shapes.read_call`` (its one reference at any position or
keyword, or a stage over plain values). A generator, a task option the IR does not model
(``runtime_env``, ``name``), references inside containers, or more than one reference
(a join) runs it as plain Ray, after what it reads has been evaluated. irfront's own
submissions run inside ``quiet()``: never recorded, named as plain Ray names them. ``explain()`` lists, per evaluation point, the IR nodes built and the calls
that ran plainly with the reason.
"""
from __future__ import annotations

import functools
import inspect
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import ray

import irfront.inference.patch as patch
from irfront.inference.match import (NOTHING, ActorRec, MethodRec, Plan, TaskRec, match,
                                     name_of, run_plain)
from irfront.inference.quiet import quiet
from irfront.inference.shapes import (IR_SHAPE, TASK_OPTIONS, JoinRefs, options_key,
                                      read_call)
from irfront.inference.refs import DeferredActor, DeferredRef, holds_ref, realise
from irfront.ir.nodes import InitActors
from irfront.lowering.evaluation import EVALUATOR
from irfront.lowering.resident import settle



# explain()'s memory bound: the last KEEP evaluation points in detail, and totals over
# the whole run keyed by at most MAX_KEYS distinct (node kind and name) or (call,
# reason) pairs each; further distinct keys are counted under one "(other)" key.
KEEP = 64
MAX_KEYS = 256
_OTHER = ("(other)", "more distinct calls than explain() keeps")


def _count(table: dict, key: Any, n: int = 1) -> None:
    """``table[key] += n``, with at most MAX_KEYS distinct keys (then "(other)")."""
    if key not in table and len(table) >= MAX_KEYS:
        key = _OTHER if isinstance(key, tuple) else _OTHER[0]
    table[key] = table.get(key, 0) + n


@dataclass
class Flush:
    """One evaluation point: why, the IR nodes built, the calls run plainly."""

    why: str
    nodes: list = field(default_factory=list)  # node labels
    kinds: list = field(default_factory=list)
    plain: dict = field(default_factory=dict)  # (call name, reason) -> calls
    # The nodes (weakly, so their groups end when the program drops them; strongly with
    # keep_nodes=True, to call placement() afterwards).
    refs: list = field(default_factory=list)

    @property
    def ir(self) -> list:
        """The nodes still alive, in order."""
        out = [r() if isinstance(r, weakref.ref) else r for r in self.refs]
        return [n for n in out if n is not None]

    def __str__(self) -> str:
        lines = [f"evaluated at {self.why}:" if self.nodes else "plain Ray calls:"]
        lines += [f"  {label}" for label in self.nodes]
        lines += [f"  plain Ray: {name} x{n} ({why})" for (name, why), n in self.plain.items()]
        return "\n".join(lines)


def _hook(fn: Callable) -> Callable:
    """Adds a recording hook's own time (flushes and plain calls inside it excluded) to
    ``record_s``."""
    @functools.wraps(fn)
    def timed(self, *args: Any) -> Any:
        t0, f0, p0 = time.thread_time(), self._flush_s, self._plain_now
        out = fn(self, *args)
        if self._plain_now == p0:
            self.record_s += time.thread_time() - t0 - (self._flush_s - f0)
        return out
    return timed


class Session:
    """One thread's recording: the pending calls and what each evaluation point did."""

    def __init__(self, max_pending: int = 4096, keep: int = KEEP, keep_nodes: bool = False):
        self.pending: list = []
        self.keep_nodes = keep_nodes
        self.suspended = 0
        self.max_pending = max_pending
        self.flushes: list[Flush] = []  # the last ``keep``
        self.keep = keep
        # What the program did, over the whole run (explain()): calls recorded, and of
        # them run in IR nodes or (the matcher's choice) plainly; calls run plainly at
        # once; evaluation points; the same for remote-function calls alone (``tasks``).
        self.recognised = 0
        self.plain_calls = 0  # plainly at once, and plainly after being recorded
        self.grouped = 0  # recorded calls that ran in IR nodes
        self.tasks = 0  # f.remote() calls, however they ran
        self.tasks_grouped = 0  # of them, in IR nodes
        self.evaluation_points = 0
        self.node_totals: dict[str, int] = {}  # "Kind[name]" -> nodes built
        self.plain_totals: dict[tuple[str, str], int] = {}  # (call, reason) -> calls
        self.cpu_s = 0.0  # the recording thread's CPU seconds over the block
        self._t0 = time.thread_time()
        self._plain_now = 0  # calls run plainly at once (the hooks' timing skips them)
        # The cost of inference itself: recording calls and matching them (not the
        # evaluation through the IR, nor plain calls), in CPU seconds of the recording
        # thread (time.thread_time: time lost to Ray's own threads is not counted).
        self.record_s = 0.0
        self.match_s = 0.0
        self.build_s = 0.0  # of match_s: the IR nodes' constructors (an IR program's too)
        self._flush_s = 0.0  # whole flushes, to take out of the hooks' time
        self._unread: set[int] = set()  # ids of pending task results nobody read yet
        self._unplaced: list[InitActors] = []  # actor groups not created yet
        self._groups: dict[int, set[int]] = {}  # open actor-call groups: node -> actors

    # ---- what the hooks call ----------------------------------------------------------
    @property
    def overhead_s(self) -> float:
        """Seconds spent recording and matching (the price of not writing the IR)."""
        return self.record_s + self.match_s

    @property
    def inference_s(self) -> float:
        """``overhead_s`` less the IR nodes' constructors, which the same program written
        with the IR runs too: what inference alone adds."""
        return self.overhead_s - self.build_s

    @_hook
    def task(self, fn: Any, args: tuple, kwargs: dict, options: dict) -> Any:
        env = options.pop("serialized_runtime_env_info", fn._serialized_base_runtime_env_info)
        defaults = fn._default_options
        k = options.get("num_returns", defaults.get("num_returns", 1))
        extra = {} if options == defaults else {
            o: v for o, v in options.items() if defaults.get(o) != v and o != "num_returns"}
        bad = sorted(o for o in extra if o not in TASK_OPTIONS)
        lead, obj, is_ref, shape = (), NOTHING, False, IR_SHAPE
        if fn._is_generator:
            why = "a generator task (Ray streams or splits its returns)"
        elif bad:
            why = f"task options {bad}"
        elif type(k) is not int or k < 1:
            why = "num_returns is not a positive int"
        elif args or kwargs:
            if _has_actor(args, kwargs):  # a handle is a plain value: create it now
                args, kwargs = _actors_made(args, kwargs)
            why, lead, obj, is_ref, shape = read_call(args, kwargs)
        else:
            why = ""  # no arguments: a source (a Broadcast when a stage reads it)
        plain = functools.partial(_submit_task, fn, args, kwargs,
                                  {**options, "serialized_runtime_env_info": env})
        if why:
            return self._run_plain(name_of_fn(fn), why, args, kwargs, plain, task=True)
        outs = [DeferredRef(self) for _ in range(k)]
        join = type(obj) is JoinRefs
        key = (id(fn), shape, options_key(extra) if extra else (), k, len(lead),
               len(obj) if join else 0)
        self._record(TaskRec(fn, lead, obj, k, outs, plain, is_ref, shape, extra, key),
                     obj if is_ref and not join else None, obj if join else ())
        self._unread.update(map(id, outs))
        return outs[0] if k == 1 else outs

    @_hook
    def actor(self, cls: Any, args: tuple, kwargs: dict, options: dict) -> Any:
        plain = functools.partial(_submit_actor, cls, args, kwargs, options)
        why = ("keyword arguments" if kwargs else
               "actor options" if options != cls._default_options else
               "references among its arguments" if any(holds_ref(a) for a in args) else "")
        if why:
            return self._run_plain(cls.__ray_metadata__.class_name, why, args, kwargs, plain,
                                   actor_call=True)
        body = cls.__ray_metadata__.modified_class
        methods = frozenset(m for m in dir(body) if not m.startswith("_")
                            and callable(getattr(body, m, None)))
        out = DeferredActor(self, cls, methods)
        self._record(ActorRec(cls, args, out, plain), None)
        return out

    @_hook
    def method(self, actor: DeferredActor, name: str, args: tuple, kwargs: dict,
               options: dict) -> Any:
        here = patch.route()
        if here is not self:  # a later block records it; none (or another thread): plain
            if here is not None:
                return here.method(actor, name, args, kwargs, options)
            return _submit_method(actor, name, args, kwargs, options)
        plain = functools.partial(_submit_method, actor, name, args, kwargs, options)
        body = actor._cls.__ray_metadata__.modified_class
        fn = getattr(body, name)
        returns = getattr(fn, "__ray_num_returns__", None)
        why = ("a generator method (Ray streams or splits its returns)"
               if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn) else
               "keyword arguments" if kwargs else
               "method options" if options else
               f"num_returns={returns}" if returns not in (None, 1) else "")
        if not why:  # plain values first, then the objects
            why, n_lead = _lead_then_objects(args)
        if why:
            label = f"{actor._cls.__ray_metadata__.class_name}.{name}"
            return self._run_plain(label, why, args, kwargs, plain, actor_call=True)
        out = DeferredRef(self)
        objs = args[n_lead:]
        self._record(MethodRec(actor, name, args[:n_lead], objs, out, plain), None, objs)
        self._after_method(actor)
        return out

    def before_plain(self, what: str, args: Any, kwargs: Any, actor_call: bool) -> None:
        """A call about to run plainly: evaluate first what it reads (and, for an actor
        call, what is recorded for actors: per-actor order is program order)."""
        if self.pending and (actor_call or holds_ref(args) or holds_ref(kwargs)):
            self.flush(f"a plain call ({what})")

    # ---- recording ------------------------------------------------------------------------
    def _record(self, rec: Any, read: Any, reads: tuple = ()) -> None:
        if read is not None:
            self._unread.discard(id(read))
        for r in reads:
            self._unread.discard(id(r))
        self.pending.append(rec)
        self.recognised += 1
        if len(self.pending) >= self.max_pending:
            self.flush(f"{self.max_pending} recorded calls (max_pending)")

    def _after_method(self, actor: DeferredActor) -> None:
        """Evaluates when the graph has closed: this call completed an actor group, and
        every recorded task result has been read."""
        last = self.pending[-1]
        key = id(actor._node) if actor._node is not None else id(actor._cls)
        seen = self._groups.setdefault(key, set())
        if id(actor) in seen:
            seen.clear()
        seen.add(id(actor))
        n = actor._node.n if isinstance(actor._node, InitActors) else sum(
            1 for r in self.pending if isinstance(r, ActorRec) and r.cls is actor._cls)
        if len(seen) == n and not self._unread and isinstance(last, MethodRec):
            seen.clear()
            self.flush("the graph closing (every actor called, every task result read)")

    def _run_plain(self, name: str, why: str, args: Any, kwargs: Any,
                   submit: Callable[[], Any], actor_call: bool = False,
                   task: bool = False) -> Any:
        self.before_plain(name, args, kwargs, actor_call)
        self.plain_calls += 1
        self._plain_now += 1
        self.tasks += task
        _count(self.plain_totals, (name, why))
        self._note(Flush("plain", plain={(name, why): 1}))
        with quiet():  # its own submission (and what it resolves) is not recorded
            return submit()

    # ---- evaluation points ----------------------------------------------------------------
    def flush(self, why: str) -> None:
        """Matches the pending calls to IR nodes and evaluates them."""
        if not self.pending or self.suspended:
            return
        records, self.pending = self.pending, []
        self._unread.clear()
        self._groups.clear()
        self.suspended += 1
        t0 = time.thread_time()
        try:
            plan = match(records)
            self.match_s += time.thread_time() - t0
            self.build_s += plan.build_s
            self._tally(records, plan)
            self._note(_describe(why, plan, self.keep_nodes))
            self._unplaced += [n for n in plan.nodes if isinstance(n, InitActors)]
            with quiet():  # irfront's submissions: not recorded, plainly named
                for kind, x in plan.steps:
                    if kind == "eval":
                        x.eval()
                    else:
                        run_plain(x)
        finally:
            self.suspended -= 1
            self._flush_s += time.thread_time() - t0

    def finish(self) -> None:
        """The block's end: evaluate what is pending and create the actors not used yet
        (plain Ray would have created them)."""
        self.flush("the end of the block")
        self.suspended += 1
        try:
            with quiet():
                for n in self._unplaced:
                    if not n.evaluated:
                        n.eval()
            self._unplaced.clear()
        finally:
            self.suspended -= 1
            self.cpu_s = time.thread_time() - self._t0

    def _tally(self, records: list, plan: Plan) -> None:
        """Adds one evaluation point's calls to the run's totals."""
        self.evaluation_points += 1
        tasks = sum(1 for r in records if type(r) is TaskRec)
        plain_tasks = sum(1 for r, _ in plan.plain if type(r) is TaskRec)
        self.tasks += tasks
        self.tasks_grouped += tasks - plain_tasks
        self.grouped += len(records) - len(plan.plain)
        self.plain_calls += len(plan.plain)
        for n in plan.nodes:
            _count(self.node_totals, f"{n.kind}[{n.name}]")
        for r, why in plan.plain:
            _count(self.plain_totals, (name_of(r), why))

    def _note(self, f: Flush) -> None:
        prev = self.flushes[-1] if self.flushes else None
        if prev is not None and not f.nodes and not prev.nodes and prev.why == f.why:
            for key, n in f.plain.items():  # consecutive plain calls: one entry
                _count(prev.plain, key, n)
        else:
            self.flushes.append(f)
        del self.flushes[:-self.keep]

    # ---- what was inferred ------------------------------------------------------------------
    def kinds(self) -> list[str]:
        """The kinds of the IR nodes built, in order, over the evaluation points kept."""
        return [k for f in self.flushes for k in f.kinds]

    @property
    def group_share(self) -> float:
        """The share of the run's remote-function calls that ran in IR nodes (groups)."""
        return self.tasks_grouped / self.tasks if self.tasks else 0.0

    def explain(self) -> str:
        share = (f"; recording and matching {self.overhead_s / self.cpu_s:.0%} of the "
                 f"block's {self.cpu_s * 1e3:.1f} ms of driver CPU" if self.cpu_s else "")
        head = (f"irfront.infer: {self.recognised} calls recorded, {self.grouped} of them "
                f"run in IR nodes; {self.plain_calls} run as plain Ray; task calls "
                f"{self.tasks_grouped} of {self.tasks} grouped; {self.evaluation_points} "
                f"evaluation points (the last {self.keep} listed below); recording and "
                f"matching took {self.overhead_s * 1e3:.2f} ms, {self.build_s * 1e3:.2f} "
                f"ms of it building the IR nodes{share}")
        total = ["over the whole run:"]
        total += [f"  {key} x{n}" for key, n in self.node_totals.items()]
        total += [f"  plain Ray: {name} x{n} ({why})"
                  for (name, why), n in self.plain_totals.items()]
        return "\n".join([head] + total + [str(f) for f in self.flushes])


def name_of_fn(fn: Any) -> str:
    return fn._function.__qualname__


_REF_TYPES = (DeferredRef, ray.ObjectRef)
_CONTAINERS = (list, tuple, dict, set, frozenset)


def _lead_then_objects(args: tuple) -> tuple[str, int]:
    """(why a method call's ``args`` are not plain values then references, or "", the
    number of leading plain values)."""
    n_lead = len(args)
    for i, a in enumerate(args):
        if type(a) in _REF_TYPES:
            n_lead = i
            break
        if type(a) is DeferredActor or (type(a) in _CONTAINERS and holds_ref(a)):
            return "references inside containers, or an actor, among its arguments", 0
    if n_lead == len(args):
        return "no object arguments", 0
    if not all(type(a) in _REF_TYPES for a in args[n_lead:]):
        return "arguments after the first reference that are not references", 0
    return "", n_lead


def _describe(why: str, plan: Plan, keep_nodes: bool) -> Flush:
    f = Flush(why, [n.label for n in plan.nodes], [n.kind for n in plan.nodes],
              refs=list(plan.nodes) if keep_nodes else [weakref.ref(n) for n in plan.nodes])
    for r, reason in plan.plain:
        _count(f.plain, (name_of(r), reason))
    return f


def _has_actor(args: tuple, kwargs: dict) -> bool:
    return any(type(a) is DeferredActor for a in args) or any(
        type(v) is DeferredActor for v in kwargs.values())


def _actors_made(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """A task's arguments with each actor being created (``DeferredActor``) made real:
    the task gets its handle, as from plain Ray, and reads no object through it."""
    def real(a: Any) -> Any:
        return a._resolve() if type(a) is DeferredActor else a
    return tuple(map(real, args)), {k: real(v) for k, v in kwargs.items()}


def _submit_task(fn, args, kwargs, options):
    return patch.ORIGINAL["task"](fn, args=realise(args), kwargs=realise(kwargs), **options)


def _submit_actor(cls, args, kwargs, options):
    return patch.ORIGINAL["actor"](cls, args=realise(args), kwargs=realise(kwargs),
                                   **options)


def _submit_method(actor, name, args, kwargs, options):
    if isinstance(actor._node, InitActors):  # after its resident calls, as Ray orders
        settle(EVALUATOR.results, actor._node)
    method = getattr(actor._resolve(), name)
    if options:
        method = method.options(**options)
    return method.remote(*realise(args), **realise(kwargs))


# ---- the API -----------------------------------------------------------------------------------
_LAST: list[Session] = []


class infer:
    """Runs plain Ray code group-scheduled: ``@irfront.infer`` on a function, or
    ``with irfront.infer():`` around a block (see the module's docstring).

    ``max_pending``: recorded calls that force an evaluation. ``keep_nodes``: the
    explanation keeps the IR nodes it built (``session.flushes[i].ir``) alive, so their
    ``placement()`` can be read afterwards; by default it holds them weakly, and a
    node's group ends when the program drops its references."""

    def __init__(self, fn: Callable | None = None, *, max_pending: int = 4096,
                 keep_nodes: bool = False):
        if fn is not None and not callable(fn):
            raise TypeError(f"irfront.infer decorates a function or opens a block; got "
                            f"{type(fn).__name__}: use @irfront.infer or "
                            "with irfront.infer(): ...")
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be a positive int; got {max_pending!r}")
        self.max_pending = max_pending
        self.keep_nodes = keep_nodes
        self.session: Session | None = None
        self._outer = False
        self._fn = fn
        if fn is not None:
            functools.update_wrapper(self, fn)

    # ---- as a decorator -----------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._fn is None:  # @irfront.infer(max_pending=...) on a function
            return infer(args[0], max_pending=self.max_pending,
                         keep_nodes=self.keep_nodes)
        block = infer(max_pending=self.max_pending, keep_nodes=self.keep_nodes)
        try:
            with block:
                return block.finish(self._fn(*args, **kwargs))
        finally:
            self.session = block.session

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        return self if obj is None else functools.partial(self.__call__, obj)

    def explain(self) -> str:
        """What the last run of the function (or block) recognised, and what not."""
        if self.session is None:
            return "irfront.infer: not run yet"
        return self.session.explain()

    # ---- as a block ------------------------------------------------------------------------
    def __enter__(self) -> "infer":
        patch.install()
        outer = patch.current()
        if outer is not None:  # nested: the outer block records
            self.session, self._outer = outer, True
            return self
        self.session = Session(self.max_pending, keep_nodes=self.keep_nodes)
        patch.set_current(self.session)
        _LAST[:] = [self.session]
        return self

    def finish(self, value: Any) -> Any:
        """Evaluates what is pending and returns ``value`` with its deferred values real;
        inside a stream driver's batch, a reducer call answered on the resident path
        stays deferred (the driver waits on its batch; any use makes it real)."""
        self.session.flush("the end of the block")
        return realise(value, keep_answers=EVALUATOR.results.call_log is not None)

    def __exit__(self, *exc: Any) -> None:
        if self._outer:
            return
        try:
            self.session.finish()
        except Exception:
            if exc[0] is None:
                raise  # otherwise the block's own error wins
        finally:
            patch.set_current(None)


def explain_inferred() -> str:
    """What the most recent ``irfront.infer`` block or function recognised, per
    evaluation point, and what ran as plain Ray and why."""
    return _LAST[0].explain() if _LAST else "irfront.infer has not run in this process"


def last_session() -> Session | None:
    """The most recent session (tests and tools read ``kinds()`` and ``flushes``)."""
    return _LAST[0] if _LAST else None


__all__ = ["Session", "explain_inferred", "infer", "last_session"]
