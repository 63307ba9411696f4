"""IR nodes: plain data (a kind, a name, inputs, parameters), checked on construction.

Every node is a *group*: when evaluated, all its tasks carry one group id, and name the
group of the node they read from. Evaluation is semi-lazy: ``node.eval()`` lowers the
subtree once (memoised, see lower.py) and returns Ray futures; ``InitActors`` is placed
lazily, by the first ReduceActors / MapActors evaluated on it, next to its data.

    Broadcast(task, n, *args)                  invoke once, n handles to the result
    Map(task, objects, args, num_returns=1)    one task per object: task(obj, *args[i])
    InitActors(actor_cls, n, args)             n actors, actor i built with args[i]
    ReduceActors(method, actors, objects, args)  actor i: method(list_of_objects, *args[i])
    MapActors(method, actors, objects, args)   actor i: method(objects[i], *args[i])
    Objects(refs)                              existing ObjectRefs / values as a source
"""
from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

from ray.actor import ActorClass
from ray.remote_function import RemoteFunction

from irfront.errors import IRError
from ray_patch.submit import task_name as _name_of

_uids = itertools.count(1)


def _next_uid() -> str:
    # A bijection of the counter onto 16 bits: short, distinct, deterministic labels.
    return f"{(next(_uids) * 40503) & 0xFFFF:04x}"


@dataclass(frozen=True)
class NodePlacement:
    """Where an evaluated node's tasks went."""

    node: str  # the node's label
    group_id: int
    scheduler: str  # vanilla | pack | locality
    depends_on: int | None  # the group it read from
    counts: dict[str, int] | None  # Ray node hex id -> tasks (None under vanilla)

    def __str__(self) -> str:
        counts = ("not recorded (vanilla Ray places each task itself)" if self.counts is None
                  else ", ".join(f"{h[:8]}: {c}" for h, c in sorted(self.counts.items())))
        dep = f" <- g{self.depends_on}" if self.depends_on is not None else ""
        return f"{self.node} g{self.group_id}{dep} [{self.scheduler}] {counts}"


def _free_group(runtime_token: int, group_id: int) -> None:
    """Finalizer of an evaluated node: queue its group for freeing (never frees inline)."""
    try:
        from ray_patch.runtime import _RUNTIME
        if _RUNTIME is not None and _RUNTIME.token == runtime_token:
            _RUNTIME.defer_free(group_id)
    except Exception:  # interpreter shutdown
        pass




class Node:
    """Base of the IR nodes. Subclasses set ``kind`` and check their arguments."""

    kind = "Node"

    def __init__(self, name: str, inputs: Sequence["Node"], params: dict[str, Any]):
        self.name = name
        self.inputs = tuple(inputs)
        self.params = params
        self.uid = _next_uid()
        # Evaluation state (set by lower.evaluate).
        self._value: list | None = None
        self._group_id: int | None = None
        self._depends_on: int | None = None
        self._scheduler: str | None = None
        self._freed = False
        self._finalizer: weakref.finalize | None = None

    # ---- identity -----------------------------------------------------------------------
    @property
    def label(self) -> str:
        return f"{self.kind}[{self.name}]#{self.uid}"

    def __repr__(self) -> str:
        if not self.inputs:
            return self.label
        return f"{self.label}({', '.join(repr(i) for i in self.inputs)})"

    def explain(self) -> str:
        """The DAG below this node, one node per line, with group ids once evaluated."""
        lines: list[str] = []

        def walk(n: Node, depth: int) -> None:
            state = ("freed" if n._freed else f"g{n._group_id} [{n._scheduler}]"
                     if n._group_id is not None else "not evaluated")
            lines.append(f"{'  ' * depth}{n.label}  {state}")
            for i in n.inputs:
                walk(i, depth + 1)

        walk(self, 0)
        return "\n".join(lines)

    # ---- shape ----------------------------------------------------------------------------
    def __len__(self) -> int:
        """Handles ``eval()`` returns: tasks for Map, n for Broadcast, actors otherwise."""
        raise NotImplementedError

    @property
    def num_objects(self) -> int:
        """Objects a Map over this node gets (a num_returns=k Map gives k per task)."""
        return len(self)

    # ---- evaluation ----------------------------------------------------------------------
    def eval(self) -> list:
        """Evaluates the subtree once (memoised) and returns Ray futures (ObjectRefs;
        actor handles for InitActors)."""
        from irfront.lower import evaluate
        return evaluate(self)

    def get(self, timeout: float | None = None) -> list:
        """``ray.get`` of ``eval()``; a failing task's error gets a note naming this node."""
        from irfront.lower import get_node
        return get_node(self, timeout=timeout)

    @property
    def evaluated(self) -> bool:
        return self._value is not None

    @property
    def group_id(self) -> int | None:
        return self._group_id

    def placement(self) -> NodePlacement:
        """Its group id and how many tasks went to each node (after eval())."""
        if self._group_id is None:
            raise IRError(self.label, "not evaluated yet; call node.eval() before "
                          "node.placement()")
        counts = None
        if self._scheduler != "vanilla":
            import ray_patch
            counts = ray_patch.placement(self._group_id)
        return NodePlacement(self.label, self._group_id, self._scheduler or "",
                             self._depends_on, counts)

    def free(self) -> None:
        """Frees the node's group and drops its futures; freeing twice is fine."""
        if self._freed:
            return
        self._freed = True
        self._value = None
        fin, self._finalizer = self._finalizer, None
        if fin is not None:
            fin()  # queues the free
            try:
                import ray_patch
                ray_patch.free_groups(())  # applies queued frees now
            except Exception:
                pass

    def _set_result(self, value: list, group_id: int, scheduler: str,
                    depends_on: int | None) -> None:
        self._value = value
        self._group_id = group_id
        self._scheduler = scheduler
        self._depends_on = depends_on
        if scheduler != "vanilla":
            from ray_patch.runtime import current_runtime
            rt = current_runtime()
            if rt is None:
                return
            fin = weakref.finalize(self, _free_group, rt.token, group_id)
            fin.atexit = False
            self._finalizer = fin

    def validate(self) -> "Node":
        """Checks the whole subtree (constructors check each node); returns self."""
        for i in self.inputs:
            i.validate()
        return self


# ---- argument checks ----------------------------------------------------------------------
def _check_task(label: str, task: Any) -> None:
    if isinstance(task, RemoteFunction):
        return
    if isinstance(task, ActorClass):
        raise IRError(label, f"task must be a @ray.remote function; got actor class "
                      f"'{_name_of(task)}'; use InitActors for actor classes")
    what = "function" if callable(task) else type(task).__name__
    raise IRError(label, f"task must be a @ray.remote function; got plain {what} "
                  f"'{_name_of(task)}'; decorate it with @ray.remote")


def _check_count(label: str, what: str, n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise IRError(label, f"{what} must be a positive int; got {n!r}")
    return n


def _check_args(label: str, args: Any, count: int, per: str) -> list[tuple] | None:
    """``args``: None, or one tuple/list of extra arguments per object/actor."""
    if args is None:
        return None
    if not isinstance(args, (list, tuple)):
        raise IRError(label, f"args must be a list with one argument tuple per {per}; got "
                      f"{type(args).__name__}; e.g. args=[(x,) for _ in range({count})]")
    if len(args) != count:
        raise IRError(label, f"got {len(args)} argument tuples for {count} {per}s; pass "
                      f"one per {per}, e.g. args=[(x,) for _ in range({count})]")
    out = []
    for i, a in enumerate(args):
        if not isinstance(a, (list, tuple)):
            raise IRError(label, f"args[{i}] is {type(a).__name__} {a!r}; each entry must "
                          f"be a tuple or list of arguments, e.g. args=[({a!r},) for _ in "
                          f"range({count})]")
        out.append(tuple(a))
    return out


def _as_source(label: str, objects: Any) -> "Node":
    if isinstance(objects, Node):
        if isinstance(objects, InitActors):
            raise IRError(label, f"objects is {objects.label}, an actor group; pass a node "
                          "that yields objects (Broadcast, Map, ReduceActors, MapActors)")
        return objects
    if isinstance(objects, (list, tuple)):
        return Objects(objects)
    raise IRError(label, f"objects must be an IR node or a list of ObjectRefs; got "
                  f"{type(objects).__name__}")


def _check_actors(label: str, actors: Any) -> "InitActors":
    if not isinstance(actors, InitActors):
        raise IRError(label, f"actors must be an InitActors node; got "
                      f"{type(actors).__name__}; create them with InitActors(cls, n, args)")
    return actors


def _check_method(label: str, actors: "InitActors", method: Any) -> str:
    if not isinstance(method, str):
        raise IRError(label, f"method must be the method's name as a str; got "
                      f"{type(method).__name__}")
    cls = actors.actor_cls.__ray_metadata__.modified_class
    if not callable(getattr(cls, method, None)) or method.startswith("__"):
        names = sorted(m for m in dir(cls) if not m.startswith("_")
                       and callable(getattr(cls, m, None)))
        raise IRError(label, f"actor class '{actors.name}' has no method '{method}'; "
                      f"pass one of: {', '.join(names)}")
    return method


# ---- nodes ---------------------------------------------------------------------------------
class Objects(Node):
    """Existing ObjectRefs (or values, put into the object store at eval) as a source."""

    kind = "Objects"

    def __init__(self, objects: Sequence[Any]):
        super().__init__(str(len(objects)), (), {"objects": list(objects)})
        if not objects:
            raise IRError(self.label, "got no objects; pass a non-empty list")

    def __len__(self) -> int:
        return len(self.params["objects"])


class Broadcast(Node):
    """Invokes ``task(*args)`` once; ``eval()`` gives ``n`` handles to the one result."""

    kind = "Broadcast"

    def __init__(self, task: RemoteFunction, n: int, *args: Any):
        super().__init__(_name_of(task), (), {"task": task, "n": n, "args": args})
        _check_task(self.label, task)
        _check_count(self.label, "n", n)
        self.task, self.n, self.args = task, n, args

    def __len__(self) -> int:
        return self.n


class Map(Node):
    """One task per object of ``objects``: ``task(obj_i, *args[i])``.

    With ``num_returns=k`` each task returns k objects (a shuffle's k partitions) and
    ``eval()`` gives one list of k ObjectRefs per task.
    """

    kind = "Map"

    def __init__(self, task: RemoteFunction, objects: Any, args: Sequence | None = None,
                 *, num_returns: int = 1):
        name = _name_of(task)
        super().__init__(name, (), {})
        _check_task(self.label, task)
        _check_count(self.label, "num_returns", num_returns)
        src = _as_source(self.label, objects)
        self.inputs = (src,)
        self.task, self.objects, self.num_returns = task, src, num_returns
        self.args = _check_args(self.label, args, src.num_objects, "object")
        self.params = {"task": task, "num_returns": num_returns, "args": self.args}

    def __len__(self) -> int:
        return self.objects.num_objects

    @property
    def num_objects(self) -> int:
        return len(self) * self.num_returns


class InitActors(Node):
    """``n`` actors of ``actor_cls``, actor i built with ``args[i]``; placed lazily by the
    first ReduceActors / MapActors evaluated on them (or by ``eval()``)."""

    kind = "InitActors"

    def __init__(self, actor_cls: ActorClass, n: int, args: Sequence | None = None):
        super().__init__(_name_of(actor_cls), (), {})
        if not isinstance(actor_cls, ActorClass):
            what = ("remote function" if isinstance(actor_cls, RemoteFunction) else
                    f"plain {'class' if isinstance(actor_cls, type) else type(actor_cls).__name__}")
            raise IRError(self.label, f"actor_cls must be a @ray.remote class; got {what} "
                          f"'{_name_of(actor_cls)}'; decorate the class with @ray.remote")
        _check_count(self.label, "n", n)
        self.actor_cls, self.n = actor_cls, n
        self.args = _check_args(self.label, args, n, "actor")
        self.params = {"actor_cls": actor_cls, "n": n, "args": self.args}

    def __len__(self) -> int:
        return self.n


class _ActorCall(Node):
    def __init__(self, method: str, actors: Any, objects: Any, args: Sequence | None):
        super().__init__(str(method), (), {})
        self.actors = _check_actors(self.label, actors)
        self.method = _check_method(self.label, self.actors, method)
        self.objects = _as_source(self.label, objects)
        self.inputs = (self.actors, self.objects)
        self.args = _check_args(self.label, args, self.actors.n, "actor")
        self.params = {"method": method, "args": self.args}

    def __len__(self) -> int:
        return self.actors.n


class ReduceActors(_ActorCall):
    """Actor i runs ``method(objects_i, *args[i])`` with a list of objects: all of them,
    or, when ``objects`` is a Map with num_returns == number of actors, the i-th return
    of every task (the all-to-all shuffle). One ObjectRef per actor."""

    kind = "ReduceActors"

    def __init__(self, method: str, actors: InitActors, objects: Any,
                 args: Sequence | None = None):
        super().__init__(method, actors, objects, args)
        src = self.objects
        if isinstance(src, Map) and src.num_returns > 1 and src.num_returns != self.actors.n:
            raise IRError(self.label, f"objects come from {src.label} with num_returns="
                          f"{src.num_returns} but there are {self.actors.n} actors; pass "
                          f"num_returns={self.actors.n} to the Map (one partition per actor)")


class MapActors(_ActorCall):
    """Actor i runs ``method(objects[i], *args[i])``: one object per actor."""

    kind = "MapActors"

    def __init__(self, method: str, actors: InitActors, objects: Any,
                 args: Sequence | None = None):
        super().__init__(method, actors, objects, args)
        if self.objects.num_objects != self.actors.n:
            raise IRError(self.label, f"got {self.objects.num_objects} objects for "
                          f"{self.actors.n} actors; MapActors gives one object to each "
                          "actor; use ReduceActors to give every actor all objects")
