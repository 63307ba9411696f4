"""Durable exactly-once state for ``MicroBatchStream``: reducer checkpoints in a
``CheckpointStore``, reducers as named detached actors, and a resume position, so that a
new driver can carry on a stream whose driver died.

What is stored, under the stream's name ``S`` (keys of the store):

- ``S/manifest``: the reducer groups (durable name -> number of actors), the Ray
  namespace, and ``finished`` once the stream was closed as finished.
- ``S/reducers/<group>/<i>/<seq + 1, 12 digits>``: the newest checkpoint of actor i of a
  group: ``seq`` (its last applied call), ``state``, and ``cursor``, the source position
  it covers: ``{"batch": b, "next_seq": {group: n}}``, i.e. the state covers every call
  of batches ``0 .. b - 1``, and batch ``b`` is numbered ``n`` in each group. Older
  checkpoints of the actor are deleted once the new one is written.

Actors of a group are named ``S.<group>.<i>`` in the namespace (default ``irfront-S``),
``lifetime="detached"``. A group's durable name is its InitActors' name (the class
name), with ``-2``, ``-3``, ... for further groups of the same class, in the order the
stream first evaluates them (the same in every driver as long as the batches are built
the same way).

Resuming (``open``): the position is the smallest ``cursor["batch"]`` over the newest
checkpoint of every actor of every group (0 when an actor has none), and the call
numbers of that checkpoint's cursor seed the groups. Each actor is restored to its own
newest checkpoint; the source is asked for the batches from the position on, with the
same call numbers as the first time, so an actor already past a replayed call skips it
(``CheckpointedReducer.apply_batch``). A group whose actors are all alive is adopted; a
group with an actor gone (or without a checkpoint) is killed and created again.
"""
from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, Optional

import ray

import ray_patch
from irfront.drivers.checkpoints import CheckpointStore, check_key
from irfront.ir.nodes import InitActors
from irfront.lowering.context import DurableActors
from irfront.lowering.evaluation import EVALUATOR

__all__ = ["DurableStreamState", "StreamFinishedError"]

log = logging.getLogger("irfront.stream")


class StreamFinishedError(RuntimeError):
    """The stream in this checkpoint location was closed as finished."""


def group_key(name: str) -> str:
    """A reducer group's durable name from its InitActors' name: a store key segment
    (a class defined in a function, ``make.<locals>.Sum``, becomes ``make._locals_.Sum``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "reducers"


def _seq_key(seq: int) -> str:
    return f"{seq + 1:012d}"


class DurableStreamState:
    """The durable side of one stream: its store, its actors, its position. Used by
    ``MicroBatchStream``; implements the lowering's ``ActorDirectory``."""

    def __init__(self, store: CheckpointStore, stream: str, namespace: Optional[str],
                 restart_timeout_s: float):
        check_key(stream)
        if "/" in stream:
            raise ValueError(f"stream name {stream!r} must be one key segment (no '/')")
        self.store = store
        self.stream = stream
        self.namespace = namespace or f"irfront-{stream}"
        self.restart_timeout_s = restart_timeout_s
        self.opened = False
        self.position = 0  # absolute number of the next batch from the source
        self.manifest: dict = {}
        self.newest: dict[tuple[str, int], str] = {}  # (group, i) -> newest record key
        self.records: dict[tuple[str, int], dict] = {}  # loaded at open, for restores
        self.resume_cursor: dict[str, int] = {}
        self.next_seq: dict[str, int] = {}  # group -> next call number
        self.batch_of: dict[str, dict[int, int]] = {}  # group -> call seq -> batch
        self.cursors: dict[int, dict] = {}  # batch b -> cursor after b
        self.groups: dict[int, str] = {}  # id(InitActors) -> durable name
        self._nodes: dict[str, InitActors] = {}  # durable name -> node (kept alive)
        self.handles: dict[str, list] = {}
        self.seeded: dict[int, list[tuple[int, Any]]] = {}  # id(InitActors) -> ckpts
        self.info: dict = {}

    # ---- keys ---------------------------------------------------------------------------
    @property
    def manifest_key(self) -> str:
        return f"{self.stream}/manifest"

    def _prefix(self, group: Optional[str] = None, i: Optional[int] = None) -> str:
        p = f"{self.stream}/reducers/"
        if group is not None:
            p += f"{group}/"
            if i is not None:
                p += f"{i}/"
        return p

    def actor_name(self, group: str, i: int) -> str:
        return f"{self.stream}.{group}.{i}"

    def _write_manifest(self) -> None:
        self.store.save(self.manifest_key, self.manifest)

    # ---- resuming ---------------------------------------------------------------------------
    def open(self) -> dict:
        """Reads the store: position, seeds, checkpoints; removes what a dead driver left
        (older checkpoints, cut-short writes, detached actors of this stream that no
        group of the manifest names). Returns what it found and removed."""
        if self.opened:
            return self.info
        t0 = time.perf_counter()
        try:
            self.manifest = self.store.load(self.manifest_key)
        except KeyError:
            self.manifest = {"stream": self.stream, "namespace": self.namespace,
                             "groups": {}, "finished": False}
        if self.manifest.get("finished"):
            raise StreamFinishedError(
                f"stream {self.stream!r} in {self.store!r} was closed as finished after "
                f"{self.manifest.get('batches')} batches; use another stream name or "
                "checkpoint location to start a new one")
        self.namespace = self.manifest.get("namespace", self.namespace)
        groups: dict[str, int] = dict(self.manifest.get("groups", {}))
        removed_tmp = self.store.cleanup()
        removed = 0
        by_actor: dict[tuple[str, int], list[str]] = {}
        for key in self.store.list(self._prefix()):
            parts = key[len(self._prefix()):].split("/")
            ok = len(parts) == 3 and parts[0] in groups and parts[1].isdigit() \
                and int(parts[1]) < groups[parts[0]]
            if not ok:  # not a reducer of the manifest: left by something else
                removed += self.store.delete(key)
                continue
            by_actor.setdefault((parts[0], int(parts[1])), []).append(key)
        for ga, keys in by_actor.items():
            keys.sort()
            for k in keys[:-1]:  # older than the newest: not needed any more
                removed += self.store.delete(k)
            self.newest[ga] = keys[-1]
            self.records[ga] = self.store.load(keys[-1])
        # The position: the least batch covered by every actor's newest checkpoint.
        position, cursor = None, {}
        for g, n in groups.items():
            for i in range(n):
                rec = self.records.get((g, i))
                c = rec["cursor"] if rec is not None else {"batch": 0, "next_seq": {}}
                if position is None or c["batch"] < position:
                    position, cursor = c["batch"], dict(c["next_seq"])
        self.position = position or 0
        self.resume_cursor = cursor if self.position > 0 else {}
        self.next_seq = dict(self.resume_cursor)
        self.cursors[self.position - 1] = {"batch": self.position,
                                           "next_seq": dict(self.resume_cursor)}
        for g, n in self.resume_cursor.items():
            self.batch_of.setdefault(g, {})[n - 1] = self.position - 1
        killed = self._kill_orphans(groups)
        self.opened = True
        self.info = {
            "position": self.position, "next_seq": dict(self.resume_cursor),
            "groups": groups, "checkpoints": {f"{g}[{i}]": r["seq"]
                                              for (g, i), r in sorted(self.records.items())},
            "removed_checkpoints": removed, "removed_tmp": removed_tmp,
            "killed_orphans": killed, "adopted": [], "recreated": [],
            "open_s": time.perf_counter() - t0}
        if groups:
            log.warning("stream %r: resuming at batch %d (%s) from %s", self.stream,
                        self.position, self.resume_cursor, self.store)
        return self.info

    def _kill_orphans(self, groups: dict[str, int]) -> list[str]:
        """Detached actors of this stream that no manifest group names: a dead driver
        created them and died before recording them."""
        wanted = {self.actor_name(g, i) for g, n in groups.items() for i in range(n)}
        out = []
        for a in ray.util.list_named_actors(all_namespaces=True):
            name = a.get("name", "")
            if a.get("namespace") == self.namespace and name.startswith(self.stream + ".") \
                    and name not in wanted:
                if self._kill(name):
                    out.append(name)
        return out

    def _lookup(self, name: str) -> Any:
        try:
            return ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            return None

    def _kill(self, name: str) -> bool:
        h = self._lookup(name)
        if h is None:
            return False
        ray.kill(h, no_restart=True)
        return True

    def _wait_gone(self, names: list[str]) -> None:
        deadline = time.monotonic() + self.restart_timeout_s
        for name in names:
            while self._lookup(name) is not None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"detached actor {name!r} (namespace "
                                       f"{self.namespace!r}) still holds its name "
                                       f"{self.restart_timeout_s} s after ray.kill")
                time.sleep(0.1)

    # ---- the lowering's ActorDirectory --------------------------------------------------
    def find(self, actors: InitActors) -> DurableActors:
        self.open()
        group = self.groups.get(id(actors))
        if group is None:
            base, k = group_key(actors.name), 1
            group = base
            while group in self._nodes:
                k += 1
                group = f"{base}-{k}"
            check_key(group)
            self.groups[id(actors)] = group
            self._nodes[group] = actors
        n = actors.n
        known = self.manifest["groups"].get(group)
        if known is not None and known != n:
            raise ValueError(f"stream {self.stream!r}: reducer group {group!r} has {n} "
                             f"actors here but {known} in {self.store!r}")
        names = [self.actor_name(group, i) for i in range(n)]
        found = [self._lookup(x) for x in names]
        nxt = self.resume_cursor.get(group, 0)
        self.next_seq.setdefault(group, nxt)
        if all(h is not None for h in found) and \
                all((group, i) in self.records for i in range(n)):
            self.info["adopted"].append(group)
            return DurableActors(names, self.namespace, found, nxt)
        gone = [x for x, h in zip(names, found) if h is not None]
        for x in gone:  # a partial group: start it again from the checkpoints
            self._kill(x)
        self._wait_gone(gone)
        if gone or known is not None:
            self.info["recreated"].append(group)
        if known is None:  # recorded before its actors exist: never an orphan
            self.manifest["groups"][group] = n
            self._write_manifest()
        return DurableActors(names, self.namespace, None, nxt)

    def started(self, actors: InitActors, handles: list) -> None:
        """Restores every actor to its newest durable checkpoint (before any call)."""
        group = self.groups[id(actors)]
        self.handles[group] = list(handles)
        deadline = time.monotonic() + self.restart_timeout_s
        where = _get_retrying([h.where.remote() for h in handles], handles, "where",
                              deadline)
        for h, (node, _) in zip(handles, where):
            ray_patch.update_actor_node(h, node)
        ckpts: list[tuple[int, Any]] = []
        refs = []
        epochs = EVALUATOR.results.epochs(actors)  # the driver's tokens (0 when new)
        for i, h in enumerate(handles):
            rec = self.records.get((group, i))
            if rec is None:
                ckpts.append((-1, None))
                continue
            ckpts.append((rec["seq"], rec["state"]))
            refs.append(h.restore.remote(rec["seq"], rec["state"], epochs[i]))
        ray.get(refs, timeout=max(1.0, deadline - time.monotonic()))
        self.seeded[id(actors)] = ckpts

    # ---- while running --------------------------------------------------------------------
    def group_of(self, actors: InitActors) -> str:
        g = self.groups.get(id(actors))
        if g is None:
            raise ValueError(
                f"durable stream {self.stream!r}: the reducers {actors.label} were "
                "evaluated outside the stream, so they are not detached actors it can "
                "find again; let the stream's first batch create them (do not call "
                "eval() on the InitActors before run)")
        return g

    def track(self, group: str, seq: int, batch: int) -> None:
        self.batch_of.setdefault(group, {})[seq] = batch
        self.next_seq[group] = max(self.next_seq.get(group, 0), seq + 1)

    def batch_submitted(self, batch: int) -> None:
        self.cursors[batch] = {"batch": batch + 1, "next_seq": dict(self.next_seq)}

    def save(self, group: str, i: int, seq: int, state: Any,
             oldest_kept: dict[str, int]) -> bool:
        """Writes actor i's checkpoint at call ``seq``; False when this driver cannot tell
        which batch that call came from (a resumed actor ahead of the replay: a later
        checkpoint will do)."""
        b = self.batch_of.get(group, {}).get(seq)
        if b is None or b not in self.cursors:
            return False
        key = self._prefix(group, i) + _seq_key(seq)
        self.store.save(key, {"group": group, "index": i, "seq": seq, "state": state,
                              "cursor": self.cursors[b], "saved_at": time.time(),
                              "pid": os.getpid()})
        old = self.newest.get((group, i))
        self.newest[(group, i)] = key
        if old is not None and old != key:
            self.store.delete(old)
        self._prune(oldest_kept)
        return True

    def _prune(self, oldest_kept: dict[str, int]) -> None:
        """Forgets call -> batch entries and cursors no checkpoint can ask for any more:
        ``oldest_kept[group]`` is the least checkpoint seq over the group's actors."""
        floor = None
        for g, m in self.batch_of.items():
            low = oldest_kept.get(g)
            if low is None:
                continue
            for s in [s for s in m if s < low]:
                del m[s]
            if m:
                b = min(m.values())
                floor = b if floor is None else min(floor, b)
        if floor is not None:
            for b in [b for b in self.cursors if b < floor]:
                del self.cursors[b]

    # ---- ending ----------------------------------------------------------------------------
    def finish(self, batches: int) -> dict:
        """The stream is over: kills its detached actors, deletes its checkpoints, and
        marks the manifest finished (a later driver is refused)."""
        killed = []
        for g, n in self.manifest.get("groups", {}).items():
            for i in range(n):
                name = self.actor_name(g, i)
                if self._kill(name):
                    killed.append(name)
        removed = 0
        for key in self.store.list(self._prefix()):
            removed += self.store.delete(key)
        self.store.cleanup()
        self.manifest["finished"] = True
        self.manifest["batches"] = batches
        self.manifest["finished_at"] = time.time()
        self._write_manifest()
        self.handles.clear()
        return {"killed": killed, "removed_checkpoints": removed}


def _get_retrying(refs: list, handles: list, method: str, deadline: float) -> list:
    """``ray.get`` of one call per actor, re-sent while Ray restarts an actor."""
    out: list = [None] * len(refs)
    todo = list(range(len(refs)))
    while todo:
        left = max(0.1, deadline - time.monotonic())
        again = []
        for i in todo:
            try:
                out[i] = ray.get(refs[i], timeout=left)
            except ray.exceptions.RayActorError:
                if time.monotonic() > deadline:
                    raise
                again.append(i)
        if again:
            time.sleep(0.2)
            for i in again:
                refs[i] = getattr(handles[i], method).remote()
        todo = again
    return out
