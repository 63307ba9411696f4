"""Static inference: read plain Ray code's AST and report the IR it would infer.

    analysis = analyze(main)          # or analyze(module), analyze("...source...")
    print(analysis)                   # one IR node per line, evaluation points, give-ups
    analysis.kinds()                  # ['Broadcast', 'InitActors', 'Map', 'Map', 'ReduceActors']

Nothing is executed: the source is parsed with ``ast`` and walked once, in program order,
by a small abstract interpreter. Names are bound to *abstract values* (a remote function,
an actor class, the refs of a stage, one element of them inside a loop, a value fetched
with ``ray.get``...), and each ``.remote()`` call is classified by the values of its
receiver and arguments under the loops that enclose it:

- a comprehension generator, or a ``for`` loop whose body appends ``.remote()`` results
  (or calls an actor per element), is a *fan-out*: one call there is one IR node over the
  iteration (Map, Join, InitActors, ReduceActors, MapActors);
- any other loop is a *driver loop*: its body is analysed once, its nodes run once per
  iteration, and the end of an iteration is an evaluation point; a driver loop over
  ``range(k)`` that feeds a stage's refs back into the same name is a chain of k Maps.

The 2018 IR's calling conventions decide what fits: the object is the task's *last*
positional argument, the other arguments are per-task ``args``; a reducer gets the
objects as separate arguments (``*xs`` or ``*[s[i] for s in shuffled]``). What does not
fit is reported in ``gave_up`` with its line and the reason, never guessed.

Only the standard library is used, so this module sits in the inference layer without
importing Ray; for a function object, Ray's remote functions and actor classes among its
globals are recognised by their type names.
"""
from __future__ import annotations

import ast
import builtins
import inspect
import textwrap
import types
from dataclasses import dataclass, field
from typing import Any

__all__ = ["analyze", "Analysis", "InferredNode"]


# ---- the report ---------------------------------------------------------------------------
@dataclass
class InferredNode:
    """One inferred IR stage. ``inputs`` are indices into ``Analysis.nodes``. ``details``
    may hold: ``count`` (tasks or actors, as source text or an int), ``args`` (the
    per-task arguments' source), ``num_returns`` and ``shuffle``, ``repeat`` (a chain of
    Maps run that many times), ``over`` (the values a Map iterates when they are not
    refs), ``per_iteration`` (the line of the driver loop it repeats in)."""

    index: int
    kind: str
    name: str
    lineno: int
    inputs: list[int]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.kind}[{self.name}]"


@dataclass
class Analysis:
    """What ``analyze`` inferred: IR nodes in program order, evaluation points, the places
    it gave up (line, reason) and notes on code left to plain Ray."""

    source: str
    nodes: list[InferredNode]
    evaluation_points: list[tuple[int, str]]
    gave_up: list[tuple[int, str]]
    notes: list[tuple[int, str]]

    def kinds(self) -> list[str]:
        return [n.kind for n in self.nodes]

    def __str__(self) -> str:
        def count(items: list, what: str) -> str:
            return f"{len(items)} {what}{'' if len(items) == 1 else 's'}"

        out = [f"analyze({self.source}): {count(self.nodes, 'IR node')}, "
               f"{count(self.evaluation_points, 'evaluation point')}, "
               f"gave up at {count(self.gave_up, 'place')}"]
        for n in self.nodes:
            line = f"  {n.label}  line {n.lineno}"
            if n.inputs:
                line += "  <- " + ", ".join(self.nodes[i].label for i in n.inputs)
            elif "over" in n.details:
                line += f"  <- values of {n.details['over']}"
            extra = _describe(n.details)
            out.append(line + (f"  ({extra})" if extra else ""))
        for title, items in (("evaluation points", self.evaluation_points),
                             ("gave up", self.gave_up), ("notes", self.notes)):
            out.append(f"{title}:" if items else f"{title}: none")
            out.extend(f"  line {line}  {what}" for line, what in items)
        return "\n".join(out)


def _describe(d: dict[str, Any]) -> str:
    parts = []
    if "count" in d:
        parts.append(f"n={d['count']}")
    if "repeat" in d:
        parts.append(f"x {d['repeat']} (chained)")
    if d.get("shuffle"):
        how = "indexed per reducer" if d.get("indexed") else "shuffle"
        parts.append(f"num_returns={d['num_returns']} ({how})"
                     if "num_returns" in d else "i-th return of every task (shuffle)")
    if "picks" in d:
        parts.append(f"each task joins {d['picks']}")
    if d.get("args"):
        parts.append("args: " + ", ".join(d["args"]))
    if "per_iteration" in d:
        parts.append(f"each iteration of line {d['per_iteration']}")
    return "; ".join(parts)


# ---- abstract values ----------------------------------------------------------------------
@dataclass(eq=False)
class _Stage:
    """A stage being inferred. "Task" is a single call, promoted to a Broadcast once its
    result feeds a group of tasks, and reported as plain Ray otherwise."""

    kind: str
    name: str
    lineno: int
    inputs: list["_Stage"]
    details: dict[str, Any]
    loops: list[int]            # enclosing driver loops' lines at creation


class _V:
    """Base of the abstract values."""


@dataclass
class _Plain(_V):               # a driver-side value, not a ref
    text: str
    unresolved: bool = False    # a name not bound in the analysed code (or a module's attr)


@dataclass
class _Fetched(_V):             # data fetched from the cluster: branching on it is dynamic
    line: int
    what: str
    single: bool                # ray.get of one ref: its length is data too


@dataclass
class _RemoteFn(_V):
    name: str
    num_returns: Any = 1


@dataclass
class _ActorCls(_V):
    name: str


@dataclass
class _Method(_V):
    receiver: _V
    name: str


@dataclass
class _OfStage(_V):
    stage: _Stage


class _Ref(_OfStage):
    """The one ref of a single task."""


class _Refs(_OfStage):
    """One ref (a list of k with num_returns=k) per task of a stage."""


class _Elem(_OfStage):
    """Per iteration: one element of _Refs, or one task's result inside a fan-out."""


class _Part(_OfStage):
    """``s[i]``: one return of one task."""


class _Parts(_OfStage):
    """``[s[i] for s in shuffled]``: return i of every task."""


class _Actors(_OfStage):
    """A group of actors (InitActors)."""


class _ActorElem(_OfStage):
    """Per iteration: one handle of _Actors."""


@dataclass
class _Actor(_V):               # a single actor (plain Ray)
    name: str


@dataclass
class _Index(_V):               # i of range(n) / enumerate(...)
    count: Any


@dataclass
class _Container(_V):           # a list/tuple/dict literal: refs inside it are hidden
    items: list[_V]


@dataclass
class _Opaque(_V):              # not inferred (inside a give-up)
    text: str


_REF_VALUES = (_Ref, _Refs, _Elem, _Part, _Parts)


def _has_ref(v: _V) -> bool:
    return isinstance(v, _REF_VALUES) or (
        isinstance(v, _Container) and any(_has_ref(i) for i in v.items))


def _multi(num_returns: Any) -> bool:
    return num_returns not in (1, "1", None)


def _is_remote_call(c: ast.AST) -> bool:
    """``x.remote(...)``, not ``ray.remote(...)`` (a decorator or a wrapper)."""
    return isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) \
        and c.func.attr == "remote" \
        and not (isinstance(c.func.value, ast.Name) and c.func.value.id == "ray")


def _has_remote(nodes: Any) -> bool:
    """Whether any ``.remote(...)`` call is among the given AST nodes."""
    return any(_is_remote_call(c) for n in (nodes if isinstance(nodes, list) else [nodes])
               for c in ast.walk(n))


def _names(target: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}


def _literal(e: ast.AST) -> Any:
    return e.value if isinstance(e, ast.Constant) and isinstance(e.value, int) \
        else ast.unparse(e)


@dataclass
class _Loop:                    # an active fan-out iteration
    lineno: int
    count: Any
    over: str


# ---- the abstract interpreter ---------------------------------------------------------------
class _Analyzer:
    def __init__(self) -> None:
        self.env: dict[str, _V] = {}
        self.imports: dict[str, str] = {}       # local name -> dotted name
        self.functions: set[str] = set()        # plain functions defined in the source
        self.stages: list[_Stage] = []
        self.points: list[tuple[int, str]] = []
        self.gave_up: list[tuple[int, str]] = []
        self.notes: list[tuple[int, str]] = []
        self.fanout: list[_Loop] = []
        self.driver_loops: list[int] = []
        self.suppress = 0                       # >0: inside a give-up, infer nothing

    # -- helpers ---------------------------------------------------------------------------
    def give_up(self, node: ast.AST, reason: str) -> _Opaque:
        self.gave_up.append((node.lineno, reason))
        return _Opaque(ast.unparse(node))

    def note(self, line: int, text: str) -> None:
        if (line, text) not in self.notes:
            self.notes.append((line, text))

    def qual(self, e: ast.AST) -> str:
        """Dotted name of an expression through the imports (``ray.get``, ``time.sleep``)."""
        if isinstance(e, ast.Name):
            return self.imports.get(e.id, e.id)
        if isinstance(e, ast.Attribute):
            return f"{self.qual(e.value)}.{e.attr}"
        return ""

    def remote_decorator(self, node: ast.AST) -> dict[str, ast.AST] | None:
        """The keyword arguments of a ``@ray.remote`` decorator, or None."""
        for d in getattr(node, "decorator_list", []):
            if self.qual(d) == "ray.remote":
                return {}
            if isinstance(d, ast.Call) and self.qual(d.func) == "ray.remote":
                return {k.arg: k.value for k in d.keywords if k.arg}
        return None

    def stage(self, kind: str, name: str, node: ast.AST, inputs: list, **details: Any):
        s = _Stage(kind, name, node.lineno, [i for i in inputs if i is not None],
                   details, list(self.driver_loops))
        self.stages.append(s)
        return s

    def broadcast(self, s: _Stage, count: Any) -> _Stage:
        """A single task's result fed to a group of tasks: a Broadcast."""
        if s.kind == "Task":
            s.kind = "Broadcast"
            s.details["count"] = count
        return s

    def fan_count(self) -> Any:
        counts = [c.count for c in self.fanout]
        return counts[0] if len(counts) == 1 else " * ".join(f"({c})" for c in counts)

    # -- statements ------------------------------------------------------------------------
    def module(self, tree: ast.Module) -> None:
        # Python resolves globals at call time: remote definitions and imports anywhere at
        # the top level are visible to functions defined before them.
        for s in tree.body:
            if isinstance(s, (ast.Import, ast.ImportFrom)):
                self.stmt(s)
            elif isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.define(s, analyse_body=False)
        self.body(tree.body)

    def body(self, stmts: list[ast.stmt]) -> None:
        for s in stmts:
            self.stmt(s)

    def stmt(self, s: ast.stmt) -> None:
        if isinstance(s, ast.Import):
            for a in s.names:
                self.imports[a.asname or a.name.split(".")[0]] = \
                    a.name if a.asname else a.name.split(".")[0]
        elif isinstance(s, ast.ImportFrom):
            for a in s.names:
                self.imports[a.asname or a.name] = f"{s.module or ''}.{a.name}"
        elif isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.define(s, analyse_body=True)
        elif isinstance(s, ast.Assign):
            v = self.eval(s.value)
            for t in s.targets:
                self.bind(t, v)
        elif isinstance(s, ast.AnnAssign) and s.value is not None:
            self.bind(s.target, self.eval(s.value))
        elif isinstance(s, ast.AugAssign):      # xs += ...: no longer one group's refs
            self.eval(s.value)
            self.bind(s.target, _Plain(ast.unparse(s.target)))
        elif isinstance(s, ast.Expr):
            self.expression_statement(s)
        elif isinstance(s, ast.For):
            self.for_loop(s)
        elif isinstance(s, ast.While):
            self.while_loop(s)
        elif isinstance(s, ast.If):
            self.branch(s, s.test, s.body + s.orelse, "data-dependent branch: which tasks "
                        "run depends on")
        else:                   # return, with, try, ...: their expressions, then their bodies
            for c in ast.iter_child_nodes(s):
                if isinstance(c, ast.expr):
                    self.eval(c)
                elif isinstance(c, ast.stmt):
                    self.stmt(c)
                elif isinstance(c, (ast.excepthandler, ast.withitem)):
                    for cc in ast.iter_child_nodes(c):
                        self.stmt(cc) if isinstance(cc, ast.stmt) else self.eval(cc)

    def define(self, s: ast.AST, analyse_body: bool) -> None:
        """A remote function or actor class is bound; a plain function is analysed as a
        driver of its own (its parameters are plain values)."""
        kw = self.remote_decorator(s)
        if kw is not None:
            if isinstance(s, ast.ClassDef):
                self.env[s.name] = _ActorCls(s.name)
            else:
                nr = kw.get("num_returns")
                self.env[s.name] = _RemoteFn(s.name, 1 if nr is None else _literal(nr))
            if analyse_body:
                self.nested(s)
            return
        if isinstance(s, ast.ClassDef) or not analyse_body:
            if not isinstance(s, ast.ClassDef):
                self.functions.add(s.name)
                self.env.setdefault(s.name, _Plain(s.name))
            return
        self.functions.add(s.name)
        saved = (self.env, self.fanout, self.driver_loops)
        self.env, self.fanout, self.driver_loops = dict(self.env), [], []
        a = s.args
        for p in a.posonlyargs + a.args + a.kwonlyargs + [x for x in (a.vararg, a.kwarg) if x]:
            self.env[p.arg] = _Plain(p.arg)
        self.body(s.body)
        self.env, self.fanout, self.driver_loops = saved
        self.env[s.name] = _Plain(s.name)

    def nested(self, s: ast.AST) -> None:
        """``.remote()`` inside a remote function or actor: not inferred, runs as plain Ray."""
        own = s.name
        for c in (c for b in s.body for c in ast.walk(b)):
            if _is_remote_call(c):
                callee = ast.unparse(c.func.value)
                why = " (recursive)" if callee == own else ""
                self.gave_up.append((c.lineno, f"`{callee}.remote()` inside remote "
                                     f"`{own}`{why}: nested tasks are not inferred; they "
                                     "run as plain Ray inside tasks"))

    def expression_statement(self, s: ast.Expr) -> None:
        e = s.value
        # out.append(f.remote(...)) inside a fan-out loop: `out` collects the group.
        if self.fanout and isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) \
                and e.func.attr == "append" and isinstance(e.func.value, ast.Name) \
                and len(e.args) == 1:
            self.env[e.func.value.id] = self.collect(self.eval(e.args[0]))
        else:
            self.eval(e)

    def bind(self, target: ast.AST, v: _V) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = v
        elif isinstance(target, (ast.Tuple, ast.List)):
            items = v.items if isinstance(v, _Container) and \
                len(v.items) == len(target.elts) else None
            for k, t in enumerate(target.elts):
                # a, b = f.options(num_returns=2).remote(): each is a ref of that task
                self.bind(t, items[k] if items else
                          v if isinstance(v, (_Ref, _Elem, _Fetched, _Opaque))
                          else _Plain(ast.unparse(t)))

    def branch(self, s: ast.AST, test: ast.AST, controlled: list, what: str) -> None:
        t = self.eval(test)
        dynamic = isinstance(t, _Fetched) and _has_remote(controlled)
        if dynamic:
            self.give_up(s, f"{what} a result fetched at line {t.line} ({t.what})")
            self.suppress += 1
        if isinstance(s, ast.If):
            self.body(s.body)
            self.body(s.orelse)
        else:
            self.driver_body(s, s.body, None)
            self.body(s.orelse)
        if dynamic:
            self.suppress -= 1

    def while_loop(self, s: ast.While) -> None:
        self.branch(s, s.test, s.body, "data-dependent loop: how many iterations (and "
                    "stages) run depends on")

    def is_fanout_loop(self, s: ast.For) -> bool:
        """A loop that builds a group: it appends ``.remote()`` results, or calls one
        ``.remote()`` per element (of its targets), or iterates over a group of actors."""
        if any(isinstance(self.env.get(n.id), _Actors) for n in ast.walk(s.iter)
               if isinstance(n, ast.Name)):
            return True
        targets = _names(s.target)
        for b in s.body:
            if not (isinstance(b, ast.Expr) and isinstance(b.value, ast.Call)):
                continue
            f = b.value.func
            if isinstance(f, ast.Attribute) and f.attr == "append" and _has_remote(b.value):
                return True
            if isinstance(f, ast.Attribute) and f.attr == "remote" \
                    and targets & _names(b.value):
                return True
        return False

    def for_loop(self, s: ast.For) -> None:
        if self.is_fanout_loop(s):
            saved = self.iterate(s.iter, s.target, s, s.body)
            self.body(s.body)
            self.end_iteration(saved)
        else:
            it = self.eval(s.iter)
            is_range = isinstance(s.iter, ast.Call) and self.qual(s.iter.func) == "range"
            count = _literal(s.iter.args[0]) if is_range and len(s.iter.args) == 1 \
                else f"len({ast.unparse(s.iter)})"
            dynamic = isinstance(it, _Fetched) and _has_remote(s.body)
            if dynamic:
                self.give_up(s, f"dynamic loop: how many iterations (and stages) run depends "
                             f"on a result fetched at line {it.line} ({it.what})")
                self.suppress += 1
            self.bind(s.target, _Index(count) if is_range and not isinstance(it, _Fetched)
                      else self.element(it, ast.unparse(s.target)))
            self.driver_body(s, s.body, count)
            if dynamic:
                self.suppress -= 1
        self.body(s.orelse)

    def driver_body(self, s: ast.AST, stmts: list, count: Any) -> None:
        """A driver loop's body, analysed once. Refs fed back into the name they came
        from make a chain (``xs = [f.remote(x) for x in xs]`` k times); otherwise the end
        of each iteration is an evaluation point."""
        before, first = dict(self.env), len(self.stages)
        self.driver_loops.append(s.lineno)
        self.body(stmts)
        self.driver_loops.pop()
        new = self.stages[first:]
        chained: list[_Stage] = []
        for name, v in self.env.items():
            old = before.get(name)
            if count is None or not isinstance(v, _Refs) or not isinstance(old, _Refs) \
                    or v.stage is old.stage:
                continue
            path, st = [], v.stage
            while st is not None and any(st is n for n in new) and st not in path:
                path.append(st)
                if any(i is old.stage for i in st.inputs):
                    for p in path:
                        p.details["repeat"] = count
                        p.loops.remove(s.lineno)
                    chained += path
                    break
                st = st.inputs[0] if st.inputs else None
        if new and all(any(n is c for c in chained) for n in new):
            return
        if _has_remote(stmts) and not self.suppress:
            self.points.append((s.end_lineno or s.lineno,
                                f"end of each iteration of the loop at line {s.lineno}"))

    # -- iteration (comprehension generators and fan-out loops) -----------------------------
    def element(self, v: _V, what: str) -> _V:
        if isinstance(v, _Refs):
            return _Elem(v.stage)
        if isinstance(v, _Actors):
            return _ActorElem(v.stage)
        if isinstance(v, _Parts):
            return _Part(v.stage)
        if isinstance(v, (_Fetched, _Opaque)):
            return v
        return _Plain(what)

    def count_of(self, v: _V, e: ast.AST) -> Any:
        if isinstance(v, (_Refs, _Actors, _Parts)) and "count" in v.stage.details:
            return v.stage.details["count"]
        return f"len({ast.unparse(e)})"

    def iterate(self, it: ast.AST, target: ast.AST, node: ast.AST, controlled: Any):
        """Binds the targets for one element and pushes a fan-out context; returns what to
        restore. A count taken from a fetched result gives up (dynamic fan-out)."""
        fn = self.qual(it.func) if isinstance(it, ast.Call) else ""
        names = _names(target)
        saved = ({n: self.env.get(n) for n in names}, self.suppress)
        if fn == "range" and it.args:
            n = [self.eval(a) for a in it.args]
            count = _literal(it.args[0]) if len(it.args) == 1 else f"len({ast.unparse(it)})"
            source = next((x for x in n if isinstance(x, _Fetched)), n[0])
            values = [_Index(count)]
        elif fn in ("enumerate", "zip") and it.args:
            vals = [self.eval(a) for a in it.args]
            count, source = self.count_of(vals[0], it.args[0]), vals[0]
            values = [self.element(v, ast.unparse(a)) for v, a in zip(vals, it.args)]
            if fn == "enumerate":
                values = [_Index(count), values[0]]
        else:
            source = self.eval(it)
            count, values = self.count_of(source, it), [self.element(source, ast.unparse(it))]
        if isinstance(source, _Fetched) and (source.single or fn == "range") \
                and _has_remote(controlled):
            self.give_up(node, f"dynamic fan-out: the number of tasks depends on a result "
                         f"fetched at line {source.line} ({source.what})")
            self.suppress += 1
        if isinstance(target, (ast.Tuple, ast.List)) and len(values) == len(target.elts):
            for t, v in zip(target.elts, values):
                self.bind(t, v)
        else:
            self.bind(target, values[0] if len(values) == 1 else _Plain(ast.unparse(target)))
        self.fanout.append(_Loop(node.lineno, count, ast.unparse(it)))
        return saved

    def end_iteration(self, saved) -> None:
        self.fanout.pop()
        bindings, self.suppress = saved
        for n, v in bindings.items():
            if v is None:
                self.env.pop(n, None)
            else:
                self.env[n] = v

    def collect(self, elt: _V) -> _V:
        """The list a fan-out builds from one element's value."""
        if isinstance(elt, _Elem):
            return _Refs(elt.stage)
        if isinstance(elt, _ActorElem):
            return _Actors(elt.stage)
        if isinstance(elt, _Part):
            return _Parts(elt.stage)
        if isinstance(elt, _Ref):       # [d for _ in range(n)]: d broadcast to n tasks
            return _Refs(self.broadcast(elt.stage, self.fan_count()))
        if isinstance(elt, (_Fetched, _Opaque)):
            return elt
        return _Container([elt])

    def comprehension(self, e: ast.AST) -> _V:
        saved = []
        controlled = [e.elt] if not isinstance(e, ast.DictComp) else [e.key, e.value]
        for g in e.generators:
            saved.append(self.iterate(g.iter, g.target, e, controlled))
            for cond in g.ifs:
                c = self.eval(cond)
                if isinstance(c, _Fetched) and _has_remote(controlled):
                    self.give_up(e, f"dynamic fan-out: which tasks run is filtered on a "
                                 f"result fetched at line {c.line} ({c.what})")
                    self.suppress += 1
        elt = self.eval(controlled[-1])
        out = self.collect(elt)
        for s in reversed(saved):
            self.end_iteration(s)
        return out

    # -- expressions -----------------------------------------------------------------------
    def lookup(self, name: str) -> _V:
        if name in self.env:
            return self.env[name]
        if name in self.imports or not hasattr(builtins, name):
            return _Plain(name, unresolved=True)
        return _Plain(name)

    def eval(self, e: ast.AST) -> _V:
        if isinstance(e, ast.Name):
            return self.lookup(e.id)
        if isinstance(e, ast.Constant):
            return _Plain(repr(e.value))
        if isinstance(e, ast.Call):
            return self.call(e)
        if isinstance(e, (ast.ListComp, ast.GeneratorExp, ast.SetComp, ast.DictComp)):
            return self.comprehension(e)
        if isinstance(e, ast.Subscript):
            return self.subscript(e)
        if isinstance(e, ast.Starred):
            return self.eval(e.value)
        if isinstance(e, ast.Attribute):
            v = self.eval(e.value)
            if isinstance(v, (_ActorElem, _Actor)):
                return _Method(v, e.attr)
            if isinstance(v, (_Fetched, _Opaque)):
                return v
            # an attribute of an imported module: may be a remote function defined there
            return _Plain(ast.unparse(e), isinstance(v, _Plain) and v.unresolved
                          and isinstance(e.value, ast.Name) and e.value.id in self.imports)
        if isinstance(e, (ast.List, ast.Tuple, ast.Set)):
            return _Container([self.eval(x) for x in e.elts])
        if isinstance(e, ast.Dict):
            return _Container([self.eval(x) for x in e.keys + e.values if x is not None])
        if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Mult):
            for lst, n in ((e.left, e.right), (e.right, e.left)):
                if isinstance(lst, ast.List) and len(lst.elts) == 1:
                    item, times = self.eval(lst.elts[0]), self.eval(n)
                    if isinstance(item, _Ref):          # [d] * n: a broadcast
                        return _Refs(self.broadcast(item.stage, _literal(n)))
                    return times if isinstance(times, _Fetched) else _Container([item])
        if isinstance(e, ast.BinOp) and isinstance(e.op, (ast.Add, ast.Sub, ast.Mult)):
            sides = [self.eval(e.left), self.eval(e.right)]
            ix = [v for v in sides if isinstance(v, _Index)]
            if ix and all(isinstance(v, (_Index, _Plain)) for v in sides):
                return _Index(ix[0].count)  # i + 1, 2 * i: moves with the loop's index
            return next((v for v in sides if isinstance(v, _Fetched)),
                        _Plain(ast.unparse(e)))
        if isinstance(e, ast.IfExp):
            t = self.eval(e.test)
            if isinstance(t, _Fetched) and _has_remote([e.body, e.orelse]):
                self.give_up(e, f"data-dependent branch: which tasks run depends on a "
                             f"result fetched at line {t.line} ({t.what})")
                self.suppress += 1
                self.eval(e.body), self.eval(e.orelse)
                self.suppress -= 1
                return _Opaque(ast.unparse(e))
            body = self.eval(e.body)
            self.eval(e.orelse)
            return body
        if isinstance(e, ast.Lambda):
            return _Plain(ast.unparse(e))
        # anything else: evaluate the parts (for their calls); fetched data taints it
        vals = [self.eval(c) for c in ast.iter_child_nodes(e) if isinstance(c, ast.expr)]
        return next((v for v in vals if isinstance(v, _Fetched)), _Plain(ast.unparse(e)))

    def subscript(self, e: ast.Subscript) -> _V:
        v, idx = self.eval(e.value), self.eval(e.slice)
        if isinstance(v, _Elem) or isinstance(v, _Part):
            st = v.stage
            if st.kind == "Map" and not _multi(st.details.get("num_returns")):
                # a task returning one list per partition, indexed per reducer: a shuffle
                st.details.update(shuffle=True, indexed=True, num_returns=idx.count
                                  if isinstance(idx, _Index) else ast.unparse(e.slice))
            return _Part(st)
        if isinstance(v, _Actors):
            return _ActorElem(v.stage) if isinstance(idx, _Index) else _Actor(v.stage.name)
        if isinstance(v, _Refs) and isinstance(idx, _Index):
            return _Elem(v.stage)
        if isinstance(v, _Refs):
            return _Opaque(ast.unparse(e))
        return next((x for x in (v, idx) if isinstance(x, (_Fetched, _Opaque))),
                    _Plain(ast.unparse(e)))

    def call(self, e: ast.Call) -> _V:
        f = e.func
        if _is_remote_call(e) and self.qual(f) != "ray.remote":
            return self.remote_call(e)
        q = self.qual(f)
        vals = [self.eval(a) for a in e.args] + [self.eval(k.value) for k in e.keywords]
        if q in ("ray.get", "ray.wait"):
            self.points.append((e.lineno, q))
            single = bool(vals) and isinstance(vals[0], (_Ref, _Elem, _Part))
            return _Fetched(e.lineno, q, single and q == "ray.get")
        if q == "time.sleep":
            self.points.append((e.lineno, "time.sleep"))
            return _Plain("None")
        if q == "ray.remote" and e.args:
            v, kw = vals[0], {k.arg: k.value for k in e.keywords}
            nr = _literal(kw["num_returns"]) if "num_returns" in kw else 1
            if isinstance(v, _Plain) and isinstance(e.args[0], ast.Name):
                return _RemoteFn(e.args[0].id, nr)
            return v
        if isinstance(f, ast.Attribute) and f.attr == "options":
            base = self.eval(f.value)
            nr = next((_literal(k.value) for k in e.keywords if k.arg == "num_returns"), None)
            if isinstance(base, _RemoteFn):
                return _RemoteFn(base.name, base.num_returns if nr is None else nr)
            return base
        if isinstance(f, ast.Name) and f.id in self.functions and \
                any(_has_ref(v) for v in vals) and not self.suppress:
            return self.give_up(e, f"call of `{f.id}` with references: the analysis does "
                                "not follow calls; analyse that function on its own")
        self.eval(f)
        return next((v for v in vals if isinstance(v, _Fetched)), _Plain(ast.unparse(e)))

    # -- .remote() calls -------------------------------------------------------------------
    def remote_call(self, e: ast.Call) -> _V:
        target = e.func.value
        callee = self.eval(target)
        if isinstance(callee, _Plain) and callee.unresolved:
            # a name the analysed code does not define: assumed to be a remote function
            self.note(e.lineno, f"`{callee.text}` is not defined in the analysed code: "
                      "assumed to be a remote function")
            callee = _RemoteFn(callee.text)
        if self.suppress:
            self.arguments(e)
            return _Opaque(ast.unparse(e))
        if isinstance(callee, _RemoteFn):
            return self.task(e, callee)
        if isinstance(callee, _ActorCls):
            return self.create_actor(e, callee)
        if isinstance(callee, _Method):
            return self.actor_call(e, callee)
        self.arguments(e)
        if isinstance(callee, _Opaque):
            return callee
        return self.give_up(e, f"cannot resolve `{ast.unparse(target)}` to a remote "
                            "function or actor of the analysed code")

    def arguments(self, e: ast.Call):
        """(positional (ast, value) pairs, starred values, the reason it cannot be
        inferred or None). Refs inside containers or keyword arguments are hidden from
        the IR's calling convention."""
        pos, starred, problem = [], [], None
        for a in e.args:
            if isinstance(a, ast.Starred):
                starred.append(self.eval(a.value))
            else:
                pos.append((a, self.eval(a)))
        for k in e.keywords:
            if _has_ref(self.eval(k.value)):
                problem = (f"a reference is passed as keyword argument `{k.arg}`: the IR "
                           "passes objects positionally, last")
        for a, v in pos:
            if isinstance(v, (_Container, _Refs, _Parts)) and _has_ref(v):
                problem = (f"references passed inside a container (`{ast.unparse(a)}`): "
                           "Ray does not resolve them for the task and the IR cannot see "
                           "the dependency; pass them as separate arguments")
        return pos, starred, problem

    def objects(self, pos: list, what: str):
        """The object of a call in a fan-out: the per-element ref, which must be the last
        positional argument; a single ref there is broadcast. Returns (stage, index of
        the object argument, side-input stages) or a reason."""
        last = len(pos) - 1
        elems = [i for i, (_, v) in enumerate(pos) if isinstance(v, (_Elem, _Part))]
        singles = [i for i, (_, v) in enumerate(pos) if isinstance(v, _Ref)]
        if elems and elems != [last]:
            a = ast.unparse(pos[elems[0]][0])
            return (f"the object `{a}` is not the last positional argument: the IR calls "
                    f"{what}(*args[i], objects[i])")
        if elems:
            obj, at = pos[last][1].stage, last
        elif singles and singles[-1] == last:
            obj, at = self.broadcast(pos[last][1].stage, self.fan_count()), last
        else:
            obj, at = None, None
        side = [self.broadcast(pos[i][1].stage, self.fan_count()) for i in singles if i != at]
        return obj, at, side

    def task(self, e: ast.Call, fn: _RemoteFn) -> _V:
        pos, starred, problem = self.arguments(e)
        if problem:
            return self.give_up(e, problem)
        if not self.fanout:
            reads = [v.stage for _, v in pos if isinstance(v, _REF_VALUES)]
            reads += [v.stage for v in starred if isinstance(v, _REF_VALUES)]
            return _Ref(self.stage("Task", fn.name, e, reads))
        joined = self.join(e, fn, pos, starred)
        if joined is not None:
            return joined
        found = self.objects(pos, fn.name)
        if isinstance(found, str):
            return self.give_up(e, found)
        obj, at, side = found
        details: dict[str, Any] = {"count": self.fan_count(),
                                   "args": [ast.unparse(a) for i, (a, _) in enumerate(pos)
                                            if i != at]}
        if obj is None:
            details["over"] = " x ".join(c.over for c in self.fanout)
        if _multi(fn.num_returns):
            details.update(num_returns=fn.num_returns, shuffle=True)
        return _Elem(self.stage("Map", fn.name, e, [obj] + side, **details))

    def join(self, e: ast.Call, fn: _RemoteFn, pos: list, starred: list) -> _V | None:
        """A task of a fan-out reading several objects of one stage, as its last
        positional arguments: a Join (``add.remote(refs[i], refs[i + 1])``; a reduce into
        tasks, ``f.remote(*[s[j] for s in shuffled])`` or ``f.remote(*refs)``). None when
        the call reads at most one object."""
        trailing = [i for i, (_, v) in enumerate(pos) if isinstance(v, (_Elem, _Part))]
        spread = [v for v in starred if _has_ref(v)]
        if not spread and len(trailing) < 2:
            return None
        reads = [pos[i][1] for i in trailing] + spread
        lead = [a for i, (a, v) in enumerate(pos) if i not in trailing]
        if spread and (trailing or len(spread) > 1 or not isinstance(e.args[-1], ast.Starred)):
            return self.give_up(e, f"`{fn.name}` mixes a spread group (`*...`) with other "
                                "references, or puts it before other arguments: a Join's "
                                "task takes one stage's objects last")
        if trailing and trailing != list(range(len(pos) - len(trailing), len(pos))):
            return self.give_up(e, f"`{fn.name}` reads several objects that are not its "
                                "last positional arguments: a Join's task takes them last")
        if len({id(v.stage) for v in reads if isinstance(v, _OfStage)}) != 1 or \
                not all(isinstance(v, (_Elem, _Part, _Refs, _Parts)) for v in reads):
            return self.give_up(e, f"`{fn.name}` joins objects of more than one stage: a "
                                "Join picks from one")
        v = reads[0]
        picks = ("return i of every task" if isinstance(v, _Parts) else
                 "every object" if isinstance(v, _Refs) else f"{len(reads)} objects")
        details: dict[str, Any] = {"count": self.fan_count(), "picks": picks,
                                   "args": [ast.unparse(a) for a in lead]}
        if _multi(fn.num_returns):
            details.update(num_returns=fn.num_returns, shuffle=True)
        return _Elem(self.stage("Join", fn.name, e, [v.stage], **details))

    def create_actor(self, e: ast.Call, cls: _ActorCls) -> _V:
        pos, _, problem = self.arguments(e)
        if problem:
            return self.give_up(e, problem)
        if not self.fanout:
            self.note(e.lineno, f"a single actor `{cls.name}`: plain Ray (InitActors is a "
                      "group of actors made in a loop or comprehension)")
            return _Actor(cls.name)
        return _ActorElem(self.stage("InitActors", cls.name, e, [], count=self.fan_count(),
                                     args=[ast.unparse(a) for a, _ in pos]))

    def actor_call(self, e: ast.Call, m: _Method) -> _V:
        pos, starred, problem = self.arguments(e)
        if problem:
            return self.give_up(e, problem)
        recv = m.receiver
        if not isinstance(recv, _ActorElem) or not self.fanout:
            name = recv.name if isinstance(recv, _Actor) else "?"
            self.note(e.lineno, f"`{name}.{m.name}` on a single actor: plain Ray")
            return _Opaque(ast.unparse(e))
        actors, name = recv.stage, f"{recv.stage.name}.{m.name}"
        groups = [v for v in starred if isinstance(v, (_Refs, _Parts))]
        args = [ast.unparse(a) for a, _ in pos]
        if groups:                  # method(*args[i], *objects): every object, in order
            src = groups[-1].stage
            shuffled = isinstance(groups[-1], _Parts)
            if shuffled and src.kind == "Map" and "num_returns" not in src.details:
                src.details.update(shuffle=True, num_returns=actors.details.get("count"))
            return _Elem(self.stage("ReduceActors", name, e, [actors, src],
                                    count=actors.details.get("count"), args=args,
                                    shuffle=shuffled))
        found = self.objects(pos, name)
        if isinstance(found, str):
            return self.give_up(e, found)
        obj, at, side = found
        if obj is None:
            self.note(e.lineno, f"`{name}` called without objects: plain Ray actor calls")
            return _Opaque(ast.unparse(e))
        return _Elem(self.stage("MapActors", name, e, [actors, obj] + side,
                                count=actors.details.get("count"),
                                args=[a for i, a in enumerate(args) if i != at]))

    # -- the report ------------------------------------------------------------------------
    def report(self, source: str) -> Analysis:
        kept = sorted((s for s in self.stages if s.kind != "Task"),
                      key=lambda s: (s.lineno, self.stages.index(s)))
        index = {id(s): i for i, s in enumerate(kept)}
        nodes = []
        for i, s in enumerate(kept):
            d = dict(s.details)
            if s.loops:
                d["per_iteration"] = s.loops[-1]
            nodes.append(InferredNode(i, s.kind, s.name, s.lineno,
                                      [index[id(x)] for x in s.inputs if id(x) in index], d))
        for s in self.stages:
            if s.kind == "Task":
                self.note(s.lineno, f"a single task `{s.name}`: plain Ray (its result "
                          "feeds no group of tasks)")
        return Analysis(source, nodes, sorted(set(self.points)), sorted(self.gave_up),
                        sorted(self.notes))


# ---- entry point ----------------------------------------------------------------------------
def _ray_object(obj: Any) -> _V | None:
    """A Ray remote function or actor class among a function's globals, by type name
    (this layer does not import Ray)."""
    t = type(obj)
    if t.__name__ == "RemoteFunction" and t.__module__.startswith("ray"):
        fn = getattr(obj, "_function", None)
        opts = getattr(obj, "_default_options", {}) or {}
        return _RemoteFn(getattr(fn, "__name__", "?"), opts.get("num_returns", 1))
    if any(c.__name__ == "ActorClass" for c in t.__mro__):
        meta = getattr(obj, "__ray_metadata__", None)
        return _ActorCls(getattr(meta, "class_name", t.__name__))
    return None


def _seed_globals(a: _Analyzer, fn: types.FunctionType, tree: ast.AST) -> None:
    """Binds the names the function's source uses to what its globals and closure hold:
    modules (for ``ray.get``, ``time.sleep``), remote functions and actor classes."""
    scope = dict(fn.__globals__)
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            scope[name] = cell.cell_contents
        except ValueError:          # an empty cell
            pass
    for name in sorted(_names(tree)):
        if name not in scope:
            continue
        obj = scope[name]
        if isinstance(obj, types.ModuleType):
            a.imports[name] = obj.__name__
        elif (v := _ray_object(obj)) is not None:
            a.env[name] = v
        else:
            a.env[name] = _Plain(name)


def analyze(source_or_function: Any) -> Analysis:
    """Reads plain Ray code without running it and reports the IR it would infer.

    ``source_or_function``: Python source text, or a function, method or module (its
    source is read with ``inspect.getsource``). Line numbers are the source's own (a
    function's or module's lines in its file)."""
    obj, offset, fn = source_or_function, 0, None
    if isinstance(obj, str):
        source, name = obj, "<source>"
    elif isinstance(obj, (types.FunctionType, types.MethodType, types.ModuleType)):
        fn = obj.__func__ if isinstance(obj, types.MethodType) else obj
        name = getattr(fn, "__qualname__", None) or fn.__name__
        try:
            source = textwrap.dedent(inspect.getsource(fn))
        except (OSError, TypeError) as e:
            raise ValueError(f"analyze: cannot read the source of {name} ({e}); pass the "
                             "source text instead") from None
        if isinstance(fn, types.FunctionType):
            offset = fn.__code__.co_firstlineno - 1
    else:
        hint = ""
        if _ray_object(obj) is not None:
            hint = "; a remote function or actor class is not a driver: pass the code " \
                   "that calls .remote()"
        raise TypeError(f"analyze() takes Python source text (a str), a function or a "
                        f"module; got {type(obj).__name__}{hint}")
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ValueError(f"analyze: the source does not parse: {e.msg} at line "
                         f"{(e.lineno or 0) + offset}") from None
    ast.increment_lineno(tree, offset)
    a = _Analyzer()
    if isinstance(fn, types.FunctionType):
        _seed_globals(a, fn, tree)
    a.module(tree)
    return a.report(name)
