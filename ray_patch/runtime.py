"""The group runtime: everything ray_patch keeps between submissions, in one place.

- the node table: Ray node hex id <-> the small int ids the C++ core uses, one soft
  NodeAffinitySchedulingStrategy per node, refreshed from ``ray.nodes()`` at most every
  ``refresh_interval_s`` unless a failure forces it;
- the C++ ``GroupScheduler`` (ray_patch.scheduler) holding the cluster and group state;
- a registry of the outputs of group tasks: ``ObjectRef.binary() -> (group_id, task)``,
  so a later group names its inputs' producers instead of asking Ray where they are;
- per-group records (name, dependency, policy, the node of each task).

One runtime per Ray job: when Ray is shut down and initialised again, the next call builds
a fresh one. Frees requested by garbage collection (weakref finalizers) are queued and
applied at the next call, never from inside a finalizer, so the C++ state is never
re-entered while it is placing a group.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ray_patch.lru import LRU
from ray_patch import metrics
from ray_patch.ids import NO_NODE, next_group_id
from ray_patch.plans import PlanCache
from ray_patch.scheduler import GroupScheduler
from ray_patch.validate import GroupError

log = logging.getLogger("irfront.ray_patch")  # under irfront's logger, by name only


_TOKENS = itertools.count(1)




@dataclass
class GroupRecord:
    """What ray_patch knows about one submitted group."""

    group_id: int
    name: str
    depends_on: int | None
    policy: str
    nodes: np.ndarray  # int64, one int node id per task (NO_NODE when unknown)
    in_core: bool  # placed (and recorded) by the C++ core
    keys: list[bytes] = field(default_factory=list)  # registry keys of its outputs


class Runtime:
    """Node table, C++ scheduler, output registry and group records of one Ray job."""

    def __init__(self, *, refresh_interval_s: float = 1.0,
                 default_object_bytes: int = 1 << 20, scheduler: Any = None,
                 retire_policies: tuple[str, ...] = ("locality", "spread", "actors"),
                 name_tasks: bool = True, probe_raylets: bool = False,
                 plan_max_uses: int = 100, plan_max_age_s: float = 5.0):
        if not ray.is_initialized():
            raise GroupError(
                "Ray is not initialised; call ray.init(address=...) (or "
                "irfront.init(...) / irfront.cluster.LocalCluster()) before submitting groups")
        if scheduler is None:
            scheduler = GroupScheduler()
        self.scheduler = scheduler
        self.job_id = ray.get_runtime_context().get_job_id()
        self.refresh_interval_s = refresh_interval_s
        self.default_object_bytes = default_object_bytes
        # Placing a group with one of these policies retires its dependency first: a BSP
        # stage's tasks run after the stage it reads from, so that stage's CPU demand no
        # longer counts as load. "pack" keeps the draft's rule (load of live groups).
        self.retire_policies = tuple(retire_policies)
        # Name each task f"{fn}[g{gid}]" (visible in Ray's dashboard and state API):
        # one name per group, not per task.
        # Ray's core worker keeps per-task-name state in every process for good (a
        # distinct name costs the driver about 0.5 KB): turn off for long runs.
        self.name_tasks = bool(name_tasks)
        # node_failed() also probes each alive node's raylet (a TCP connect) when on:
        # opt-in, the node table alone was as fast once the GCS health checks are
        # tuned (docs/RELIABILITY.md, "Detecting a dead node").
        self.probe_raylets = bool(probe_raylets)
        # Placements reused by groups of the same shape and input locations (plans.py),
        # when the caller asks for it (``plan_cache=True``); invalidated by any change
        # of the node table.
        self.plans = PlanCache(max_uses=plan_max_uses, max_age_s=plan_max_age_s)
        self.hex_of: list[str] = []  # int node id -> Ray hex id
        self.int_of: dict[str, int] = {}  # Ray hex id -> int node id
        self.strategies: list[NodeAffinitySchedulingStrategy] = []
        self._node_state: dict[int, tuple[float, bool]] = {}  # last (cpus, alive) sent
        self.registry: dict[bytes, tuple[int, int]] = {}
        self.groups: dict[int, GroupRecord] = {}
        self.actor_node: dict[bytes, int] = {}  # actor id -> int node it was pinned to
        # (actor id, via __ray_call__, method, name, num_returns) -> option wrapper
        self.call_wrappers = LRU(10_000)  # on weak handles (ray_private.weak_handle)
        # the other per-cluster tables of ray_patch (table(): the resident path's routes
        # and feeds, batched task functions), bounded, released together with the
        # runtime (release())
        self._tables: dict[str, LRU] = {}
        # (kind, int node id) -> (node hex id, executor handle, {num_returns: method}):
        # the per-node executors (ray_patch.executors), at most kinds x nodes
        self.executors: dict[tuple[str, int], tuple[str, Any, dict[int, Any]]] = {}
        # (monotonic time read, {int node id: resources}): the non-CPU capacities last
        # sent to the core (ray_patch.submit.node_resources)
        self.resources_sent: tuple[float, dict[int, dict[str, float]]] = (
            -float("inf"), {})
        self.token = next(_TOKENS)  # identifies this runtime to finalizers
        self._last_refresh = -float("inf")
        self._pending_free: collections.deque[int] = collections.deque()
        self.failed_nodes: set[str] = set()  # marked dead by mark_dead(), for good
        self.lock = threading.RLock()
        self.refresh_nodes(force=True)

    def driver_node_hex(self) -> str:
        """The Ray node this process runs on (where its ``ray.put`` objects live)."""
        hexid = self.__dict__.get("_driver_node")
        if hexid is None:
            hexid = self._driver_node = ray.get_runtime_context().get_node_id()
        return hexid

    # ---- the per-cluster tables ------------------------------------------------------
    def table(self, name: str, max_entries: int, **kw: Any) -> LRU:
        """The table ``name`` of this runtime (made on first use with ``max_entries``
        and ``LRU``'s other settings): every per-cluster cache lives here, so one
        ``release()`` lets go of them all."""
        with self.lock:
            t = self._tables.get(name)
            if t is None:
                t = self._tables[name] = LRU(max_entries, **kw)
            return t

    def release(self) -> None:
        """Empties every table, each entry through its table's ``on_evict`` (a feed
        closes its connection): at shutdown."""
        with self.lock:
            tables = list(self._tables.values())
            self._tables.clear()
            self.call_wrappers.clear()
        for t in tables:
            t.clear(evict=True)

    # ---- group ids and freeing -------------------------------------------------------
    def new_group_id(self) -> int:
        gid = next_group_id()
        while gid in self.groups:
            gid = next_group_id()
        return gid

    @contextlib.contextmanager
    def group(self, group_id: int | None = None) -> Iterator[int]:
        """One group's submission as a transaction, under the runtime's lock: yields its
        id (a new one, or the caller's). If the body raises, the group goes: the core's
        hold on it (placed CPU load) is released, and its record too if the body had
        recorded it. Every group submission (tasks, per-node tasks, actors, actor
        calls, resident batches) runs inside one."""
        with self.lock:
            gid = self.new_group_id() if group_id is None else int(group_id)
            before = self.groups.get(gid)
            try:
                yield gid
            except BaseException:
                if self.groups.get(gid) is not before:  # the body had recorded it
                    self.free(gid)
                else:
                    self.scheduler.free_group(gid)
                raise

    def defer_free(self, group_id: int) -> None:
        """Queue a free (safe from finalizers / other threads); applied on the next call."""
        self._pending_free.append(group_id)

    def drain(self) -> None:
        if not self._pending_free:
            return
        while self._pending_free:
            self.free(self._pending_free.popleft())
        metrics.live_groups(len(self.groups))

    def free(self, group_id: int) -> None:
        rec = self.groups.pop(group_id, None)
        self.scheduler.free_group(group_id)
        if rec is not None:
            reg = self.registry
            for key in rec.keys:
                reg.pop(key, None)

    def retire(self, group_id: int) -> None:
        """The core forgets the group (and its CPU load); ray_patch keeps its record, so
        its outputs stay known by the node that produced them."""
        rec = self.groups.get(group_id)
        if rec is not None and rec.in_core:
            self.scheduler.free_group(group_id)
            rec.in_core = False

    def group_count(self) -> int:
        self.drain()
        return self.scheduler.group_count()

    # ---- nodes --------------------------------------------------------------------------
    def refresh_nodes(self, force: bool = False) -> list[str]:
        """Reads ray.nodes() (the GCS node table) into the core: new nodes, CPU changes,
        deaths. Returns the hex ids of known nodes it saw go from alive to dead."""
        now = time.monotonic()
        if not force and now - self._last_refresh < self.refresh_interval_s:
            return []
        self._last_refresh = now
        died = []
        for info in ray.nodes():
            hexid = info["NodeID"]
            alive = bool(info.get("Alive", False)) and hexid not in self.failed_nodes
            cpus = float(info.get("Resources", {}).get("CPU", 0.0)) if alive else 0.0
            nid = self.int_of.get(hexid)
            if nid is None:
                if not alive:
                    continue
                nid = len(self.hex_of)
                self.hex_of.append(hexid)
                self.int_of[hexid] = nid
                self.strategies.append(NodeAffinitySchedulingStrategy(hexid, soft=True))
                self.scheduler.add_node(nid, cpus)
                self._node_state[nid] = (cpus, True)
                self.plans.invalidate(f"node {hexid[:12]} joined")
            elif self._node_state.get(nid) != (cpus, alive):
                if alive:
                    self.scheduler.update_node(nid, cpus=cpus, alive=True)
                else:
                    self.scheduler.update_node(nid, alive=False)
                    if self._node_state.get(nid, (0.0, False))[1]:
                        died.append(hexid)
                self._node_state[nid] = (cpus, alive)
                self.plans.invalidate(f"node {hexid[:12]} now {cpus:g} CPUs, "
                                      f"{'alive' if alive else 'dead'}")
        if died:
            metrics.node_failures(len(died))
            log.info("node table: %s dead; no later group is placed there",
                     ", ".join(h[:12] for h in died))
        return died

    def mark_dead(self, hexid: str) -> None:
        """Marks a node dead in the core now (a failure seen before the GCS reports it).
        It stays dead: a Ray node id never comes back, even while the GCS, not having
        noticed yet, still lists it as alive."""
        nid = self.int_of.get(hexid)
        if nid is None:
            return
        self.failed_nodes.add(hexid)
        if self._node_state.get(nid, (0.0, False))[1]:
            self.scheduler.update_node(nid, alive=False)
            self._node_state[nid] = (0.0, False)
            self.plans.invalidate(f"node {hexid[:12]} marked dead")
            metrics.node_failures(1)

    def probe_nodes(self, timeout_s: float = 0.3) -> list[str]:
        """Marks dead every node whose raylet no longer accepts connections (a TCP connect
        to its NodeManagerPort): a node killed seconds ago, before the GCS's health checks
        notice. Returns the hex ids it marked. Called after failures only, and only
        with ``probe_raylets`` on (``configure(probe_raylets=True)``)."""
        import socket
        marked = []
        for info in ray.nodes():
            hexid = info["NodeID"]
            if not info.get("Alive", False) or hexid in self.failed_nodes:
                continue
            addr = (info.get("NodeManagerAddress"), info.get("NodeManagerPort"))
            if not addr[0] or not addr[1]:
                continue
            try:
                with socket.create_connection(addr, timeout=timeout_s):
                    pass
            except ConnectionRefusedError:
                self.mark_dead(hexid)
                marked.append(hexid)
                log.info("raylet probe: %s refuses connections, marked dead", hexid[:12])
            except OSError:  # a timeout proves nothing: leave it to the GCS
                pass
        return marked

    def dead_nodes(self) -> set[str]:
        """Hex ids of the known nodes the node table says are dead, or marked dead."""
        return {self.hex_of[n] for n, (_, alive) in self._node_state.items()
                if not alive} | set(self.failed_nodes)

    def node_cpus(self, node: int) -> float:
        """Node index ``node``'s CPUs as the node table last said (1 if unknown)."""
        return self._node_state.get(node, (1.0, True))[0]

    def alive_nodes(self) -> list[str]:
        return [self.hex_of[n] for n, (cpus, alive) in sorted(self._node_state.items())
                if alive and cpus > 0]

    def node_int(self, hexid: str) -> int:
        nid = self.int_of.get(hexid)
        if nid is None:
            self.refresh_nodes(force=True)
            nid = self.int_of.get(hexid, NO_NODE)
        return nid

    # ---- inputs -------------------------------------------------------------------------
    def build_inputs(self, task_refs: list[list[ray.ObjectRef]]):
        """CSR arrays describing every task's ObjectRef inputs (see GroupRequest)."""
        offsets = [0]
        sizes: list[int] = []
        pgroup: list[int] = []
        ptask: list[int] = []
        locs: list[list[int]] = []
        unknown: dict[bytes, list[int]] = {}  # ref key -> input slots waiting for Ray
        unknown_refs: list[ray.ObjectRef] = []
        reg, groups, dflt = self.registry, self.groups, self.default_object_bytes
        for refs in task_refs:
            for ref in refs:
                key = ref.binary()
                slot = len(sizes)
                hit = reg.get(key)
                rec = groups.get(hit[0]) if hit is not None else None
                if rec is not None and rec.in_core:
                    sizes.append(dflt)
                    pgroup.append(hit[0])
                    ptask.append(hit[1])
                    locs.append([])
                elif rec is not None and rec.nodes[hit[1]] != NO_NODE:
                    sizes.append(dflt)
                    pgroup.append(-1)
                    ptask.append(-1)
                    locs.append([int(rec.nodes[hit[1]])])
                else:
                    sizes.append(dflt)
                    pgroup.append(-1)
                    ptask.append(-1)
                    locs.append([])
                    if key not in unknown:
                        unknown[key] = []
                        unknown_refs.append(ref)
                    unknown[key].append(slot)
            offsets.append(len(sizes))
        if unknown_refs:
            self._locate(unknown_refs, unknown, sizes, locs)
        loc_offsets = np.zeros(len(locs) + 1, dtype=np.int64)
        if locs:
            np.cumsum([len(x) for x in locs], out=loc_offsets[1:])
        loc_nodes = np.fromiter(itertools.chain.from_iterable(locs), dtype=np.int64)
        return (np.asarray(offsets, dtype=np.int64), np.asarray(sizes, dtype=np.int64),
                np.asarray(pgroup, dtype=np.int64), np.asarray(ptask, dtype=np.int64),
                loc_offsets, loc_nodes)

    def _locate(self, refs, slots_of, sizes, locs) -> None:
        """Asks Ray where objects not produced by a known group live, and their size."""
        try:
            found = ray.experimental.get_object_locations(refs)
        except (ray.exceptions.RayError, OSError) as e:  # a failed lookup costs locality
            log.debug("object locations unavailable (%s: %s): placed without them",
                      type(e).__name__, str(e))
            return
        for ref, info in found.items():
            nodes = [n for n in (self.node_int(h) for h in info.get("node_ids") or ())
                     if n != NO_NODE]
            size = int(info.get("object_size") or 0)
            for slot in slots_of.get(ref.binary(), ()):
                sizes[slot] = size
                locs[slot] = nodes

    # ---- recording ------------------------------------------------------------------------
    def record(self, rec: GroupRecord, outputs: Iterable[tuple[int, Any]]) -> None:
        """Registers the output refs of a group: (task index, ref or list of refs)."""
        reg, keys, gid = self.registry, rec.keys, rec.group_id
        for i, out in outputs:
            if isinstance(out, ray.ObjectRef):
                k = out.binary()
                reg[k] = (gid, i)
                keys.append(k)
            else:
                for ref in out:
                    k = ref.binary()
                    reg[k] = (gid, i)
                    keys.append(k)
        old = self.groups.get(gid)
        if old is not None and old is not rec:
            for k in old.keys:
                if reg.get(k, (None,))[0] == gid and k not in keys:
                    reg.pop(k, None)
        self.groups[gid] = rec
        metrics.live_groups(len(self.groups))

    def counts(self, group_id: int) -> dict[str, int] | None:
        """Ray hex node id -> number of tasks of the group pinned there ("unpinned" for
        tasks Ray placed: a user's own strategy or resources the core does not model)."""
        rec = self.groups.get(group_id)
        if rec is None:
            return None
        out: dict[str, int] = {}
        free = "unpinned" if rec.policy == "unpinned" else "unknown"
        for n in rec.nodes.tolist():
            h = self.hex_of[n] if n != NO_NODE else free
            out[h] = out.get(h, 0) + 1
        return out


_RUNTIME: Runtime | None = None
_LOCK = threading.Lock()
_SETTINGS: dict[str, Any] = {}


def configure(**settings: Any) -> None:
    """Settings for the next runtime built (refresh_interval_s, default_object_bytes,
    scheduler, name_tasks, probe_raylets, plan_max_uses, plan_max_age_s); applied to
    the current one too where that makes sense."""
    _SETTINGS.update(settings)
    rt = _RUNTIME
    if rt is not None:
        for k in ("refresh_interval_s", "default_object_bytes", "retire_policies",
                  "name_tasks", "probe_raylets"):
            if k in settings:
                setattr(rt, k, settings[k])
        for k, attr in (("plan_max_uses", "max_uses"), ("plan_max_age_s", "max_age_s")):
            if k in settings:
                setattr(rt.plans, attr, settings[k])


def get_runtime() -> Runtime:
    """The runtime of the current Ray job; a fresh one after ray.shutdown()/ray.init()."""
    global _RUNTIME
    rt = _RUNTIME
    if not ray.is_initialized():
        raise GroupError(
            "Ray is not initialised; call ray.init(address=...) (or irfront.init(...) / "
            "irfront.cluster.LocalCluster()) before submitting groups")
    if rt is not None and rt.job_id == ray.get_runtime_context().get_job_id():
        rt.drain()
        return rt
    with _LOCK:
        _RUNTIME = Runtime(**_SETTINGS)
        return _RUNTIME


def current_runtime() -> Runtime | None:
    """The runtime if one exists for the current Ray job, without creating one."""
    rt = _RUNTIME
    if rt is None or not ray.is_initialized():
        return None
    if rt.job_id != ray.get_runtime_context().get_job_id():
        return None
    return rt


def reset() -> None:
    """Forgets the runtime (its node table, groups and registry)."""
    global _RUNTIME
    _RUNTIME = None
