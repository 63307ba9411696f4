"""Group-aware submission of Ray remote functions and actor classes.

A group's tasks are placed together by the C++ core (ray_patch.scheduler.GroupScheduler) on
the live cluster, then submitted with Ray's public options only:
``fn.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=True),
name=f"{fn}[g{gid}]")``. ``soft=True`` lets a task whose node has died run elsewhere;
the node table is refreshed from ``ray.nodes()`` when stale and whenever placement fails.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import ray
from ray.actor import ActorClass
from ray.remote_function import RemoteFunction

from ray_patch import metrics, shipping
import ray_patch.executors as executors_
from ray_patch.ray_private import task_caller, unwrap_task, weak_handle
from ray_patch.options import (effective_options, executor_eligible,
                               pinned_actor_options, resource_demand, user_placement)
from ray_patch.scheduler import Policy
from ray_patch.runtime import NO_NODE, GroupRecord, Runtime, current_runtime, get_runtime
from ray_patch.validate import (MAX_ID, MAX_RETRIES, MAX_RETURNS, GroupError, as_tuples,
                                check_actor_class, check_optional_int,
                                check_remote_function, task_name)

log = logging.getLogger("irfront.ray_patch")  # under irfront's logger, by name only

# Plain Ray's names (irfront.infer): while set in a thread, that thread's groups name
# their tasks as Ray does (``f``, not ``f[g7]``) and create no named actors, so errors
# and ``ray.util.list_named_actors()`` read as the plain program's.
_names = threading.local()


@contextlib.contextmanager
def plain_names() -> Iterator[None]:
    """Inside, this thread's group tasks keep Ray's own task names and actors stay
    unnamed (``irfront.infer``: a program run unchanged must read as plain Ray)."""
    _names.plain = getattr(_names, "plain", 0) + 1
    try:
        yield
    finally:
        _names.plain -= 1


def _group_name(base: str, gid: int, named: bool) -> str | None:
    """A group task's Ray name: ``base[gN]`` when named, ``base`` under plain_names."""
    if getattr(_names, "plain", 0):
        # A fused chain ("f+g") as plain Ray names the task whose result is read: the
        # last stage (an error in an earlier stage reaches the program through it).
        return base.rsplit("+", 1)[-1]
    return f"{base}[g{gid}]" if named else None

POLICIES = tuple(p.value for p in Policy)  # the core's policy names, one list
_NO_NODES = ("the Ray cluster has no alive node with CPUs; add nodes (e.g. "
             "irfront.cluster.LocalCluster(num_nodes=4)) or connect to a running cluster")


class GroupRefs(list):
    """The futures of one group (a plain list), with the group's id attached.

    One ObjectRef per task, or one list of ObjectRefs per task when num_returns > 1.
    """

    group_id: int

    def __init__(self, items: Iterable[Any], group_id: int):
        super().__init__(items)
        self.group_id = group_id


class GroupActors(list):
    """The actor handles of one actor group (a plain list), with the group's id."""

    group_id: int

    def __init__(self, items: Iterable[Any], group_id: int):
        super().__init__(items)
        self.group_id = group_id


# ---- helpers -------------------------------------------------------------------------------
def _inputs_of(arg_tuples: Sequence[tuple]) -> list[list[ray.ObjectRef]]:
    ref = ray.ObjectRef
    return [[a for a in args if isinstance(a, ref)] for args in arg_tuples]


def _depends_on(rt: Runtime, explicit: int | None,
                task_refs: list[list[ray.ObjectRef]]) -> int | None:
    """The group this one depends on: given, else the producer group of its first input."""
    if explicit is not None:
        return int(explicit)
    reg = rt.registry
    for refs in task_refs:
        for ref in refs:
            hit = reg.get(ref.binary())
            if hit is not None:
                return hit[0]
    return None


def node_resources(rt: Runtime, force: bool = False) -> dict[int, dict[str, float]]:
    """Each known node's capacities of resources other than CPU (GPUs, custom resources,
    memory, accelerator types) as Ray reports them (``ray.nodes()``), sent to the core
    when they change. Read only for groups that demand such resources, at most every
    ``rt.refresh_interval_s`` (and whenever the node table has grown) unless ``force``."""
    last, sent = rt.resources_sent
    now = time.monotonic()
    if not force and now - last < rt.refresh_interval_s and len(sent) >= len(rt.hex_of):
        return sent
    sent = dict(sent)
    for info in ray.nodes():
        nid = rt.int_of.get(info["NodeID"])
        if nid is None:
            continue
        res = {k: float(v) for k, v in (info.get("Resources") or {}).items()
               if k != "CPU" and not k.startswith("node:") and v}
        if sent.get(nid) != res:
            rt.scheduler.set_node_resources(nid, res)
            sent[nid] = res
            rt.plans.invalidate(f"node {rt.hex_of[nid][:12]} resources {res}")
    rt.resources_sent = (now, sent)
    return sent


def place(rt: Runtime, group_id: int, task_cpus: np.ndarray,
          task_refs: list[list[ray.ObjectRef]], *, group_dependency: int | None,
          policy: str, resources: dict[str, float] | None = None,
          plan_cache: bool = False) -> tuple[np.ndarray, int | None]:
    """Places a group with the C++ core; returns (int node per task, depends_on).
    ``resources``: what every task demands besides CPUs (GPUs, custom resources; see
    ray_patch.options.resource_demand): the core places the group only on nodes that
    have them. ``plan_cache``: reuse the placement of an earlier group of the same key
    (ray_patch.plans) instead of solving, and keep this one's for later groups."""
    if policy not in POLICIES:
        raise GroupError(f"unknown policy {policy!r}; pass one of {', '.join(POLICIES)}")
    ref = ray.ObjectRef  # inputs given as plain values have no location to place by
    task_refs = [[r for r in refs if isinstance(r, ref)] for refs in task_refs]
    rt.refresh_nodes()
    if not rt.alive_nodes():
        rt.refresh_nodes(force=True)
        if not rt.alive_nodes():
            raise GroupError(_NO_NODES)
    if resources:
        node_resources(rt)
    dep = _depends_on(rt, group_dependency, task_refs)
    rec = rt.groups.get(dep) if dep is not None else None
    core_dep = dep if rec is not None and rec.in_core else None
    if core_dep is not None and policy in rt.retire_policies:
        # The dependency's tasks finish before this group's start (BSP): its CPU stops
        # counting as load; its outputs stay known by node (location inputs).
        rt.retire(core_dep)
        core_dep = None
    key = None
    if plan_cache:
        key = rt.plans.key(policy, task_cpus, task_refs, resources, rt.registry, rt.groups)
        nodes = rt.plans.get(key)
        if nodes is not None:
            try:
                rt.scheduler.record_placement(group_id, nodes, task_cpus)
            except ValueError:  # a node died since: place it afresh
                rt.plans.drop(key)
            else:
                metrics.plan_reused(policy)
                return nodes, dep
    arrays = rt.build_inputs(task_refs)
    p = rt.scheduler.place_arrays(group_id, task_cpus, *arrays, depends_on=core_dep,
                                  policy=policy, resources=resources)
    if not p.feasible:  # maybe the node table is stale: re-read it once
        rt.refresh_nodes(force=True)
        if resources:
            node_resources(rt, force=True)
        arrays = rt.build_inputs(task_refs)
        p = rt.scheduler.place_arrays(group_id, task_cpus, *arrays, depends_on=core_dep,
                                      policy=policy, resources=resources)
    if not p.feasible:
        if not rt.alive_nodes():
            raise GroupError(_NO_NODES)
        raise GroupError(f"group g{group_id} cannot be placed: {p.reason}")
    metrics.placed(policy, p.solve_ms, p.bytes_moved)
    if key is not None:
        rt.plans.put(key, p.nodes)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("placed g%d (%s, %d tasks, depends on %s): %d bytes moved, %.3f ms in "
                  "the core, tasks per node %s", group_id, policy, len(task_cpus), dep,
                  p.bytes_moved, p.solve_ms, {rt.hex_of[n][:8]: c
                                                for n, c in p.counts.items()})
    return np.asarray(p.nodes, dtype=np.int64), dep


# ---- tasks ---------------------------------------------------------------------------------
def submit_group(fn: RemoteFunction, arg_tuples: Sequence[Sequence[Any]], *,
                 group_id: int | None = None, group_dependency: int | None = None,
                 policy: str = "locality", num_returns: int | None = None,
                 name: str | None = None, max_retries: int | None = None,
                 name_tasks: bool | None = None, batch: bool = False,
                 plan_cache: bool = False) -> GroupRefs:
    """Submits one task of ``fn`` per argument tuple, as one group.

    ``fn``: a remote function or its ``f.options(...)`` wrapper (its options are kept).
    The group is placed by the C++ core (``policy``: pack, locality, spread), each task
    pinned softly to its node and named ``f"{name}[g{group_id}]"``; tasks demanding GPUs
    or custom resources (``num_gpus``, ``resources``, ``accelerator_type``, ``memory``)
    go only to nodes that have them. With the user's own ``scheduling_strategy``,
    ``placement_group`` or ``label_selector`` Ray places the tasks (one group;
    ``placement()`` says "unpinned"). ``group_dependency``
    names the group this one reads from (default: the producer group of the first input).
    Returns the futures (a list with ``.group_id``); free the group with ``free_groups``.
    ``max_retries``: Ray's task retries (a crashed worker, an output lost with its node is
    rebuilt from lineage); None keeps ``fn``'s own setting (Ray's default is 3).
    ``name_tasks``: False submits the tasks without names (Ray keeps state per distinct
    task name in the driver for good: about 2 KB each; see docs/RELIABILITY.md); None
    takes ``configure(name_tasks=...)`` (default True).
    ``batch``: the tasks placed on one node run as one Ray task per CPU slot of that node
    (``node CPUs // fn's num_cpus``), each running its share of the calls in turn; every
    call keeps its own output objects, so the result has the same shape as unbatched.
    Fewer Ray tasks per group: less submission and scheduling work per call.
    ``plan_cache``: a group of the same shape and input locations as an earlier one
    reuses its placement (ray_patch.plans) instead of calling the core's policy.
    """
    fn, user_options = check_remote_function(fn)
    check_optional_int("num_returns", num_returns, 1, MAX_RETURNS)
    check_optional_int("group_id", group_id, 0, MAX_ID)
    check_optional_int("group_dependency", group_dependency, -MAX_ID, MAX_ID)
    check_optional_int("max_retries", max_retries, -1, MAX_RETRIES)  # -1: forever
    args = as_tuples(arg_tuples)
    merged = effective_options(fn, user_options)
    if user_options.get("max_retries") is not None:
        max_retries = user_options["max_retries"]  # the user's own setting wins
    if user_options.get("num_returns") is not None and num_returns is None:
        num_returns = user_options["num_returns"]
    rt = get_runtime()
    if user_placement(merged) is not None:
        return _submit_unpinned(rt, fn, user_options, args, group_id, group_dependency,
                                policy, num_returns, name, max_retries)
    demand = resource_demand(merged)
    # The group is freed if anything in the block raises (e.g. arguments that do not fit
    # fn's signature).
    with rt.group(group_id) as gid:
        cpus = float(merged.get("num_cpus", 1) or 0)
        nodes, dep = place(rt, gid, np.full(len(args), cpus), _inputs_of(args),
                           group_dependency=group_dependency, policy=policy,
                           resources=demand, plan_cache=plan_cache)
        base = user_options.get("name") or name or task_name(fn)
        strat = rt.strategies
        out = []
        extra = _task_options(user_options, max_retries, num_returns,
                              _group_name(base, gid, rt.name_tasks if name_tasks is None
                                          else name_tasks))
        if batch:
            out = _submit_batched(rt, fn, args, nodes, cpus, num_returns or 1, extra,
                                  demand)
        else:
            # One .options() per node of the group, not per task: Ray's option
            # handling is most of the per-task submission cost.
            pinned: dict[int, Any] = {}
            for i, a in enumerate(args):
                f = pinned.get(nodes[i])
                if f is None:
                    f = pinned[nodes[i]] = task_caller(
                        fn, {"scheduling_strategy": strat[nodes[i]], **extra})
                out.append(f(*a))
        rt.record(GroupRecord(gid, base, dep, policy, nodes, in_core=True),
                  enumerate(out))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("group g%d %s (%s, depends on %s): %s", gid, base, policy, dep,
                      rt.counts(gid))
    return GroupRefs(out, gid)


def _task_options(user_options: dict[str, Any], max_retries: int | None,
                  num_returns: int | None, name: str | None) -> dict[str, Any]:
    """A group's ``.options()``: the user's own, with the group's retries, returns and
    name (when given) in place of theirs."""
    opts = {k: v for k, v in user_options.items()
            if k not in ("name", "num_returns", "max_retries")}
    for k, v in (("max_retries", max_retries), ("num_returns", num_returns), ("name", name)):
        if v is not None:
            opts[k] = v
    return opts


# A task with one of UNPINNED_OPTIONS (ray_patch.options: the user's own strategy,
# placement group or label selector) keeps Ray's placement. GPUs and custom resources
# are placement constraints of the core instead.


def submit_per_node(fn: RemoteFunction, arg_tuples: Sequence[Sequence[Any]],
                    node_call: Any, *, num_returns: int = 1, group_id: int | None = None,
                    group_dependency: int | None = None, policy: str = "locality",
                    name: str | None = None, max_retries: int | None = None,
                    executors: bool = False, plan_cache: bool = False
                    ) -> tuple[dict[int, tuple[list[int], Any]], int]:
    """Places one task per argument tuple as a group, then submits ONE task of ``fn`` per
    node, running all of that node's tasks: ``node_call(indices)`` gives its arguments.
    Returns ``({node: (task indices, ref or list of num_returns refs)}, group id)``,
    nodes in ascending order. The core places (and records) the per-task group, so
    later groups see where every task's data went. ``executors``: each node's work runs
    as a call to that node's persistent executor actor (``ray_patch.executors``) instead
    of a task, unless the stage asks for resources, a runtime_env, more than one CPU or
    no retries. ``plan_cache`` as in ``submit_group``."""
    # fn may be an f.options(...) wrapper; GPUs and custom resources are constraints as in
    # submit_group; a user's own strategy or placement group cannot be pinned per node.
    fn, user_options = check_remote_function(fn)
    check_optional_int("num_returns", num_returns, 1, MAX_RETURNS)
    args = as_tuples(arg_tuples)
    merged = effective_options(fn, user_options)
    own = user_placement(merged)
    if own is not None:
        raise GroupError(f"submit_per_node pins one task per node; {task_name(fn)} has "
                         f"its own {own}: submit it with submit_group instead")
    rt = get_runtime()
    with rt.group(group_id) as gid:
        cpus = float(merged.get("num_cpus", 1) or 0)
        nodes, dep = place(rt, gid, np.full(len(args), cpus), _inputs_of(args),
                           group_dependency=group_dependency, policy=policy,
                           resources=resource_demand(merged), plan_cache=plan_cache)
        base = user_options.get("name") or name or task_name(fn)
        opts = _task_options(user_options, max_retries, num_returns,
                             _group_name(base, gid, rt.name_tasks))
        out: dict[int, tuple[list[int], Any]] = {}
        by_node: dict[int, list[int]] = {}
        for i, n in enumerate(nodes.tolist()):
            by_node.setdefault(n, []).append(i)
        executors = executors and executor_eligible(merged, max_retries)
        body = shipping.inline(fn._function) if executors else None
        for n in sorted(by_node):
            idx = by_node[n]
            if executors:
                spec, refs = shipping.pack(node_call(idx))
                out[n] = (idx, executors_.executor_call(rt, n, num_returns)(
                    body, spec, *refs))
                continue
            f = task_caller(fn, {"scheduling_strategy": rt.strategies[n], **opts})
            out[n] = (idx, f(*node_call(idx)))
        rec = GroupRecord(gid, base, dep, policy, nodes, in_core=True)
        rt.record(rec, ((idx[0], refs) for idx, refs in out.values()))
    return out, gid


def _submit_unpinned(rt: Runtime, fn: RemoteFunction, user_options: dict[str, Any],
                     args: list[tuple], group_id: int | None, group_dependency: int | None,
                     policy: str, num_returns: int | None, name: str | None,
                     max_retries: int | None) -> GroupRefs:
    """A group whose tasks Ray places (see ray_patch.options.UNPINNED_OPTIONS): one
    group id and name,
    its outputs registered, no placement by the core (``placement()`` says "unpinned")."""
    with rt.group(group_id) as gid:
        base = user_options.get("name") or name or task_name(fn)
        f = fn.options(**_task_options(user_options, max_retries, num_returns,
                                       _group_name(base, gid, rt.name_tasks)))
        out = [f.remote(*a) for a in args]
        dep = _depends_on(rt, group_dependency, _inputs_of(args))
        rt.record(GroupRecord(gid, base, dep, "unpinned", np.full(len(args), NO_NODE,
                                                                   dtype=np.int64),
                              in_core=False), enumerate(out))
    return GroupRefs(out, gid)


def _batch_body(body: Any, k: int):
    # Built in a function so that cloudpickle ships it by value.
    def run_batch(counts, *flat):
        out, i = [], 0
        for c in counts:
            r = body(*flat[i:i + c])
            i += c
            if k == 1:
                out.append(r)
            else:
                if len(r) != k:
                    raise ValueError(f"a task returned {len(r)} objects; num_returns={k}")
                out.extend(r)
        return out[0] if len(out) == 1 else tuple(out)

    run_batch.__name__ = run_batch.__qualname__ = getattr(body, "__name__", "batch")
    return run_batch


def _batched_function(rt: Runtime, fn: RemoteFunction, k: int) -> RemoteFunction:
    """``fn`` as a task running several calls in turn (cached per function and k, in the
    runtime's ``batched`` table: the entry holds ``fn``, so its ``id`` is not reused)."""
    table = rt.table("batched", 1024)
    hit = table.get((id(fn), k))
    if hit is not None and hit[0] is fn:
        return hit[1]
    opts = {key: v for key, v in fn._default_options.items()
            if v is not None and key not in ("num_returns", "name")}
    body = _batch_body(fn._function, k)
    batched = ray.remote(**opts)(body) if opts else ray.remote(body)
    table[(id(fn), k)] = (fn, batched)
    return batched


def _submit_batched(rt: Runtime, fn: RemoteFunction, args: list[tuple], nodes: np.ndarray,
                    cpus: float, k: int, extra: dict[str, Any],
                    demand: dict[str, float] | None = None) -> list:
    """One Ray task per CPU slot of each node (fewer when the node's GPUs or custom
    resources run fewer of the tasks at once), running that slot's calls; returns one
    ref (or k refs) per call, in call order."""
    capacity = node_resources(rt) if demand else {}
    by_node: dict[int, list[int]] = {}
    for i, n in enumerate(nodes.tolist()):
        by_node.setdefault(n, []).append(i)
    batched = _batched_function(rt, fn, k)
    out: list[Any] = [None] * len(args)
    base = {key: v for key, v in extra.items() if key != "num_returns"}
    for n, calls in by_node.items():
        node_cpus = rt.node_cpus(n)
        slots = max(1, min(len(calls), int(node_cpus // cpus) if cpus > 0 else 1))
        have = capacity.get(n, {})
        for r, amount in (demand or {}).items():
            slots = max(1, min(slots, int(have.get(r, 0.0) / amount + 1e-9)))
        for s in range(slots):
            chunk = calls[s::slots]
            flat = [x for i in chunk for x in args[i]]
            total = len(chunk) * k
            f = task_caller(batched, {"scheduling_strategy": rt.strategies[n],
                                      "num_returns": total, **base})
            refs = f(tuple(len(args[i]) for i in chunk), *flat)
            refs = [refs] if total == 1 else list(refs)
            for j, i in enumerate(chunk):
                out[i] = refs[j] if k == 1 else refs[j * k:(j + 1) * k]
    return out


def group_map(fn: RemoteFunction, xs: Iterable[Any], **kw: Any) -> GroupRefs:
    """``[fn.remote(x) for x in xs]`` as one group; keywords as in ``submit_group``."""
    return submit_group(fn, [(x,) for x in xs], **kw)


def group_starmap(fn: RemoteFunction, arg_tuples: Iterable[Sequence[Any]],
                  **kw: Any) -> GroupRefs:
    """``[fn.remote(*a) for a in arg_tuples]`` as one group."""
    return submit_group(fn, list(arg_tuples), **kw)


class GroupedFunction:
    """A remote function whose calls are submitted as groups: ``grouped(f).map(xs)``."""

    def __init__(self, fn: RemoteFunction, **defaults: Any):
        if unwrap_task(fn) is None:
            check_remote_function(fn)
        self._fn = fn
        self._defaults = defaults

    def options(self, **kw: Any) -> "GroupedFunction":
        """Same function, other group defaults (group_dependency, policy, num_returns...)."""
        return GroupedFunction(self._fn, **{**self._defaults, **kw})

    def map(self, xs: Iterable[Any], **kw: Any) -> GroupRefs:
        return group_map(self._fn, xs, **{**self._defaults, **kw})

    def starmap(self, arg_tuples: Iterable[Sequence[Any]], **kw: Any) -> GroupRefs:
        return group_starmap(self._fn, arg_tuples, **{**self._defaults, **kw})

    def remote(self, *args: Any) -> Any:
        """One call as a group of one task; returns its future(s)."""
        return submit_group(self._fn, [args], **self._defaults)[0]

    def __repr__(self) -> str:
        return f"grouped({task_name(self._fn)})"


def grouped(fn: RemoteFunction, **defaults: Any) -> GroupedFunction:
    """Wraps a @ray.remote function so that ``.map``/``.starmap`` submit one group."""
    return GroupedFunction(fn, **defaults)


# ---- actors --------------------------------------------------------------------------------
def group_actors(actor_cls: ActorClass, n: int,
                 arg_tuples: Sequence[Sequence[Any]] | None = None, *,
                 group_id: int | None = None, group_dependency: int | None = None,
                 inputs: Sequence[Sequence[ray.ObjectRef]] | None = None,
                 policy: str = "actors", name_actors: bool = True,
                 actor_options: dict[str, Any] | None = None,
                 names: Sequence[str] | None = None) -> GroupActors:
    """Creates ``n`` actors of ``actor_cls`` as one group, placed once by the core.

    ``inputs[i]`` lists the objects actor i will read (so the actors go where their data
    is); ``group_dependency`` is the group producing them. With ``name_actors`` each actor
    is a named actor ``f"{cls}[g{gid}:{i}]"`` (visible in the state API and dashboard).
    ``actor_options``: more ``actor_cls.options(...)`` (e.g. ``max_restarts``).
    ``names``: one name per actor, used as given (e.g. detached actors a later driver
    looks up by name): a name already taken raises instead of being made unique.
    ``actor_cls`` may be a ``Cls.options(...)`` wrapper (its options are kept, under
    ``actor_options``). Actors demanding GPUs or custom resources go only to nodes that
    have them; with the user's own ``scheduling_strategy`` or ``placement_group`` Ray
    places them (the group's placement says "unpinned" until they start, then where
    they started).
    """
    actor_cls, cls_options = check_actor_class(actor_cls)
    actor_options = {**cls_options, **(actor_options or {})}
    if n is None:
        raise GroupError("n (the number of actors) must be an int; got None")
    check_optional_int("n", n, 0, MAX_RETURNS)
    check_optional_int("group_id", group_id, 0, MAX_ID)
    check_optional_int("group_dependency", group_dependency, -MAX_ID, MAX_ID)
    args = as_tuples(arg_tuples) if arg_tuples is not None else [()] * n
    if len(args) != n:
        raise GroupError(f"got {len(args)} argument tuples for {n} actors; pass one per "
                         f"actor, e.g. [(i,) for i in range({n})]")
    refs = [list(r) for r in inputs] if inputs is not None else [[] for _ in range(n)]
    if len(refs) != n:
        raise GroupError(f"got {len(refs)} input lists for {n} actors; pass one per actor")
    if names is not None and (len(names) != n or not all(isinstance(x, str) and x
                                                          for x in names)):
        raise GroupError(f"names must be {n} non-empty strings, one per actor; got "
                         f"{names!r}")
    merged = effective_options(actor_cls, actor_options)
    unpinned = user_placement(merged) is not None
    rt = get_runtime()
    with rt.group(group_id) as gid:
        cpus = merged.get("num_cpus")
        pin = None
        if cpus is None:  # Ray: 1 CPU to place an actor, 0 while it lives
            cpus = 1.0 if policy == "pack" else 0.0
        if policy != "pack":  # pack keeps the draft's rule: Ray's 1 CPU to place it
            pin = pinned_actor_options(merged)
        if unpinned:
            nodes = np.full(n, NO_NODE, dtype=np.int64)
            dep = _depends_on(rt, group_dependency, refs)
        else:
            nodes, dep = place(rt, gid, np.full(n, float(cpus)), refs,
                               group_dependency=group_dependency, policy=policy,
                               resources=resource_demand(merged))
        base = task_name(actor_cls)
        handles = []
        for i, a in enumerate(args):
            if names is not None:
                name, exact = names[i], True
            else:
                named = name_actors and not getattr(_names, "plain", 0)
                name, exact = f"{base}[g{gid}:{i}]" if named else None, False
            handles.append(_create_actor(rt, actor_cls, a, nodes[i], name,
                                         actor_options, exact=exact, pin=pin))
        rt.record(GroupRecord(gid, base, dep, "unpinned" if unpinned else policy, nodes,
                              in_core=not unpinned), ())
    _confirm_actor_nodes(rt, handles, gid)
    return GroupActors(handles, gid)


def _node_probe():
    # Built in a function so that cloudpickle ships it by value (no import on workers).
    def node_of(self):
        return ray.get_runtime_context().get_node_id()
    return node_of


_NODE_OF = _node_probe()


def _confirm_actor_nodes(rt: Runtime, handles: list, gid: int,
                         timeout_s: float = 120.0) -> None:
    """Reads back where each actor started. Actors are pinned softly (so that Ray can
    restart them elsewhere when their node dies), and a busy node makes Ray start one on
    another node; the runtime must know the real node (the grouped shuffle writes one
    object per actor node). Waits for the actors to start: once per actor group."""
    try:
        where = ray.get([h.__ray_call__.remote(_NODE_OF) for h in handles],
                        timeout=timeout_s)
    except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError) as e:
        log.warning("actor group g%d: could not read back its nodes (%s); keeping the "
                    "planned ones", gid, type(e).__name__)
        return
    with rt.lock:
        rec = rt.groups.get(gid)
        moved = 0
        for i, (h, hexid) in enumerate(zip(handles, where)):
            nid = rt.node_int(hexid)
            if nid == NO_NODE:
                continue
            if rec is not None and rec.nodes[i] != nid:
                moved += 1
                rec.nodes[i] = nid
            rt.actor_node[h._actor_id.binary()] = nid
        if moved:
            log.info("actor group g%d: %d of %d actors started off their planned node",
                     gid, moved, len(handles))


def _create_actor(rt: Runtime, actor_cls: ActorClass, args: tuple, node: int,
                  name: str | None, actor_options: dict[str, Any] | None,
                  exact: bool = False, pin: dict[str, Any] | None = None) -> Any:
    opts: dict[str, Any] = dict(actor_options or {})
    if node != NO_NODE:  # else the user's own strategy or placement group: Ray places it
        opts["scheduling_strategy"] = rt.strategies[node]
        opts.update(pin or {})
    if name is not None:
        opts["name"] = name
    try:
        h = actor_cls.options(**opts).remote(*args)
    except ray.exceptions.ActorAlreadyExistsError:  # held by an actor being collected
        if name is None or exact:
            raise
        opts["name"] = f"{name}~{rt.token}-{time.monotonic_ns():x}"
        h = actor_cls.options(**opts).remote(*args)
    if node != NO_NODE:
        rt.actor_node[h._actor_id.binary()] = int(node)
    return h


def call_actors(handles: Sequence[Any], method: str, arg_tuples: Sequence[Sequence[Any]],
                *, group_id: int | None = None, group_dependency: int | None = None,
                num_returns: int | None = None, invoke: Any = None,
                name: str | None = None, name_tasks: bool | None = None) -> GroupRefs:
    """Calls ``method`` once on each actor (actor i with ``arg_tuples[i]``) as one group.

    Actor calls run where their actor lives; the group registers their outputs at their
    actor's node. They are named ``name`` (e.g. ``Reducer.reduce``; the actors carry the
    group, ``Reducer[g5:0]``): the option wrapper of each (actor, method, name) is built
    once and reused, since an ``.options()`` call per actor call is most of its driver
    cost. With ``invoke``, the call is ``handle.__ray_call__.remote(invoke, *args)``.
    ``name_tasks=False`` leaves the calls unnamed (as in ``submit_group``). ``invoke``
    and its arguments travel as ``ray_patch.shipping`` packs them: the function pickled
    once, the plain arguments as one, the refs top-level.
    """
    args = as_tuples(arg_tuples)
    if len(args) != len(handles):
        raise GroupError(f"got {len(args)} argument tuples for {len(handles)} actors; "
                         "pass one per actor")
    rt = get_runtime()
    named = rt.name_tasks if name_tasks is None else name_tasks
    with rt.group(group_id) as gid:
        base = name or method
        nodes = np.full(len(handles), NO_NODE, dtype=np.int64)
        out = []
        wrappers = rt.call_wrappers
        for i, (h, a) in enumerate(zip(handles, args)):
            key = h._actor_id.binary()
            nodes[i] = rt.actor_node.get(key, NO_NODE)
            wkey = (key, invoke is not None, method, base if named else None, num_returns)
            m = wrappers.get(wkey)
            if m is None:  # on a weak handle: the cache keeps no actor alive
                w = weak_handle(h)
                m = w.__ray_call__ if invoke is not None else getattr(w, method)
                o: dict[str, Any] = {"name": base} if named else {}
                if num_returns is not None:
                    o["num_returns"] = num_returns
                if o:
                    m = m.options(**o)
                wrappers[wkey] = m  # least recently used out past its bound
            out.append(_send(m, invoke, a))
        rt.record(GroupRecord(gid, base, group_dependency, "actor-calls", nodes,
                              in_core=False), enumerate(out))
    return GroupRefs(out, gid)


def _send(m: Any, invoke: Any, args: tuple) -> Any:
    if invoke is None:
        return m.remote(*args)
    spec, refs = shipping.pack(args)
    return m.remote(shipping.packed_invoke(invoke), spec, *refs)


def resend_call(handle: Any, method: str, args: tuple, invoke: Any = None) -> Any:
    """One actor call sent again as ``call_actors`` sent it (a replay after a restart)."""
    return _send(handle.__ray_call__ if invoke is not None else getattr(handle, method),
                 invoke, tuple(args))


# ---- groups --------------------------------------------------------------------------------
def free_groups(group_ids: Iterable[int]) -> None:
    """Frees groups: the core forgets their placement and load, the registry their
    outputs. Unknown or already-freed ids are ignored. Does not cancel running tasks."""
    rt = current_runtime()
    if rt is None:
        return
    with rt.lock:
        rt.drain()
        for gid in group_ids:
            rt.free(int(gid))


def defer_free(group_ids: Iterable[int]) -> None:
    """Queues groups to be freed at the next ray_patch call: safe from weakref finalizers
    and other threads (the core's state is never re-entered while placing a group)."""
    rt = current_runtime()
    if rt is None:
        return
    for gid in group_ids:
        rt.defer_free(int(gid))


def new_group_id() -> int:
    """A fresh group id (for naming a group before submitting it)."""
    rt = get_runtime()
    with rt.lock:
        gid = rt.new_group_id()
        # Reserve it so the counter does not hand it out again.
        rt.groups.setdefault(gid, GroupRecord(gid, "", None, "", np.zeros(0, np.int64),
                                                      in_core=False))
        return gid


def group_count() -> int:
    """Live (submitted, not freed) groups ray_patch tracks; 0 when no runtime exists."""
    rt = current_runtime()
    if rt is None:
        return 0
    with rt.lock:
        rt.drain()
        return len(rt.groups)


def core_group_count() -> int:
    """Groups the C++ core holds (retired and freed groups are not counted)."""
    rt = current_runtime()
    if rt is None:
        return 0
    with rt.lock:
        return rt.group_count()


def node_failed(node_hex: str | None = None, probe: bool | None = None) -> list[str]:
    """Tells the runtime something failed: re-reads the node table (the GCS's view,
    whose health checks declare a node dead: irfront.cluster.HEALTH_CHECK) now, so no
    later group is placed on a dead node; marks ``node_hex`` (if given) dead in the core
    at once; with ``probe`` (default: ``configure(probe_raylets=...)``, off) also every
    node whose raylet refuses TCP connections. Tasks already pinned to a dead node are
    soft-pinned: Ray runs them elsewhere. Returns the hex ids this call found dead
    (newly dead in the node table, or marked)."""
    rt = current_runtime()
    if rt is None:
        return []
    with rt.lock:
        rt.plans.invalidate("a failure was reported")  # solve every group afresh
        marked = rt.refresh_nodes(force=True)
        if node_hex is not None and node_hex not in rt.failed_nodes:
            rt.mark_dead(node_hex)
            marked.append(node_hex)
        if rt.probe_raylets if probe is None else probe:
            marked += rt.probe_nodes()
        return marked


def update_actor_node(handle: Any, node_hex: str) -> None:
    """Records where an actor lives now (after Ray restarted it on another node)."""
    rt = current_runtime()
    if rt is None:
        return
    with rt.lock:
        nid = rt.node_int(node_hex)
        if nid != NO_NODE:
            rt.actor_node[handle._actor_id.binary()] = nid


def actor_nodes(handles: Sequence[Any]) -> list[int] | None:
    """The core's node of each actor (as pinned, or as updated after a restart); None
    when any of them was not created by this runtime."""
    rt = current_runtime()
    if rt is None:
        return None
    nodes = [rt.actor_node.get(h._actor_id.binary()) for h in handles]
    return None if any(n is None for n in nodes) else nodes


def plan_stats() -> dict[str, Any]:
    """The plan cache's counters (ray_patch.plans): hits, misses, expired, plans held,
    node table version, the last invalidations' reasons; zeros when no runtime exists."""
    rt = current_runtime()
    if rt is None:
        return {"hits": 0, "misses": 0, "expired": 0, "plans": 0, "version": 0,
                "invalidated_by": []}
    with rt.lock:
        return rt.plans.stats()


def placement(group_id: int) -> dict[str, int] | None:
    """Ray node hex id -> number of tasks of the group pinned there (None if unknown)."""
    rt = current_runtime()
    return None if rt is None else rt.counts(group_id)


def refresh_nodes() -> None:
    """Re-reads the node table from Ray now (call after seeing a node failure)."""
    rt = get_runtime()
    with rt.lock:
        rt.refresh_nodes(force=True)
