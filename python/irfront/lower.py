"""Lowering: turning evaluated IR nodes into Ray tasks, one small function per node kind.

``evaluate(node)`` memoises: a node is lowered once, with the options current at that
time (``LoweringOptions``: which scheduler, and switches for optimisations). Each lowering
function gets the node and the options, evaluates its inputs through ``evaluate``, and
returns a ``Lowered`` (the futures, the group id, the group it depends on). Register a
new kind, or replace one, with ``@register(NodeClass)``; a new optimisation is a switch
on ``LoweringOptions`` read by the functions it changes.

Schedulers:
- ``vanilla``: plain Ray, ``task.remote(...)`` with no options at all;
- ``pack``: groups placed by the C++ core with the 2018 draft's rule;
- ``locality`` (default): groups placed by the C++ core to minimise bytes moved under a
  fair share per node; actors with the ``actors`` policy.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import ray

from irfront.errors import IRError, note_node
from irfront.nodes import (Broadcast, InitActors, Map, MapActors, Node, Objects,
                           ReduceActors)

SCHEDULERS = ("vanilla", "pack", "locality")

DEFAULT_GROUP_RETRIES = 3  # Ray's own default, made explicit for group tasks


@dataclass(frozen=True)
class LoweringOptions:
    """How IR nodes become Ray tasks. Add new optimisation switches here."""

    scheduler: str = "locality"  # vanilla | pack | locality
    # Policy for actor groups; None: "actors" under locality, "pack" under pack.
    actor_policy: str | None = None
    name_actors: bool = True  # named actors "Cls[g7:0]" (visible in the state API)
    # Optimisations (irfront/optimize.py); None: on under locality, off otherwise.
    fuse: bool | None = None  # a chain of one-to-one Maps runs as one task per partition
    shuffle_by_node: bool | None = None  # a shuffle into actors writes one object per node
    preschedule: bool | None = None  # stream driver: submit the next batch ahead (gated)
    # Ray task retries of lowered tasks (a crashed worker; an output lost with its node is
    # rebuilt from lineage). None: 3 for groups (explicit, RELIABILITY.md); under vanilla
    # nothing is passed (plain Ray) unless set here.
    max_retries: int | None = None

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {self.scheduler!r}; pass one of "
                             f"{', '.join(SCHEDULERS)}")
        r = self.max_retries
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < -1):
            raise ValueError(f"max_retries must be None or an int >= -1 (-1: forever); "
                             f"got {r!r}")

    @property
    def grouped(self) -> bool:
        """Whether tasks go through ray_patch (False: plain .remote())."""
        return self.scheduler != "vanilla"

    @property
    def task_retries(self) -> int | None:
        """max_retries to pass to a lowered task: None means pass nothing."""
        if self.max_retries is not None:
            return self.max_retries
        return DEFAULT_GROUP_RETRIES if self.grouped else None

    def plain(self, task: Any, **options: Any) -> Any:
        """``task`` with ``options`` (and max_retries, when set) for vanilla lowering;
        ``task`` itself when there is nothing to pass (plain Ray)."""
        if self.max_retries is not None:
            options["max_retries"] = self.max_retries
        return task.options(**options) if options else task

    @property
    def task_policy(self) -> str:
        return self.scheduler

    @property
    def actors_policy(self) -> str:
        if self.actor_policy is not None:
            return self.actor_policy
        return "pack" if self.scheduler == "pack" else "actors"

    def replace(self, **changes: Any) -> "LoweringOptions":
        return dataclasses.replace(self, **changes)


_options = LoweringOptions()


def get_options() -> LoweringOptions:
    return _options


def set_options(options: LoweringOptions) -> None:
    global _options
    _options = options


def set_scheduler(scheduler: str) -> None:
    """Switches the scheduler of every node evaluated from now on."""
    set_options(_options.replace(scheduler=scheduler))


@contextlib.contextmanager
def lowering_options(**changes: Any) -> Iterator[LoweringOptions]:
    """``with lowering_options(scheduler="pack"): ...`` evaluates nodes under other options
    inside the block."""
    old = _options
    set_options(old.replace(**changes))
    try:
        yield _options
    finally:
        set_options(old)


# ---- evaluation ---------------------------------------------------------------------------
@dataclass
class Lowered:
    value: list  # futures: ObjectRefs (a list per task for num_returns > 1) or actor handles
    group_id: int
    depends_on: int | None = None


LowerFn = Callable[[Node, LoweringOptions], Lowered]
LOWERINGS: dict[type, LowerFn] = {}


def register(kind: type) -> Callable[[LowerFn], LowerFn]:
    """Decorator: the lowering function of a node class (replaces an earlier one)."""
    def deco(fn: LowerFn) -> LowerFn:
        LOWERINGS[kind] = fn
        return fn
    return deco


_vanilla_gids = itertools.count(1)


def _new_group_id(opts: LoweringOptions) -> int:
    if opts.grouped:
        import ray_patch
        return ray_patch.get_runtime().new_group_id()
    return next(_vanilla_gids)


def _check_ready(node: Node, consumer: Node | None) -> None:
    if node._freed:
        by = f" (needed by {consumer.label})" if consumer is not None else ""
        raise IRError(node.label, f"evaluated after its group g{node._group_id} was freed"
                      f"{by}; node.free() drops the results, so build a new "
                      f"{node.kind}(...) node instead of reusing this one")
    if not ray.is_initialized():
        raise IRError(node.label, "Ray is not initialised; call irfront.init(address=...) "
                      "or ray.init() first, or start irfront.cluster.LocalCluster()")


def evaluate(node: Node, options: LoweringOptions | None = None,
             consumer: Node | None = None) -> list:
    """Lowers ``node`` (and, first, its inputs) once; returns its futures."""
    _check_ready(node, consumer)
    if node._value is not None:
        return node._value
    opts = options or _options
    fn = LOWERINGS.get(type(node))
    if fn is None:
        raise IRError(node.label, f"no lowering registered for {type(node).__name__}; "
                      "register one with @irfront.lower.register(NodeClass)")
    try:
        out = fn(node, opts)
    except IRError:
        raise
    except ValueError as e:  # ray_patch.GroupError and the core's ValueError
        raise IRError(node.label, str(e)) from e
    node._set_result(out.value, out.group_id, opts.scheduler, out.depends_on)
    return out.value


def _inputs(node: Node, src: Node, opts: LoweringOptions) -> list:
    return evaluate(src, opts, consumer=node)


def flat_objects(src: Node, value: list) -> list:
    """The objects a Map over ``src`` gets: num_returns=k Maps give k per task."""
    if isinstance(src, Map) and src.num_returns > 1:
        return [r for refs in value for r in refs]
    return list(value)


# ---- one function per node kind ----------------------------------------------------------
@register(Objects)
def lower_objects(node: Objects, opts: LoweringOptions) -> Lowered:
    refs = [o if isinstance(o, ray.ObjectRef) else ray.put(o)
            for o in node.params["objects"]]
    return Lowered(refs, next(_vanilla_gids) if not opts.grouped else
                   _new_group_id(opts))


@register(Broadcast)
def lower_broadcast(node: Broadcast, opts: LoweringOptions) -> Lowered:
    if not opts.grouped:
        ref = opts.plain(node.task).remote(*node.args)
        return Lowered([ref] * node.n, next(_vanilla_gids))
    import ray_patch
    refs = ray_patch.submit_group(node.task, [node.args], policy=opts.task_policy,
                                  max_retries=opts.task_retries)
    return Lowered([refs[0]] * node.n, refs.group_id)


@register(Map)
def lower_map(node: Map, opts: LoweringOptions) -> Lowered:
    objs = flat_objects(node.objects, _inputs(node, node.objects, opts))
    extra = node.args or [()] * len(objs)
    calls = [(o, *a) for o, a in zip(objs, extra)]
    k = node.num_returns
    dep = node.objects.group_id
    if not opts.grouped:
        task = opts.plain(node.task) if k == 1 else opts.plain(node.task, num_returns=k)
        return Lowered([task.remote(*c) for c in calls], next(_vanilla_gids), dep)
    import ray_patch
    refs = ray_patch.submit_group(node.task, calls, group_dependency=dep,
                                  policy=opts.task_policy,
                                  num_returns=k if k > 1 else None,
                                  max_retries=opts.task_retries)
    return Lowered(list(refs), refs.group_id, dep)


def _init_actors(node: InitActors, opts: LoweringOptions, depends_on: int | None,
                 inputs: list[list] | None) -> Lowered:
    args = node.args or [()] * node.n
    if not opts.grouped:
        return Lowered([node.actor_cls.remote(*a) for a in args], next(_vanilla_gids))
    import ray_patch
    handles = ray_patch.group_actors(node.actor_cls, node.n, args,
                                     group_dependency=depends_on, inputs=inputs,
                                     policy=opts.actors_policy, name_actors=opts.name_actors)
    return Lowered(list(handles), handles.group_id, depends_on)


@register(InitActors)
def lower_init_actors(node: InitActors, opts: LoweringOptions) -> Lowered:
    """Evaluated on its own (no consumer yet): placed with no data to follow."""
    return _init_actors(node, opts, None, None)


def ensure_actors(node: Node, actors: InitActors, opts: LoweringOptions,
                  depends_on: int | None, inputs: list[list]) -> list:
    """The actors' handles; the first consumer places them, with its data and group."""
    _check_ready(actors, node)
    if actors._value is None:
        try:
            out = _init_actors(actors, opts, depends_on, inputs)
        except ValueError as e:
            raise IRError(actors.label, f"{e} (placing for {node.label})") from e
        actors._set_result(out.value, out.group_id, opts.scheduler, out.depends_on)
    return actors._value


def _call_with_list():
    # Built here (a closure is pickled by value): workers need not import irfront.
    return lambda self, method, n, *a: getattr(self, method)(list(a[:n]), *a[n:])


CALL_WITH_LIST = _call_with_list()


def reduce_inputs(node: ReduceActors, value: list) -> list[list]:
    """The objects each actor gets: the i-th return of every task of a num_returns=n
    Map, else every object."""
    src = node.objects
    if isinstance(src, Map) and src.num_returns > 1:
        return [[refs[i] for refs in value] for i in range(node.actors.n)]
    objs = flat_objects(src, value)
    return [objs] * node.actors.n


@register(ReduceActors)
def lower_reduce_actors(node: ReduceActors, opts: LoweringOptions) -> Lowered:
    per_actor = reduce_inputs(node, _inputs(node, node.objects, opts))
    dep = node.objects.group_id
    handles = ensure_actors(node, node.actors, opts, dep, per_actor)
    extra = node.args or [()] * len(handles)
    calls = [(node.method, len(objs), *objs, *a) for objs, a in zip(per_actor, extra)]
    if not opts.grouped:
        return Lowered([h.__ray_call__.remote(CALL_WITH_LIST, *c)
                        for h, c in zip(handles, calls)], next(_vanilla_gids), dep)
    import ray_patch
    refs = ray_patch.call_actors(handles, node.method, calls, group_dependency=dep,
                                 invoke=CALL_WITH_LIST,
                                 name=f"{node.actors.name}.{node.method}")
    return Lowered(list(refs), refs.group_id, dep)


@register(MapActors)
def lower_map_actors(node: MapActors, opts: LoweringOptions) -> Lowered:
    objs = flat_objects(node.objects, _inputs(node, node.objects, opts))
    dep = node.objects.group_id
    handles = ensure_actors(node, node.actors, opts, dep, [[o] for o in objs])
    extra = node.args or [()] * len(handles)
    calls = [(o, *a) for o, a in zip(objs, extra)]
    if not opts.grouped:
        return Lowered([getattr(h, node.method).remote(*c) for h, c in zip(handles, calls)],
                       next(_vanilla_gids), dep)
    import ray_patch
    refs = ray_patch.call_actors(handles, node.method, calls, group_dependency=dep,
                                 name=f"{node.actors.name}.{node.method}")
    return Lowered(list(refs), refs.group_id, dep)


# ---- results ------------------------------------------------------------------------------
def get_node(node: Node, timeout: float | None = None) -> list:
    """``ray.get`` of a node's futures; errors from Ray get a note naming the node."""
    value = evaluate(node)
    if isinstance(node, InitActors):
        return list(value)
    nested = isinstance(node, Map) and node.num_returns > 1
    flat = [r for refs in value for r in refs] if nested else value
    try:
        out = ray.get(flat, timeout=timeout)
    except ray.exceptions.RayError as e:
        _after_failure(e)
        raise note_node(e, node.label, f" (group g{node.group_id})")
    if nested:
        k = node.num_returns
        return [out[i:i + k] for i in range(0, len(out), k)]
    return out


def _after_failure(e: BaseException) -> None:
    """A node may have died: make the next group re-read the node table."""
    if isinstance(e, (ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError,
                      ray.exceptions.WorkerCrashedError, ray.exceptions.ActorDiedError)):
        try:
            from ray_patch.runtime import current_runtime
            rt = current_runtime()
            if rt is not None:
                rt.refresh_nodes(force=True)
        except Exception:
            pass


def get(x: Any, timeout: float | None = None) -> Any:
    """``ray.get`` for IR nodes and futures. A node (or list of nodes) is evaluated and
    fetched; for plain ObjectRefs of group tasks a failure gets a note naming the group."""
    if isinstance(x, Node):
        return get_node(x, timeout)
    if isinstance(x, (list, tuple)) and x and all(isinstance(n, Node) for n in x):
        return [get_node(n, timeout) for n in x]
    try:
        return ray.get(x, timeout=timeout)
    except ray.exceptions.RayError as e:
        _after_failure(e)
        label = _group_label_of(x)
        if label:
            note_node(e, label)
        raise


def _group_label_of(x: Any) -> str:
    """Best effort: the group names of the refs in ``x`` (first failing one if found)."""
    refs = [x] if isinstance(x, ray.ObjectRef) else [r for r in x if isinstance(r, ray.ObjectRef)]
    try:
        from ray_patch.runtime import current_runtime
        rt = current_runtime()
    except Exception:
        return ""
    if rt is None:
        return ""
    for r in refs:
        hit = rt.registry.get(r.binary())
        if hit is None:
            continue
        try:
            ray.get(r, timeout=0)
        except ray.exceptions.GetTimeoutError:
            continue
        except ray.exceptions.RayError:
            rec = rt.groups.get(hit[0])
            name = rec.name if rec is not None else "?"
            return f"{name}[g{hit[0]}:{hit[1]}]"
        except Exception:
            continue
    return ""


# The optimisation passes register replacement lowerings for Map and ReduceActors (they
# fall back to the functions above when their switches are off).
from irfront import optimize as _optimize  # noqa: E402,F401
