"""Reliable micro-batch streaming: group tasks with retries, checkpointed reducers, replay.

    stream = ReliableStream(SumReducer, num_reducers=4, stages=[scale], shuffle=split,
                            settings=RecoverySettings(checkpoint_every=10, max_in_flight=4))
    report = stream.run(source)          # source: an iterable of lists of partitions
    # a stage is a @ray.remote function f(part) or a pair (f, extra): f(part, *extra)
    states = stream.states()             # [(last_seq, state), ...] one per reducer
    stream.close()

Each micro-batch ``seq`` (0, 1, ...) is one BSP round: the partitions go through the
``stages`` (one group of tasks each, ``ray_patch.submit_group``), then ``shuffle``
(``shuffle(part, num_reducers)`` returns one piece per reducer), and reducer i gets the
i-th piece of every partition: ``apply(seq, *pieces)``.

How nothing is lost and nothing counts twice:

- Group tasks are submitted with ``max_retries`` (``task_retries``): a worker killed
  mid-stage is retried by Ray; an output lost with its node is rebuilt from lineage. The
  tasks are soft-pinned, so a retry whose node is gone runs on another one.
- Reducers are idempotent by sequence number (``CheckpointedReducer``): each records the
  last batch it applied and applies batch ``seq`` only if ``seq == last + 1``; an older
  one is skipped (``dup``), a newer one refused (``gap``), nothing is applied twice or
  out of order.
- Every ``checkpoint_every`` batches the driver asks each reducer for ``(last, state)``
  and keeps the value. It keeps the input refs of every batch after the oldest
  checkpoint (at most ``checkpoint_every + max_in_flight`` batches) for replay.
- Reducer actors are created with ``max_restarts`` (Ray restarts a killed actor, on
  another node if its node died, with fresh ``__init__`` state) and ``max_task_retries=0``
  (the driver, not Ray, re-sends calls). A restarted reducer refuses batches until the
  driver restores it; when a call fails or is refused, the driver re-reads the node table
  (``ray_patch.node_failed``), waits for the actor, restores the last checkpoint and
  replays the kept batches after it, in order.
- Backpressure: at most ``max_in_flight`` batches unconfirmed; the source is not pulled
  while the window is full (``irfront.backpressure.InFlightWindow``); the report says how
  long it was held back.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import ray
from ray.actor import ActorClass
from ray.remote_function import RemoteFunction

from irfront.backpressure import InFlightWindow

__all__ = ["RecoverySettings", "CheckpointedReducer", "SumReducer", "ReliableStream",
           "StreamReport", "RecoveryError", "REDUCER_OPTIONS", "SumReducerBase"]

# Options for reducer actor classes: Ray restarts them; the driver re-sends calls.
REDUCER_OPTIONS = {"max_restarts": -1, "max_task_retries": 0}


class RecoveryError(RuntimeError):
    """A fault the stream could not recover from (the message says which and why)."""


@dataclass(frozen=True)
class RecoverySettings:
    """Knobs of the reliable driver (defaults are what bench/longrun.py runs)."""

    checkpoint_every: int = 10  # K: batches between reducer checkpoints
    max_in_flight: int = 4  # batches submitted and not yet confirmed by every reducer
    task_retries: int = 3  # max_retries of group tasks (worker crash, lost outputs)
    restart_timeout_s: float = 120.0  # how long to wait for a reducer to come back
    max_recoveries: int = 20  # per reducer per run; more means something is wrong
    policy: str = "locality"  # group policy for the stage tasks
    # Per-task names (ray_patch's f"{fn}[g{gid}]"). Off: Ray's core worker keeps
    # state for every distinct task name in the driver for good (about 55 KiB per batch
    # of this driver's default workload: docs/RELIABILITY.md); a long run must not.
    name_tasks: bool = False

    def __post_init__(self) -> None:
        for name in ("checkpoint_every", "max_in_flight", "max_recoveries"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"RecoverySettings.{name} must be an int >= 1; got {v!r}")
        if (isinstance(self.task_retries, bool) or not isinstance(self.task_retries, int)
                or self.task_retries < 0):
            raise ValueError(f"RecoverySettings.task_retries must be an int >= 0; got "
                             f"{self.task_retries!r}")
        if not self.restart_timeout_s > 0:
            raise ValueError(f"RecoverySettings.restart_timeout_s must be > 0; got "
                             f"{self.restart_timeout_s!r}")


# ---- reducers ------------------------------------------------------------------------------
def _reconstructed() -> bool:
    """Whether Ray restarted the current actor (its property warns about a deprecated
    attribute it reads itself; silenced)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


class CheckpointedReducer:
    """Base of reducer actors: a state, the last applied batch, checkpoint and restore.

    Subclass it, define ``merge(state, pieces) -> state`` (and ``initial_state``), and
    decorate with ``@ray.remote(**REDUCER_OPTIONS)``. ``merge`` must be deterministic:
    a replayed batch then gives the state it gave the first time.
    """

    def __init__(self, index: int = 0, *args: Any):
        self.index = index
        self.last_seq = -1
        self.applied = 0
        self.skipped = 0
        self.state = self.initial_state(*args)
        # Ray restarted us with fresh state: refuse batches until restore().
        self.needs_restore = _reconstructed()

    def initial_state(self, *args: Any) -> Any:
        return 0

    def merge(self, state: Any, pieces: Sequence[Any]) -> Any:
        raise NotImplementedError("define merge(state, pieces) -> new state")

    def apply(self, seq: int, *pieces: Any) -> tuple[str, int]:
        """Applies batch ``seq`` once, in order: ("ok" | "dup" | "gap" | "stale", last)."""
        if self.needs_restore:
            return "stale", self.last_seq
        if seq <= self.last_seq:
            self.skipped += 1
            return "dup", self.last_seq
        if seq != self.last_seq + 1:
            return "gap", self.last_seq
        self.state = self.merge(self.state, pieces)
        self.last_seq = seq
        self.applied += 1
        return "ok", seq

    def checkpoint(self) -> Optional[tuple[int, Any]]:
        """``(last_seq, state)``, or None while waiting for a restore."""
        return None if self.needs_restore else (self.last_seq, self.state)

    def restore(self, seq: int, state: Any) -> int:
        self.last_seq, self.state = seq, state
        self.needs_restore = False
        return seq

    def get_state(self) -> tuple[int, Any]:
        return self.last_seq, self.state

    def stats(self) -> dict:
        return {"applied": self.applied, "skipped": self.skipped, "last_seq": self.last_seq,
                "restarted": _reconstructed()}

    def ping(self) -> tuple[str, bool]:
        return ray.get_runtime_context().get_node_id(), not self.needs_restore


class SumReducerBase(CheckpointedReducer):
    """Adds up its pieces: numbers, or the sum of each numpy array (ints stay exact)."""

    def merge(self, state: Any, pieces: Sequence[Any]) -> Any:
        for p in pieces:
            state = state + (p.sum() if hasattr(p, "sum") else p)
        return state


SumReducer = ray.remote(**REDUCER_OPTIONS)(SumReducerBase)


# ---- the driver ------------------------------------------------------------------------------
@dataclass
class StreamReport:
    """What happened during ``ReliableStream.run``."""

    batches: int = 0
    elapsed_s: float = 0.0
    lost_batches: int = 0  # batches not applied by every reducer at the end (must be 0)
    recoveries: list[dict] = field(default_factory=list)  # one per reducer recovery
    replayed: int = 0  # reducer calls re-sent after restores
    checkpoints: int = 0  # reducer checkpoints taken
    kept_peak: int = 0  # most batches kept for replay at once
    node_failures: list[str] = field(default_factory=list)  # nodes marked dead
    backpressure: dict = field(default_factory=dict)

    def summary(self) -> str:
        bp = self.backpressure
        return (f"{self.batches} batches in {self.elapsed_s:.1f} s, lost {self.lost_batches}, "
                f"{len(self.recoveries)} recoveries ({self.replayed} calls replayed), "
                f"{self.checkpoints} checkpoints, kept <= {self.kept_peak} batches, "
                f"in flight <= {bp.get('peak_in_flight')} (max {bp.get('max_in_flight')}), "
                f"source held back {bp.get('held_back_s', 0.0):.2f} s")


_FAILURES = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError,
             ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
             ray.exceptions.OwnerDiedError)
_HEX = re.compile(r"\b[0-9a-f]{56}\b")


def _dead_node_in(err: BaseException) -> Optional[str]:
    """The hex id of a node a Ray error says has died (its text names the node)."""
    text = str(err)
    if not re.search(r"node.{0,80}(died|dead|removed|failed)", text,
                     re.IGNORECASE | re.DOTALL):
        return None
    known = {info["NodeID"] for info in ray.nodes()}
    here = ray.get_runtime_context().get_node_id()  # the driver's node is not dead
    for hexid in _HEX.findall(text):
        if hexid in known and hexid != here:
            return hexid
    return None


class ReliableStream:
    """Runs micro-batches through group-scheduled stages into checkpointed reducers,
    recovering from killed workers, killed reducers and removed nodes."""

    def __init__(self, reducer_cls: ActorClass, num_reducers: int,
                 stages: Sequence[RemoteFunction], shuffle: RemoteFunction,
                 settings: Optional[RecoverySettings] = None,
                 reducer_args: Optional[Sequence[Sequence[Any]]] = None):
        if not isinstance(reducer_cls, ActorClass):
            raise TypeError(f"reducer_cls must be a @ray.remote class derived from "
                            f"CheckpointedReducer; got {type(reducer_cls).__name__}")
        if isinstance(num_reducers, bool) or not isinstance(num_reducers, int) \
                or num_reducers < 1:
            raise ValueError(f"num_reducers must be an int >= 1; got {num_reducers!r}")
        stages = [s if isinstance(s, tuple) else (s, ()) for s in stages]
        for f, extra in (*stages, (shuffle, ())):
            if not isinstance(f, RemoteFunction) or not isinstance(extra, tuple):
                raise TypeError(f"stages must be @ray.remote functions or (function, "
                                f"extra_args_tuple) pairs, shuffle a @ray.remote function; "
                                f"got {type(f).__name__} {f!r}")
        self.reducer_cls = reducer_cls
        self.n = num_reducers
        self.stages = list(stages)
        self.shuffle = shuffle
        self.settings = settings or RecoverySettings()
        args = [tuple(a) for a in reducer_args] if reducer_args is not None else \
            [(i,) for i in range(num_reducers)]
        if len(args) != num_reducers:
            raise ValueError(f"got {len(args)} reducer argument tuples for {num_reducers} "
                             "reducers; pass one per reducer")
        self._args = args
        self.handles: list = []
        self._actor_group: Optional[int] = None
        self.ckpt: list[tuple[int, Any]] = []
        self.confirmed: list[int] = []
        self.kept: dict[int, list[list[ray.ObjectRef]]] = {}  # seq -> refs per reducer
        self._pending: dict[ray.ObjectRef, tuple[str, int, int]] = {}
        self._groups: dict[int, list[int]] = {}  # seq -> groups to free when confirmed
        self._replay_groups: list[tuple[int, int, int]] = []  # (reducer, seq, group)
        self._recoveries = [0] * num_reducers
        self.report = StreamReport()
        self.window = InFlightWindow(self.settings.max_in_flight)
        self.last_submitted = -1

    # ---- life cycle ---------------------------------------------------------------------
    def start(self) -> "ReliableStream":
        """Creates the reducers (one actor group) and takes their first checkpoint."""
        import ray_patch
        if self.handles:
            return self
        actors = ray_patch.group_actors(self.reducer_cls, self.n, self._args,
                                        policy="actors")
        self.handles = list(actors)
        self._actor_group = actors.group_id
        self.ckpt = list(ray.get([h.checkpoint.remote() for h in self.handles]))
        if any(c is None for c in self.ckpt):
            raise RecoveryError("a reducer asked for a restore right after creation")
        self.confirmed = [c[0] for c in self.ckpt]
        return self

    def close(self) -> None:
        """Frees the stream's groups and kills its reducers."""
        import ray_patch
        groups = [g for gs in self._groups.values() for g in gs]
        groups += [g for _, _, g in self._replay_groups]
        if self._actor_group is not None:
            groups.append(self._actor_group)
        ray_patch.free_groups(groups)
        self._groups.clear()
        self._replay_groups.clear()
        self._actor_group = None
        for h in self.handles:
            try:
                ray.kill(h, no_restart=True)
            except Exception:
                pass
        self.handles = []
        self.kept.clear()
        self._pending.clear()

    def __enter__(self) -> "ReliableStream":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def states(self) -> list[tuple[int, Any]]:
        """``(last_seq, state)`` of every reducer."""
        return ray.get([h.get_state.remote() for h in self.handles])

    # ---- running ------------------------------------------------------------------------
    def run(self, source: Iterable[Sequence[Any]],
            on_batch: Optional[Callable[[int, "ReliableStream"], None]] = None
            ) -> StreamReport:
        """Runs every batch of ``source`` (a list of partitions each) and waits until each
        reducer applied all of them. ``on_batch(seq, stream)`` runs after each submission
        (e.g. to inject a fault). Returns the report (also ``self.report``)."""
        self.start()
        t0 = time.perf_counter()
        it = iter(source)
        while True:
            self._poll(timeout=0)
            self.window.admit(lambda: self._poll(timeout=1.0))
            try:
                parts = next(it)  # pulled only when there is room: the source waits
            except StopIteration:
                break
            seq = self.last_submitted + 1
            self._submit(seq, list(parts))
            if on_batch is not None:
                on_batch(seq, self)
        deadline = time.monotonic() + self.settings.restart_timeout_s * 4
        while min(self.confirmed) < self.last_submitted or self._pending:
            if time.monotonic() > deadline:
                raise RecoveryError(f"stream did not drain: confirmed {self.confirmed}, "
                                    f"submitted up to {self.last_submitted}")
            self._poll(timeout=1.0)
        self._prune()
        rep = self.report
        rep.batches = self.last_submitted + 1
        rep.elapsed_s += time.perf_counter() - t0
        rep.lost_batches = sum(self.last_submitted - c for c in self.confirmed)
        rep.backpressure = self.window.report()
        return rep

    def _submit(self, seq: int, parts: list) -> None:
        import ray_patch
        st = self.settings
        groups = []
        xs: list = parts
        dep = None
        for fn, extra in self.stages:
            out = ray_patch.submit_group(fn, [(x, *extra) for x in xs], group_dependency=dep,
                                         policy=st.policy, max_retries=st.task_retries,
                                         name_tasks=st.name_tasks)
            groups.append(out.group_id)
            dep, xs = out.group_id, list(out)
        sh = ray_patch.submit_group(self.shuffle, [(x, self.n) for x in xs],
                                    group_dependency=dep, policy=st.policy,
                                    num_returns=self.n if self.n > 1 else None,
                                    max_retries=st.task_retries, name_tasks=st.name_tasks)
        groups.append(sh.group_id)
        if self.n > 1:
            per = [[refs[i] for refs in sh] for i in range(self.n)]
        else:
            per = [list(sh)]
        self.kept[seq] = per
        self.report.kept_peak = max(self.report.kept_peak, len(self.kept))
        calls = ray_patch.call_actors(self.handles, "apply",
                                      [(seq, *per[i]) for i in range(self.n)],
                                      group_dependency=sh.group_id,
                                      name=f"{self._reducer_name()}.apply",
                                      name_tasks=st.name_tasks)
        groups.append(calls.group_id)
        for i, ref in enumerate(calls):
            self._pending[ref] = ("apply", seq, i)
        self._groups[seq] = groups
        self.window.opened(seq)
        self.last_submitted = seq
        if (seq + 1) % st.checkpoint_every == 0:
            for i, h in enumerate(self.handles):
                self._pending[h.checkpoint.remote()] = ("ckpt", seq, i)

    def _reducer_name(self) -> str:
        return self.reducer_cls.__ray_metadata__.class_name

    def _poll(self, timeout: float) -> None:
        """Takes in finished calls; recovers reducers whose calls failed or were refused."""
        if not self._pending:
            if self.window.full:
                raise RecoveryError("window full with nothing pending (driver bug)")
            return
        refs = list(self._pending)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if not ready:
            if timeout > 0:  # a stall: a node may have died unseen (Ray's GCS is slow)
                self._probe_nodes()
            return
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        broken: dict[int, Any] = {}
        for r in ready:
            kind, seq, i = self._pending.pop(r)
            if i in broken:
                continue
            try:
                val = ray.get(r)
            except _FAILURES as e:
                broken[i] = e
                continue
            if kind == "apply":
                status, last = val
                if status in ("ok", "dup"):
                    self.confirmed[i] = max(self.confirmed[i], last)
                else:
                    broken[i] = status
            elif val is not None and val[0] > self.ckpt[i][0]:
                self.ckpt[i] = val
                self.report.checkpoints += 1
        for i, cause in broken.items():
            self._recover(i, cause)
        self._prune()

    def _prune(self) -> None:
        """Closes confirmed batches, frees their groups, drops inputs no replay needs."""
        import ray_patch
        done = min(self.confirmed)
        for seq in [s for s in self.window.open_seqs if s <= done]:
            self.window.closed(seq)
        free = []
        for seq in [s for s in self._groups if s <= done]:
            free += self._groups.pop(seq)
        keep = []
        for i, seq, g in self._replay_groups:
            (free.append(g) if self.confirmed[i] >= seq else keep.append((i, seq, g)))
        self._replay_groups = keep
        if free:
            ray_patch.free_groups(free)
        oldest = min(min(c[0] for c in self.ckpt), done)
        for seq in [s for s in self.kept if s <= oldest]:
            del self.kept[seq]

    # ---- recovery -----------------------------------------------------------------------
    def _probe_nodes(self) -> None:
        """Marks dead (in ray_patch's scheduler) nodes whose raylet refuses connections,
        so the next batches are placed on live nodes only."""
        import ray_patch
        for hexid in ray_patch.node_failed(None, probe=True):
            if hexid not in self.report.node_failures:
                self.report.node_failures.append(hexid)

    def _recover(self, i: int, cause: Any) -> None:
        """Brings reducer i back: node table, restart, checkpoint, replay."""
        import ray_patch
        st = self.settings
        self._recoveries[i] += 1
        if self._recoveries[i] > st.max_recoveries:
            raise RecoveryError(f"reducer {i} failed {self._recoveries[i]} times (more than "
                                f"max_recoveries={st.max_recoveries}); last cause: {cause!r}")
        t0 = time.perf_counter()
        dead = _dead_node_in(cause) if isinstance(cause, BaseException) else None
        for hexid in ray_patch.node_failed(dead):
            if hexid not in self.report.node_failures:
                self.report.node_failures.append(hexid)
        for r, (_, _, j) in list(self._pending.items()):
            if j == i:  # superseded by the replay below
                del self._pending[r]
        h = self.handles[i]
        deadline = time.monotonic() + st.restart_timeout_s
        while True:
            try:
                node, _ = ray.get(h.ping.remote(), timeout=max(0.1, deadline - time.monotonic()))
                ck_seq, ck_state = self.ckpt[i]
                ray.get(h.restore.remote(ck_seq, ck_state),
                        timeout=max(0.1, deadline - time.monotonic()))
                break
            except ray.exceptions.GetTimeoutError:
                raise RecoveryError(f"reducer {i} did not come back within "
                                    f"{st.restart_timeout_s} s (cause: {cause!r})") from None
            except ray.exceptions.ActorDiedError as e:
                if "restart" not in str(e).lower() and time.monotonic() > deadline:
                    raise RecoveryError(f"reducer {i} is dead for good: {e}") from e
                time.sleep(0.2)
            except ray.exceptions.RayActorError:  # restarting (unavailable): try again
                if time.monotonic() > deadline:
                    raise RecoveryError(f"reducer {i} did not come back within "
                                        f"{st.restart_timeout_s} s") from None
                time.sleep(0.2)
        ray_patch.update_actor_node(h, node)
        self.confirmed[i] = ck_seq
        seqs = sorted(s for s in self.kept if ck_seq < s <= self.last_submitted)
        name = f"{self._reducer_name()}.replay"
        for s in seqs:
            out = ray_patch.call_actors([h], "apply", [(s, *self.kept[s][i])], name=name,
                                        name_tasks=st.name_tasks)
            self._pending[out[0]] = ("apply", s, i)
            self._replay_groups.append((i, s, out.group_id))
        self.report.replayed += len(seqs)
        # A checkpoint right after the replay: the inputs kept for this reducer can go
        # without waiting for the next K boundary.
        self._pending[h.checkpoint.remote()] = ("ckpt", self.last_submitted, i)
        self.report.recoveries.append({
            "reducer": i, "cause": cause if isinstance(cause, str) else type(cause).__name__,
            "checkpoint_seq": ck_seq, "replayed": len(seqs), "node": node,
            "dead_nodes": list(self.report.node_failures), "seconds": time.perf_counter() - t0})
