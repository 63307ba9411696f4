"""IR nodes: plain data (a kind, a name, inputs, parameters), checked on construction.

Every node is a *group*: evaluated, all its tasks carry one group id and name the group
of the node they read from. The calling conventions are the 2018 IR's:

    Broadcast(task, n, *args)                   task(*args) once; its object n times
    Map(task, objects, args=None, num_returns=1)  task i: task(*args[i], objects[i])
    InitActors(actor_cls, n, args=None)         actor i: actor_cls(*args[i])
    ReduceActors(method, actors, objects, args=None, *, combine=None)
                                                actor i: method(*args[i], *objects)
    MapActors(method, actors, objects, args=None)
                                                actor i: method(*args[i], objects[i])
    Objects(refs)                               existing ObjectRefs / values as a source

irfront's extension for tasks that read several objects (a join, ``add.remote(a, b)``,
``f.remote(*refs)``):

    Join(task, objects, picks, args=None, num_returns=1)
                                                task i: task(*args[i], *objects[picks[i]])

``task`` may be a ``@ray.remote`` function or its ``f.options(...)`` wrapper, and
``actor_cls`` a ``@ray.remote`` class or its ``Cls.options(...)`` wrapper: the options
(``num_cpus``, ``num_gpus``, ``resources``, ``max_retries``, a ``scheduling_strategy``...)
are the node's and are kept through fusion and submission. ``node.task_options`` /
``node.actor_options`` hold them; ``node.ray_options`` adds the function's or class's own
``@ray.remote`` options underneath (what Ray applies).

irfront's extension: when the ``objects`` of ReduceActors is a Map with ``num_returns``
equal to the number of actors (a shuffle), actor i gets the i-th return of every task,
still as separate arguments: ``method(*args[i], *[ret[i] for ret in tasks])``.

Nodes hold no evaluation state. What an evaluation produced (futures, group ids) lives in
``irfront.lowering.evaluation``; ``node.eval()``, ``node.get()``, ``node.placement()`` and
``node.free()`` call the evaluator that layer installs with ``set_evaluator``.
Passes (``irfront.passes``) build new nodes, never change these: ``FusedMap`` and
``GroupedShuffle`` are node kinds of their own, each naming the user's node it replaces.
"""
from __future__ import annotations

import contextlib
import itertools
from typing import Any, Iterator, Protocol, Sequence

from ray.actor import ActorClass
from ray.remote_function import RemoteFunction

import ray_patch.validate as check
from ray_patch.options import effective_options
from irfront.errors import IRError
from irfront.ir.reducers import CheckpointedReducer

_uids = itertools.count(1)


def _next_uid() -> str:
    # A bijection of the counter onto 16 bits: short, distinct, deterministic labels.
    return f"{(next(_uids) * 40503) & 0xFFFF:04x}"


class Evaluator(Protocol):
    """What a node's evaluation methods call (installed by the lowering layer)."""

    def eval(self, node: "Node") -> list: ...
    def get(self, node: "Node", timeout: float | None) -> list: ...
    def placement(self, node: "Node") -> Any: ...
    def free(self, node: "Node") -> None: ...
    def group_id(self, node: "Node") -> int | None: ...
    def state(self, node: "Node") -> str: ...
    def evaluated(self, node: "Node") -> bool: ...


_EVALUATOR: Evaluator | None = None


def set_evaluator(evaluator: Evaluator) -> None:
    global _EVALUATOR
    _EVALUATOR = evaluator


def _evaluator(node: "Node") -> Evaluator:
    if _EVALUATOR is None:
        raise IRError(node.label, "no evaluator installed; import irfront (not only "
                      "irfront.ir) before evaluating nodes")
    return _EVALUATOR


@contextlib.contextmanager
def _checked(label: str) -> Iterator[None]:
    """Re-raises the validator's errors with the node's label in front."""
    try:
        yield
    except check.GroupError as e:
        raise IRError(label, str(e)) from None


class Node:
    """Base of the IR nodes. Subclasses set ``kind`` and check their arguments."""

    kind = "Node"

    def __init__(self, name: str, inputs: Sequence["Node"] = (),
                 replaces: "Node | None" = None):
        self.name = name
        self.inputs: tuple[Node, ...] = tuple(inputs)
        self.uid = _next_uid()
        # The user's node this one stands for (set by passes): its results are recorded
        # for that node too.
        self.replaces = replaces

    # ---- identity -----------------------------------------------------------------------
    @property
    def label(self) -> str:
        return f"{self.kind}[{self.name}]#{self.uid}"

    def __repr__(self) -> str:
        if not self.inputs:
            return self.label
        return f"{self.label}({', '.join(repr(i) for i in self.inputs)})"

    def walk(self) -> Iterator["Node"]:
        """Every node of the DAG below (and including) this one, once, inputs first."""
        seen: set[int] = set()
        order: list[Node] = []

        def visit(n: Node) -> None:
            if id(n) in seen:
                return
            seen.add(id(n))
            for i in n.inputs:
                visit(i)
            order.append(n)

        visit(self)
        return iter(order)

    def explain(self) -> str:
        """The DAG below this node, one node per line, with group ids once evaluated."""
        lines: list[str] = []

        def walk(n: Node, depth: int) -> None:
            state = _EVALUATOR.state(n) if _EVALUATOR is not None else "not evaluated"
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

    # ---- evaluation (delegated to the lowering layer's evaluator) ---------------------------
    def eval(self) -> list:
        """Evaluates the subtree once (memoised) and returns Ray futures (ObjectRefs;
        actor handles for InitActors)."""
        return _evaluator(self).eval(self)

    def get(self, timeout: float | None = None) -> list:
        """``ray.get`` of ``eval()``; a failing task's error gets a note naming this node."""
        return _evaluator(self).get(self, timeout)

    def placement(self) -> Any:
        """Its group id and how many tasks went to each node (after eval())."""
        return _evaluator(self).placement(self)

    def free(self) -> None:
        """Frees the node's group and drops its futures; freeing twice is fine."""
        _evaluator(self).free(self)

    @property
    def group_id(self) -> int | None:
        return _evaluator(self).group_id(self) if _EVALUATOR is not None else None

    @property
    def evaluated(self) -> bool:
        """Whether ``eval()`` has futures for this node (not freed)."""
        return _EVALUATOR is not None and _EVALUATOR.evaluated(self)

    def validate(self) -> "Node":
        """Checks the whole DAG (constructors check each node); returns self."""
        for n in self.walk():
            n._validate()
        return self

    def _validate(self) -> None:
        """Cross-node checks of this node (constructors did the local ones)."""


# ---- argument checks shared by the node kinds -----------------------------------------------
def _as_source(label: str, objects: Any) -> Node:
    if isinstance(objects, Node):
        if isinstance(objects, InitActors):
            raise IRError(label, f"objects is {objects.label}, an actor group; pass a node "
                          "that yields objects (Broadcast, Map, ReduceActors, MapActors)")
        return objects
    if isinstance(objects, (list, tuple)):
        return Objects(objects)
    raise IRError(label, f"objects must be an IR node or a list of ObjectRefs; got "
                  f"{type(objects).__name__}")


def _fn_of(task: RemoteFunction) -> Any:
    return task._function


class _Task:
    """What Broadcast and Map share: the task as given (``task``: a remote function or
    its ``f.options(...)`` wrapper), the remote function (``function``) and the
    wrapper's options (``task_options``, {} without one)."""

    task: Any
    function: RemoteFunction
    task_options: dict[str, Any]

    @property
    def ray_options(self) -> dict[str, Any]:
        """The function's own @ray.remote options with the node's on top."""
        return effective_options(self.function, self.task_options)


# ---- nodes ---------------------------------------------------------------------------------
class Objects(Node):
    """Existing ObjectRefs (or values, put into the object store at eval) as a source.
    ``inline=True``: values are handed to the tasks that read them as arguments, as Ray
    passes a value given to ``.remote()`` (it puts a large one itself), and ``eval()``
    gives them as they are."""

    kind = "Objects"

    def __init__(self, objects: Sequence[Any], *, inline: bool = False):
        super().__init__(str(len(objects)))
        self.objects = list(objects)
        self.inline = bool(inline)
        if not self.objects:
            raise IRError(self.label, "got no objects; pass a non-empty list")

    def __len__(self) -> int:
        return len(self.objects)


class Broadcast(_Task, Node):
    """Invokes ``task(*args)`` once; ``eval()`` gives ``n`` handles to the one result.
    ``task``: a remote function or its ``f.options(...)`` wrapper."""

    kind = "Broadcast"

    def __init__(self, task: RemoteFunction, n: int, *args: Any):
        super().__init__(check.task_name(task))
        with _checked(self.label):
            self.function, self.task_options = check.check_remote_function(task,
                                                                           "InitActors")
            self.n = check.check_count("n", n)
            check.check_arg_count(_fn_of(self.function), len(args), f"task '{self.name}'")
        self.task, self.args = task, tuple(args)

    def __len__(self) -> int:
        return self.n


class _Stage(_Task, Node):
    """What Map and Join share: a group of tasks over one source node, ``num_returns``
    each (default: the task's own int ``num_returns`` option, else 1), ``args[i]``
    first in task i's call."""

    args: tuple | None
    num_returns: int

    def __init__(self, task: RemoteFunction, objects: Any, num_returns: int | None,
                 replaces: Node | None):
        super().__init__(check.task_name(task), replaces=replaces)
        with _checked(self.label):
            self.function, self.task_options = check.check_remote_function(task,
                                                                           "InitActors")
            if num_returns is None:
                own = self.ray_options.get("num_returns")
                num_returns = own if isinstance(own, int) and own >= 1 else 1
            self.num_returns = check.check_count("num_returns", num_returns,
                                                   check.MAX_RETURNS)
        src = _as_source(self.label, objects)
        self.inputs = (src,)
        self.task, self.objects = task, src

    def arg(self, i: int) -> tuple:
        return self.args[i] if self.args is not None else ()

    @property
    def num_objects(self) -> int:
        return len(self) * self.num_returns


class Map(_Stage):
    """One task per object of ``objects``: task i is ``task(*args[i], objects[i])``.

    With ``num_returns=k`` each task returns k objects (a shuffle's k partitions) and
    ``eval()`` gives one list of k ObjectRefs per task. ``task``: a remote function or
    its ``f.options(...)`` wrapper; ``num_returns`` defaults to the task's own (an int
    ``num_returns`` option), else 1.
    """

    kind = "Map"

    def __init__(self, task: RemoteFunction, objects: Any, args: Sequence | None = None,
                 num_returns: int | None = None, *, replaces: Node | None = None):
        super().__init__(task, objects, num_returns, replaces)
        src = self.objects
        with _checked(self.label):
            self.args = (None if args is None else
                         check.as_tuples(args, src.num_objects, "object"))
            width = len(self.args[0]) if self.args else 0
            check.check_arg_count(_fn_of(self.function), width + 1,
                                  f"task '{self.name}' (args[i] first, the object last)")

    def __len__(self) -> int:
        return self.objects.num_objects


class Join(_Stage):
    """One task per entry of ``picks``: task i is ``task(*args[i], *[objects[j] for j in
    picks[i]])``, the objects it reads as separate arguments, in the order picked (a
    tree reduction's ``add(a, b)``: ``picks=[(0, 1), (2, 3)]``; a reduce into tasks over
    a shuffle's returns: ``picks=[(j, k + j, 2 * k + j, ...) for j in range(k)]``). The
    group is placed as one: each task with the objects it reads.
    ``num_returns`` as in ``Map``."""

    kind = "Join"

    def __init__(self, task: RemoteFunction, objects: Any, picks: Sequence[Sequence[int]],
                 args: Sequence | None = None, num_returns: int | None = None, *,
                 replaces: Node | None = None):
        super().__init__(task, objects, num_returns, replaces)
        src = self.objects
        if not isinstance(picks, (list, tuple)) or not picks:
            raise IRError(self.label, "picks must be a non-empty list of index tuples, "
                          "one per task (task i reads objects[j] for j in picks[i])")
        n = src.num_objects
        self.picks: tuple[tuple[int, ...], ...] = tuple(tuple(p) for p in picks)
        for i, p in enumerate(self.picks):
            bad = [j for j in p if isinstance(j, bool) or not isinstance(j, int)
                   or not 0 <= j < n]
            if not p or bad:
                raise IRError(self.label, f"picks[{i}] = {p!r}: pass one or more indices "
                              f"of {src.label}'s {n} objects (0 to {n - 1})")
        widths = {len(p) for p in self.picks}
        with _checked(self.label):
            self.args = (None if args is None else
                         check.as_tuples(args, len(self.picks), "task"))
            width = len(self.args[0]) if self.args else 0
            for w in sorted(widths):
                check.check_arg_count(_fn_of(self.function), width + w,
                                      f"task '{self.name}' (args[i] first, then the "
                                      f"{w} objects it picks)")

    def __len__(self) -> int:
        return len(self.picks)


class InitActors(Node):
    """``n`` actors, actor i built as ``actor_cls(*args[i])``; placed lazily by the first
    ReduceActors / MapActors evaluated on them (or by ``eval()``).

    A class derived from ``CheckpointedReducer`` makes exactly-once reducers: Ray restarts
    them, and the micro-batch driver restores and replays them after a failure.

    ``actor_cls`` may be a ``Cls.options(...)`` wrapper: ``actor_cls`` is then the class
    and ``actor_options`` the wrapper's options (applied when the actors are created)."""

    kind = "InitActors"

    def __init__(self, actor_cls: ActorClass, n: int, args: Sequence | None = None):
        super().__init__(check.task_name(actor_cls))
        with _checked(self.label):
            self.actor_cls, self.actor_options = check.check_actor_class(actor_cls)
            self.n = check.check_count("n", n)
            self.args = None if args is None else check.as_tuples(args, self.n, "actor")

    @property
    def ray_options(self) -> dict[str, Any]:
        """The class's own @ray.remote options with the node's on top."""
        return effective_options(self.actor_cls, self.actor_options)

    @property
    def checkpointed(self) -> bool:
        """Whether the actors are exactly-once reducers (a CheckpointedReducer class)."""
        return issubclass(self.actor_cls.__ray_metadata__.modified_class,
                          CheckpointedReducer)

    def arg(self, i: int) -> tuple:
        return self.args[i] if self.args is not None else ()

    def __len__(self) -> int:
        return self.n


class _ActorCall(Node):
    def __init__(self, method: str, actors: Any, objects: Any, args: Sequence | None,
                 replaces: Node | None = None):
        super().__init__(str(method), replaces=replaces)
        if not isinstance(actors, InitActors):
            raise IRError(self.label, f"actors must be an InitActors node; got "
                          f"{type(actors).__name__}; create them with InitActors(cls, n, "
                          "args)")
        self.actors = actors
        with _checked(self.label):
            self.method = check.check_method(actors.actor_cls, method)
        self.objects = _as_source(self.label, objects)
        self.inputs = (self.actors, self.objects)
        with _checked(self.label):
            self.args = None if args is None else check.as_tuples(args, actors.n, "actor")

    def _check_call(self, objects_per_actor: int, what: str) -> None:
        """The method must take ``*args[i]`` and then ``objects_per_actor`` objects."""
        body = self.actors.actor_cls.__ray_metadata__.modified_class
        width = len(self.args[0]) if self.args else 0
        with _checked(self.label):
            check.check_arg_count(getattr(body, self.method), 1 + width + objects_per_actor,
                                  f"method '{self.actors.name}.{self.method}' ({what})")

    def arg(self, i: int) -> tuple:
        return self.args[i] if self.args is not None else ()

    def __len__(self) -> int:
        return self.actors.n


_COMBINE_ATTR = "__irfront_combine__"


def combines(merge: Any) -> Any:
    """Declares, once on the actor method, the merge ``ReduceActors(..., combine=)``
    would take: ``@irfront.combines(operator.add)`` over ``def reduce(self, *partials)``
    says the method only adds up its partials. Every ``ReduceActors`` on that method
    (written in the IR, or recognised from plain Ray code under ``irfront.infer``) then
    merges each node's pieces per actor, as with ``combine=merge``."""
    if not callable(merge) or isinstance(merge, RemoteFunction):
        raise TypeError(f"combines: pass a plain function of two partials returning one "
                        f"(e.g. operator.add); got {merge!r}")

    def mark(method: Any) -> Any:
        setattr(method, _COMBINE_ATTR, merge)
        return method
    return mark


def declared_combine(actor_cls: Any, method: str) -> Any:
    """The merge ``combines`` declared on ``actor_cls``'s ``method``, or None."""
    body = actor_cls.__ray_metadata__.modified_class
    return getattr(getattr(body, method, None), _COMBINE_ATTR, None)


class ReduceActors(_ActorCall):
    """Actor i runs ``method(*args[i], *objects)``: every object, in order, as separate
    arguments; or, when ``objects`` is a Map with num_returns == number of actors, the
    i-th return of every task (the all-to-all shuffle). One ObjectRef per actor.

    ``combine`` (irfront's extension, keyword only): a commutative, associative merge of
    two partials, ``combine(a, b)``, that the method agrees with: ``method(*a, x, y)``
    and ``method(*a, combine(x, y))`` leave the actor in the same state (``operator.add``
    for a reducer that sums its partials). A grouped shuffle then merges, on each node,
    the pieces that node's partitions send to each actor, so actor i gets one partial
    per source node instead of one per partition, in no particular order; the method
    must take any number of them from one to one per partition (``*partials``).
    Without ``combine``, the merge the method declared with ``combines`` applies."""

    kind = "ReduceActors"

    def __init__(self, method: str, actors: InitActors, objects: Any,
                 args: Sequence | None = None, *, combine: Any = None,
                 replaces: Node | None = None):
        super().__init__(method, actors, objects, args, replaces)
        if combine is None:
            combine = declared_combine(actors.actor_cls, method)
        src = self.objects
        if isinstance(src, Map) and src.num_returns > 1 and src.num_returns != actors.n:
            raise IRError(self.label, f"objects come from {src.label} with num_returns="
                          f"{src.num_returns} but there are {actors.n} actors; pass "
                          f"num_returns={actors.n} to the Map (one partition per actor)")
        if combine is not None and (not callable(combine)
                                    or isinstance(combine, RemoteFunction)):
            raise IRError(self.label, f"combine must be a plain function of two partials "
                          f"returning one (e.g. operator.add); got {combine!r}")
        self.combine = combine
        per_actor = len(src) if self.shuffled else src.num_objects
        self._check_call(per_actor, f"self, args[i], then {per_actor} objects")
        if combine is not None and per_actor > 1:
            self._check_call(1, "self, args[i], then 1 to "
                             f"{per_actor} partials: with combine= a reducer gets one "
                             "per source node; take them as *partials")

    @property
    def shuffled(self) -> bool:
        """Whether actor i gets the i-th return of every task (irfront's extension)."""
        src = self.objects
        return isinstance(src, (Map, FusedMap)) and src.num_returns > 1 \
            and src.num_returns == self.actors.n


class MapActors(_ActorCall):
    """Actor i runs ``method(*args[i], objects[i])``: one object per actor."""

    kind = "MapActors"

    def __init__(self, method: str, actors: InitActors, objects: Any,
                 args: Sequence | None = None, *, replaces: Node | None = None):
        super().__init__(method, actors, objects, args, replaces)
        if self.objects.num_objects != actors.n:
            raise IRError(self.label, f"got {self.objects.num_objects} objects for "
                          f"{actors.n} actors; MapActors gives actor i objects[i]: pass "
                          f"exactly {actors.n} objects")
        self._check_call(1, "self, args[i], then one object")


# ---- node kinds made by passes ---------------------------------------------------------------
class FusedMap(Node):
    """A chain of one-to-one Maps run as one task per partition (made by the fusion pass):
    stage s computes ``x = chain[s].task(*chain[s].args[i], x)``; the last stage may have
    num_returns=k. Stands for ``chain[-1]``."""

    kind = "FusedMap"

    def __init__(self, chain: Sequence[Map], objects: Node):
        last = chain[-1]
        super().__init__("+".join(m.name for m in chain), (objects,),
                         replaces=last.replaces or last)
        self.chain = tuple(chain)
        self.objects = objects
        self.num_returns = last.num_returns
        # The fused task runs with the last stage's options (fusion joins only stages
        # with the same resource shape, so its resource options are every stage's).
        self.ray_options = last.ray_options

    def __len__(self) -> int:
        return self.objects.num_objects

    @property
    def num_objects(self) -> int:
        return len(self) * self.num_returns


class GroupedShuffle(Node):
    """A shuffle (a Map or FusedMap with one return per actor) feeding ReduceActors,
    written as one object per destination *node* instead of one per actor (made by the
    grouped-shuffle pass). The actors are placed first, from the shuffle's inputs; actor i
    picks its pieces out of its node's objects. Stands for ``reduce``."""

    kind = "GroupedShuffle"

    def __init__(self, shuffle: "Map | FusedMap", reduce: ReduceActors):
        super().__init__(f"{shuffle.name}->{reduce.name}", (reduce.actors, shuffle.objects),
                         replaces=reduce.replaces or reduce)
        self.shuffle = shuffle
        self.reduce = reduce
        self.actors = reduce.actors

    def __len__(self) -> int:
        return self.actors.n


NODE_KINDS = (Objects, Broadcast, Map, Join, InitActors, ReduceActors, MapActors, FusedMap,
              GroupedShuffle)
