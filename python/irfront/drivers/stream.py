"""The micro-batch driver: one batch every ``interval_s``, at most ``max_in_flight``
unfinished, and exactly-once reducers that survive failures.

    stream = MicroBatchStream(interval_s=0.1, max_in_flight=4, checkpoint_every=10)
    records = stream.run(Batch(submit=build, label=k) for k in range(100))
    stream.report()           # backpressure, checkpoints, recoveries, replays

A ``Batch`` is ``submit(start)`` returning an IR node (the driver evaluates it) or the
Ray futures whose completion marks the batch done; ``start`` is the batch's start time:

- ``ahead=False``: the batch is submitted at its start; ``start`` is a float.
- ``ahead=True`` (pre-scheduling): submitted up to ``lead_s`` before its start ``T``;
  ``start`` is then an ObjectRef from a gate actor on the driver's node that returns
  ``T`` at time ``T``, so tasks taking it as an argument cannot run before ``T``. What
  moves off the critical path is the driver's work (building the IR, placing, submitting).

Each ``BatchRecord`` has ``scheduled`` (the batch's slot on the fixed schedule: latency
counted from it includes any wait for the in-flight window), ``start`` (what the tasks
got), ``held_back_s`` (time waiting for room) and ``submit_cpu_s`` (driver CPU spent
submitting it).

Exactly-once: reducers whose class derives from ``CheckpointedReducer`` (irfront.ir) get
numbered calls, which the evaluator logs while a batch is submitted. The driver keeps
each call (and so its inputs) until a checkpoint of that reducer covers it, asks every
reducer for a checkpoint every ``checkpoint_every`` batches, and when a reducer's call
fails (its actor or node died, or a restarted reducer refuses calls) it re-reads the node
table, waits for Ray to restart the actor, restores the last checkpoint and replays the
kept calls after it, in order. Reducers skip calls they already applied, so nothing is
counted twice. Tasks before the reducers are retried by Ray (``max_retries``) and rebuilt
from lineage when their outputs are lost with a node. Under the ``resident`` switch the
executors feed the reducers (irfront/lowering/resident.py): the log then holds one
``ResidentCall`` per batch, each reducer is confirmed from the executors' answers, and a
replay sends every node's pieces again from plain tasks.

Durable mode (opt-in: ``checkpoint_dir=`` or ``store=``, with a stream ``name``): each
checkpoint is also written to a ``CheckpointStore`` with the source position it covers,
and the reducers are named detached actors, so a driver that dies loses nothing: a new
driver with the same location and name finds (or recreates) the reducers, restores their
newest stored checkpoints and asks a replayable source ``run(source)``,
``source(start)``, for the batches from the stored position on, numbered as before
(irfront/drivers/durable.py). ``close(finished=True)`` ends the stream for good.

A driver that runs for days should call ``ray_patch.configure(name_tasks=False)``: Ray
keeps state for every distinct task name (groups name their tasks ``fn[g7]`` by default;
docs/RELIABILITY.md).
"""
from __future__ import annotations

import logging
import random
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait as futures_wait
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import ray

import ray_patch
from ray_patch.channel import ChannelError
from ray_patch.resident import forget_route
from ray_patch.resident_worker import StageFailed
from irfront.drivers.backpressure import InFlightWindow
from irfront.drivers.checkpoints import CheckpointStore, DirectoryStore
from irfront.drivers.delivery import Paths
from irfront.drivers.durable import DurableStreamState
from irfront.drivers.ledger import Ledger, Pending, ReducerGroup, Wait
from irfront.drivers.metrics import StreamMetrics
from irfront.ir.nodes import Node
from irfront.ir.reducers import NeedsRestore
from irfront.lowering.context import ReducerCall
from irfront.lowering.evaluation import EVALUATOR
from irfront.lowering.ops import flat_objects
from irfront.lowering.resident import ResidentCall

__all__ = ["Batch", "BatchRecord", "MicroBatchStream", "RecoveryError", "StreamReport"]

log = logging.getLogger("irfront.stream")

# ChannelError: a resident channel or feed broke (ray_patch/channel.py)
_FAILURES = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError,
             ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
             ray.exceptions.OwnerDiedError, ChannelError)


class RecoveryError(RuntimeError):
    """A fault the stream could not recover from (the message says which and why)."""


@dataclass
class Batch:
    """One micro-batch: ``submit(start)`` builds it and returns an IR node or futures."""

    submit: Callable[[Any], Any]
    ahead: bool = False
    label: Any = None


@dataclass
class BatchRecord:
    """What the driver saw of one batch (times are ``time.time()`` seconds)."""

    label: Any
    start: float  # the batch's start (what its tasks get as ``start``)
    submitted: float  # when ``submit`` was called
    submit_s: float  # wall time of ``submit`` on the driver
    ahead: bool
    done: Optional[float] = None  # when the driver saw it finish (coarse)
    held_back_s: float = 0.0  # how long it waited for room in the in-flight window
    scheduled: float = 0.0  # its slot on the fixed grid (first start + k * interval)
    submit_cpu_s: float = 0.0  # driver CPU time of ``submit`` (and evaluation)


@dataclass
class StreamReport:
    """What happened during the last ``run``."""

    batches: int = 0
    elapsed_s: float = 0.0
    lost_calls: int = 0  # reducer calls not applied at the end (must be 0)
    recoveries: list[dict] = field(default_factory=list)
    replayed: int = 0
    checkpoints: int = 0
    kept_peak: int = 0  # most reducer calls kept for replay at once, per reducer
    durable_saves: int = 0  # checkpoints written to the store (durable mode)
    durable_save_s: float = 0.0  # driver time spent writing them
    node_failures: list[str] = field(default_factory=list)
    backpressure: dict = field(default_factory=dict)
    stage_retries: int = 0  # a batch's stage failed with a Ray failure and ran again
    # calls sent again to a reducer that was briefly unavailable but kept its state
    resent_unavailable: int = 0
    # resident executor calls whose pieces the driver sent again (failed or silent)
    resident_fallbacks: int = 0
    failed_batch: Optional[dict] = None  # the batch whose stage stopped the stream

    def summary(self) -> str:
        bp = self.backpressure
        return (f"{self.batches} batches in {self.elapsed_s:.1f} s, lost {self.lost_calls}, "
                f"{len(self.recoveries)} recoveries ({self.replayed} calls replayed), "
                f"{self.checkpoints} checkpoints, kept <= {self.kept_peak} calls, "
                f"in flight <= {bp.get('peak_in_flight')} (max {bp.get('max_in_flight')}), "
                f"held back {bp.get('held_back_s', 0.0):.2f} s")


@dataclass
class _InFlight:
    record: BatchRecord
    refs: list  # futures to wait for (reducer calls are tracked by confirmation instead)
    calls: list[tuple[int, int, int]]  # (group key, actor, seq)


def _gate_class():
    # Built in a function so that cloudpickle ships it by value.
    class Gate:
        def wait_until(self, t):
            delay = t - time.time()
            if delay > 0:
                time.sleep(delay)
            return t

        def ping(self):
            return True

    return ray.remote(num_cpus=0, max_concurrency=64)(Gate)


def _sleep_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)


def _wait(items: list, num_returns: int, timeout: float) -> list:
    """``ray.wait`` over refs and the futures of fed resident batches (``Future``,
    ray_patch/channel.py) together: the ready ones, at least ``num_returns`` of them
    unless ``timeout`` passed first. With both kinds, it looks at the refs every 2 ms."""
    futs = [x for x in items if isinstance(x, Future)]
    if not futs:
        return ray.wait(items, num_returns=num_returns, timeout=timeout)[0] if items \
            else []
    refs = [x for x in items if not isinstance(x, Future)]
    deadline = time.monotonic() + timeout
    while True:
        ready = [f for f in futs if f.done()]
        if refs:
            ready += ray.wait(refs, num_returns=len(refs), timeout=0)[0]
        left = deadline - time.monotonic()
        if len(ready) >= num_returns or left <= 0:
            return ready
        futures_wait([f for f in futs if not f.done()],
                     timeout=min(left, 0.002) if refs else left,
                     return_when=FIRST_COMPLETED)


def _waitables(out: Iterable[Any]) -> Iterable[Any]:
    """What to wait on for a batch's results: each one, or where it says what answers
    it (``_waitables()``: a reducer call of plain Ray code under ``irfront.infer`` on
    the resident path, answered by its batch's executors) those, each once."""
    seen: set[int] = set()
    for r in out:
        w = getattr(type(r), "_waitables", None)
        for x in (w(r) if w is not None else (r,)):
            if id(x) not in seen:
                seen.add(id(x))
                yield x


def _value(x: Any) -> Any:
    """``ray.get`` of a ref, or a fed batch's answer (raising its error)."""
    return x.result() if isinstance(x, Future) else ray.get(x)


def _is_failure(e: BaseException) -> bool:
    """Whether a reducer (or the path to it) failed and must be recovered: it died, its
    node or an object went away, a channel broke, or it refused a call after a restart.
    An error a task raised (``RayTaskError``) is the reducer's only when it is that
    refusal: anything else came from the batch's stage (``_stage_error``)."""
    if isinstance(e, (NeedsRestore, *_FAILURES)) and not isinstance(
            e, ray.exceptions.RayTaskError):  # bare: a resident reducer's answer
        return True
    return isinstance(e, ray.exceptions.RayTaskError) and isinstance(
        getattr(e, "cause", None), NeedsRestore)


def _stage_error(e: BaseException) -> BaseException | None:
    """The error the batch's own stage raised, if ``e`` is one (else None): a node task
    on the resident path that raised (``StageFailed``, possibly inside Ray's
    ``RayTaskError``), or a task error a reducer call got as its argument (Ray's
    ``RayTaskError``, which is also an instance of the error's own class). Not the
    reducer's fault: recovering the reducer would re-read the same failed object."""
    cause = e.cause if isinstance(e, ray.exceptions.RayTaskError) else e
    if isinstance(cause, StageFailed):
        return cause.error
    if isinstance(e, ray.exceptions.RayTaskError) and not isinstance(cause, NeedsRestore):
        return e
    return None


class _StageStop(Exception):
    """A batch's stage raised ``error``: ``run`` lets the reducers finish the batches
    before it, then raises ``error``."""

    def __init__(self, error: BaseException, batch: int | None):
        super().__init__(error)
        self.error, self.batch = error, batch


def _first_checkpoints(handles: list) -> list[tuple[int, Any]]:
    """Each reducer's checkpoint when the stream first logs a call to it, even before
    any call: a restore must bring back a state, never keep the live one (a reducer
    recovered while alive before its first periodic checkpoint would otherwise apply
    its calls twice). A reducer that is restarting (its checkpoint fails, or it waits
    for a restore) has its initial state, which ``(-1, None)`` keeps."""
    out = []
    for ref in [h.checkpoint.remote() for h in handles]:
        try:
            got = ray.get(ref)
        except ray.exceptions.RayError:
            got = None
        out.append((-1, None) if got is None else got)
    return out


class MicroBatchStream:
    """Submits batches on a fixed schedule with a bound on unfinished batches, and keeps
    exactly-once reducers exact through failures."""

    def __init__(self, interval_s: float = 0.1, max_in_flight: int = 4,
                 lead_s: Optional[float] = None, *, checkpoint_every: int = 10,
                 restart_timeout_s: float = 120.0, max_recoveries: int = 20,
                 checkpoint_dir: Optional[str] = None,
                 store: Optional[CheckpointStore] = None, name: str = "stream",
                 namespace: Optional[str] = None, max_stage_retries: int = 3):
        if not interval_s >= 0:
            raise ValueError(f"interval_s must be >= 0 (0: as fast as the window allows); "
                             f"got {interval_s}")
        for what, v in (("max_in_flight", max_in_flight), ("checkpoint_every",
                        checkpoint_every), ("max_recoveries", max_recoveries)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{what} must be an int >= 1; got {v!r}")
        if not restart_timeout_s > 0:
            raise ValueError(f"restart_timeout_s must be > 0; got {restart_timeout_s!r}")
        self.interval_s = interval_s
        self.max_in_flight = max_in_flight
        self.lead_s = interval_s / 4 if lead_s is None else lead_s
        self.checkpoint_every = checkpoint_every
        self.restart_timeout_s = restart_timeout_s
        self.max_recoveries = max_recoveries
        self._gate = None
        self.window = InFlightWindow(max_in_flight)
        # the reducers: what was sent, confirmed, checkpointed and kept; what each
        # pending ref is (drivers/ledger.py)
        self.ledger = Ledger()
        # how calls reach the reducers: Ray actor calls, the resident path
        self.paths = Paths()
        self._stage_retries: dict[tuple[int, int, int], int] = {}  # (key, seq, source)
        self._stop_batch = -1  # a stage stopped the stream at this batch (draining)
        # dead nodes whose reducers were recovered (None: not read yet)
        self._seen_dead: set[str] | None = None
        self.max_stage_retries = max_stage_retries
        self.stats = StreamReport()
        self._batches = 0
        self._abs_batch = 0  # the source's number of the batch being submitted
        if checkpoint_dir is not None and store is not None:
            raise ValueError("give checkpoint_dir or store, not both")
        if checkpoint_dir is not None:
            store = DirectoryStore(checkpoint_dir)
        if store is not None and not isinstance(store, CheckpointStore):
            raise ValueError(f"store must be a CheckpointStore (e.g. DirectoryStore(path));"
                             f" got {type(store).__name__}")
        # Durable mode (opt-in): checkpoints in the store, detached named reducers.
        self.durable: Optional[DurableStreamState] = None if store is None else \
            DurableStreamState(store, name, namespace, restart_timeout_s)
        # Ray metrics (irfront_batch_latency_seconds, ...; drivers/metrics.py), tagged
        # with the stream's name; a few records per batch.
        self.metrics = StreamMetrics(name)

    @property
    def reducers(self) -> dict[int, ReducerGroup]:
        """The stream's reducer groups, by id of their InitActors (the ledger's)."""
        return self.ledger.groups

    # ---- the gate for ahead-of-time batches ---------------------------------------------
    def _get_gate(self):
        if self._gate is None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
            here = ray.get_runtime_context().get_node_id()
            self._gate = _gate_class().options(scheduling_strategy=(
                NodeAffinitySchedulingStrategy(here, soft=True))).remote()
            ray.get(self._gate.ping.remote())
        return self._gate

    @property
    def position(self) -> int:
        """The number of the next batch the source must give: 0 for a new stream; in
        durable mode, where a resumed stream carries on (read from the store)."""
        if self.durable is None:
            return 0
        return self.durable.open()["position"] if not self.durable.opened \
            else self.durable.position

    def resume(self) -> dict:
        """Durable mode: reads the checkpoint location, removes what a dead driver left
        there (older checkpoints, cut-short writes, orphan detached actors of this
        stream) and returns what it found (``position``, ``next_seq``, ...). ``run``
        calls it itself; the reducers are found (or created again) and restored when the
        first batch uses them (``report()["durable"]`` says which)."""
        if self.durable is None:
            raise ValueError("resume() needs a checkpoint location: "
                             "MicroBatchStream(checkpoint_dir=...) or store=...")
        return self.durable.open()

    def close(self, finished: bool = False) -> None:
        """Drops the gate actor and what is kept for replay. Durable mode: the detached
        reducers and the checkpoints stay for a later driver, unless ``finished``: then
        the reducers are killed, the checkpoints deleted and the stream marked finished
        (read the results before)."""
        if finished and self.durable is not None:
            self.durable.open()
            out = self.durable.finish(self.durable.position)
            log.info("stream %r finished: killed %d reducers, removed %d checkpoints",
                     self.durable.stream, len(out["killed"]), out["removed_checkpoints"])
            self.durable.info["finished"] = out
        self._gate = None
        for g in self.reducers.values():  # the routes the resident path made for them
            forget_route(g.handles)
        self.ledger.clear()
        self.paths.clear()

    def __enter__(self) -> "MicroBatchStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- reporting ----------------------------------------------------------------------
    def report(self) -> dict:
        """Backpressure of the last run, the batch count, and what recovery did."""
        s = self.stats
        out = {**self.window.report(), "batches": self._batches,
               "checkpoints": s.checkpoints, "recoveries": len(s.recoveries),
               "replayed": s.replayed, "lost_calls": s.lost_calls,
               "kept_peak": s.kept_peak, "node_failures": list(s.node_failures)}
        if self.durable is not None:
            out["durable"] = {**self.durable.info, "saved": s.durable_saves,
                              "save_s": s.durable_save_s,
                              "stream": self.durable.stream,
                              "namespace": self.durable.namespace}
        return out

    # ---- submitting ---------------------------------------------------------------------
    def _submit(self, b: Batch, arg: Any) -> tuple[list, list[tuple[int, int, int]]]:
        log: list[ReducerCall] = []
        with EVALUATOR.results.batch_scope(log, self.durable):
            out = b.submit(arg)
            if isinstance(out, Node):
                refs = [r for r in flat_objects(out, out.eval())
                        if isinstance(r, (ray.ObjectRef, Future))]
            else:  # a deferred reducer call (irfront.infer) waits on its batch
                refs = list(_waitables(out or ()))
        logged = {r for c in log for r in (c.refs if isinstance(c, ResidentCall)
                                           else (c.ref,))}
        calls = []
        for c in log:
            key = self._track(c)
            if isinstance(c, ResidentCall):  # call seq of every reducer of the group
                calls.extend((key, i, c.seq) for i in range(c.actors.n))
            else:
                calls.append((key, c.index, c.seq))
        return [r for r in refs if r not in logged], calls

    def _track(self, c: ReducerCall | ResidentCall) -> int:
        """A call the batch logged: its group (made on first use), kept and waited for
        along the path it took."""
        def make() -> ReducerGroup:
            handles = EVALUATOR.eval(c.actors)
            seeded = None
            if self.durable is not None:
                self.durable.group_of(c.actors)  # raises if not created by the stream
                seeded = self.durable.seeded.get(id(c.actors))
            ckpt = list(seeded) if seeded is not None else _first_checkpoints(handles)
            return ReducerGroup.new(handles, ckpt, c.actors.name,
                                    EVALUATOR.results.epochs(c.actors))

        key, _ = self.ledger.group(c.actors, make)
        if self.durable is not None:
            self.durable.track(self.durable.group_of(c.actors), c.seq, self._abs_batch)
        self.paths.of(c).sent(self.ledger, key, c, self._abs_batch)
        return key

    def _checkpoint_all(self) -> None:
        for key, g in self.reducers.items():
            for i, h in enumerate(g.handles):
                self.ledger.expect(h.checkpoint.remote(),
                                   Pending(Wait.CHECKPOINT, key, i, g.last))

    # ---- completion and recovery --------------------------------------------------------
    def _poll(self, timeout: float) -> None:
        """Takes in finished reducer calls and checkpoints; recovers failed reducers."""
        pending = self.ledger.pending
        if not pending:
            return
        refs = list(pending)
        ready = _wait(refs, 1, timeout)
        if not ready:
            if timeout > 0:  # a stall: a node may have died unseen
                self._note_failures(ray_patch.node_failed())
                self._resident_stalls()
            return
        broken: dict[tuple[int, int], Any] = {}
        for r in _wait(refs, len(refs), 0):
            self._answer(r, pending.pop(r), broken)
        for key, i in self._on_dead_nodes():
            broken.setdefault((key, i), ray.exceptions.NodeDiedError(
                f"the node of reducer {self.reducers[key].name}[{i}] died"))
        self._mend(broken)

    def _answer(self, r: Any, w: Pending, broken: dict) -> None:
        """What ref ``r`` (pending as ``w``) answered, told to the ledger; a reducer that
        failed goes into ``broken``."""
        key, i, seq = w.key, w.reducer, w.seq
        if w.kind is not Wait.CHECKPOINT and self.ledger.batch_of.get(
                (key, seq), -1) >= self._stop_batch >= 0:
            return  # the stream stopped at an earlier batch
        if w.kind is Wait.RESIDENT:
            self._resident_answer(r, w, broken)
            return
        if (key, i) in broken:
            return
        try:
            val = ray.get(r)
        except ray.exceptions.RayError as e:
            stage = _stage_error(e)
            if stage is not None:  # the batch's stage failed, not the reducer
                self._stage_failed(w, stage, broken)
                return
            if not _is_failure(e):
                raise
            broken[(key, i)] = e
            return
        g = self.reducers[key]
        if w.kind is Wait.APPLY:
            g.confirmed_up_to(i, seq)
        elif w.kind is Wait.REPLAY:  # a resident piece sent again: the last applied
            g.confirmed_resident(i, val)
        elif val is None:  # restarted by Ray since its last restore: recover it
            broken[(key, i)] = NeedsRestore(f"reducer {g.name}[{i}] answered a "
                                            "checkpoint as restarted")
        elif g.checkpointed(i, val):
            self.stats.checkpoints += 1
            if self.durable is not None:
                self._save_durable(key, i, val)

    def _mend(self, broken: dict[tuple[int, int], Any]) -> None:
        """Brings back each reducer in ``broken``: recovered from its checkpoint, or,
        briefly unavailable but still holding its restored state, sent its unconfirmed
        calls again."""
        for (key, i), cause in broken.items():
            if isinstance(cause, ray.exceptions.ActorUnavailableError) and \
                    self._still_restored(key, i):
                # "temporarily unavailable, may or may not have run" (e.g. a caller whose
                # view of a restarted reducer lagged): the reducer kept its restored
                # state, so its unconfirmed calls are sent again (it takes each once)
                g = self.reducers[key]
                log.warning("reducer %s[%d] was unavailable to a call (%s) but kept its "
                            "state: its unconfirmed calls are sent again", g.name, i,
                            str(cause))
                self.stats.resent_unavailable += self._replay(key, i, g.confirmed[i])
                continue
            self._recover(key, i, cause)

    def _still_restored(self, key: int, i: int) -> bool:
        """Whether reducer i answers and still holds the state of its last restore (not
        restarted by Ray since), asked with a bounded wait."""
        h = self.reducers[key].handles[i]
        try:
            _, ready = ray.get(h.applied_status.remote(),
                               timeout=min(10.0, self.restart_timeout_s))
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            return False
        return bool(ready)

    def _on_dead_nodes(self) -> list[tuple[int, int]]:
        """Reducers on nodes the node table newly says are dead (re-read at most every
        refresh interval). A process on a dead node can outlive its raylet for a while
        and still answer on its channels, so nothing else need fail: the driver
        recovers such a reducer (Ray restarts it elsewhere) instead of trusting it."""
        rt = ray_patch.current_runtime()
        if rt is None:
            return []
        rt.refresh_nodes()
        if self._seen_dead is None:  # nodes dead before the stream's first poll
            self._seen_dead = rt.dead_nodes()
            return []
        dead = rt.dead_nodes() - self._seen_dead
        if not dead:
            return []
        self._seen_dead |= dead
        self._note_failures(sorted(dead))
        out = []
        for key, g in self.reducers.items():
            for i, h in enumerate(g.handles):
                n = rt.actor_node.get(h._actor_id.binary())
                if n is not None and rt.hex_of[n] in dead:
                    out.append((key, i))
        return out

    def _resident_answer(self, r: Any, w: Pending, broken: dict) -> None:
        """One source node's executor call of resident batch ``seq``: per reducer, its
        last applied call (confirmed if about the state last restored) or the error of
        its call (recovered; an error about a call before the reducer's last recovery is
        superseded by its replay). An
        executor that failed has its node's pieces sent again by the driver (plain
        tasks; reducers take a piece once)."""
        key, source, seq = w.key, w.source, w.seq
        g = self.reducers[key]
        self.paths.resident.answered(r)
        try:
            val = _value(r)
        except (ray.exceptions.RayError, ChannelError, StageFailed) as e:
            stage = _stage_error(e)
            if stage is not None:  # the node's work raised: no reducer took a piece
                self._stage_failed(w, stage, broken)
                return
            if not _is_failure(e):  # a fed batch: its feed broke, or the executor no
                raise  # longer held what the batch named
            # strings, not the error: a kept log record must not keep its traceback's
            # frames (and the run's nodes and groups) alive
            log.warning("resident batch %d: the executor of source %d failed (%s: %s); "
                        "its pieces are sent again", seq, source, type(e).__name__, str(e))
            self.stats.resident_fallbacks += 1
            self._note_failures(ray_patch.node_failed())
            self.paths.resident.resend_source(self.ledger, key, source, seq)
            return
        for i, v in enumerate(val):
            if (key, i) in broken:
                continue
            if not isinstance(v, BaseException):
                g.confirmed_resident(i, v)
                continue
            if seq <= g.horizon[i]:  # superseded by the replay
                continue
            if not (_is_failure(v) or isinstance(v, TimeoutError)):
                raise v
            broken[(key, i)] = v

    def _stage_failed(self, w: Pending, err: BaseException, broken: dict) -> None:
        """Batch ``w.seq``'s stage raised ``err`` (no reducer applied anything of it: a
        reducer applies a call only once every source sent a good piece, and calls only
        in order). A Ray failure type (a side actor, a worker, a node or an object went
        away) is retried, at most ``max_stage_retries`` times per batch and source: a
        resident source runs again as a plain task; a reducer call is sent again with a
        restore (its arguments read again: Ray rebuilds a lost object). Any other error,
        or one past the bound, stops the stream with the stage's own error, the batch
        named in it and in the report; the reducers then hold every batch before it."""
        k = (w.key, w.seq, w.source)
        n = self._stage_retries[k] = self._stage_retries.get(k, 0) + 1
        g = self.reducers[w.key]
        if isinstance(err, _FAILURES) and n <= self.max_stage_retries:
            log.warning("batch %s (call %d of %s): its stage failed (%s); try %d of %d",
                        self.ledger.batch_of.get((w.key, w.seq)), w.seq, g.name,
                        type(err).__name__, n, self.max_stage_retries)
            self.stats.stage_retries += 1
            if w.kind is Wait.APPLY:
                broken.setdefault((w.key, w.reducer), err)
            else:
                self.paths.resident.resend_source(
                    self.ledger, w.key, w.source, w.seq, rerun=True,
                    only=w.reducer if w.kind is Wait.REPLAY else None)
            return
        batch = self.ledger.batch_of.get((w.key, w.seq))
        if self.stats.failed_batch is None:
            self.stats.failed_batch = {"batch": batch, "group": g.name, "call": w.seq,
                                       "source": w.source, "error": repr(err)[:500]}
            err.add_note(f"irfront: batch {batch} (call {w.seq} of reducers {g.name}) "
                         "failed in its stage; every reducer holds the batches before it, "
                         "none after")
        raise _StageStop(err, batch)

    def _resident_stalls(self) -> None:
        """Executor calls unanswered for ``restart_timeout_s``: their pieces are sent
        again through the fallback (reducers take a piece once; a late answer is then
        ignored)."""
        for w in self.paths.resident.stalled(self.ledger, self.restart_timeout_s):
            log.warning("resident batch %d: the executor of source %d did not answer in "
                        "%.0f s; its pieces are sent again", w.seq, w.source,
                        self.restart_timeout_s)
            self.stats.resident_fallbacks += 1
            self.paths.resident.resend_source(self.ledger, w.key, w.source, w.seq)

    def _save_durable(self, key: int, i: int, val: tuple[int, Any]) -> None:
        g = self.reducers[key]
        group = self.durable.group_of(self.ledger.actors[key])
        oldest = {self.durable.group_of(self.ledger.actors[k]): min(s for s, _ in r.ckpt)
                  for k, r in self.reducers.items()}
        t0 = time.perf_counter()
        saved = self.durable.save(group, i, val[0], val[1], oldest)
        self.stats.durable_save_s += time.perf_counter() - t0
        if saved:
            self.stats.durable_saves += 1
        else:
            log.debug("checkpoint %s[%d] at call %d not written: its batch is not known "
                      "to this driver yet", g.name, i, val[0])

    def _note_failures(self, hexids: Sequence[str]) -> None:
        for h in hexids:
            if h not in self.stats.node_failures:
                self.stats.node_failures.append(h)
                log.warning("node %s marked dead: no later group is placed there", h[:12])

    def _recover(self, key: int, i: int, cause: BaseException) -> None:
        """Brings reducer i of a group back: node table, restart, checkpoint, replay."""
        g = self.reducers[key]
        g.recoveries[i] += 1
        if g.recoveries[i] > self.max_recoveries:
            raise RecoveryError(f"reducer {g.name}[{i}] failed {g.recoveries[i]} times "
                                f"(more than max_recoveries={self.max_recoveries}); last "
                                f"cause: {cause!r}")
        t0 = time.perf_counter()
        log.warning("reducer %s[%d] failed (%s): restoring checkpoint %d and replaying",
                    g.name, i, type(cause).__name__, g.ckpt[i][0])
        self.metrics.recovered(type(cause).__name__)
        self._note_failures(ray_patch.node_failed())
        self.ledger.drop_pending_of(key, i)  # superseded by the replay below
        h = g.handles[i]
        epoch = random.getrandbits(62)
        node = self._restore(h, g.ckpt[i], f"{g.name}[{i}]", cause, epoch)
        ray_patch.update_actor_node(h, node)
        ck_seq = g.restored(i, epoch)
        replayed = self._replay(key, i, ck_seq)
        self.stats.replayed += replayed
        # A checkpoint right after the replay: the kept calls can go without waiting for
        # the next checkpoint round.
        self.ledger.expect(h.checkpoint.remote(), Pending(Wait.CHECKPOINT, key, i, g.last))
        self.stats.recoveries.append({
            "reducer": i, "group": g.name, "cause": type(cause).__name__,
            "checkpoint_seq": ck_seq, "replayed": replayed, "node": node,
            "dead_nodes": list(self.stats.node_failures),
            "seconds": time.perf_counter() - t0, "at": time.time()})
        log.info("reducer %s[%d] back on node %s after %.2f s, %d calls replayed", g.name, i,
                 node[:12], time.perf_counter() - t0, replayed)

    def _replay(self, key: int, i: int, after: int) -> int:
        """Sends reducer i its kept calls after call ``after`` again, in order (a
        reducer applies each call once), each along its own path; returns how many."""
        calls = self.reducers[key].kept_after(i, after)
        for s, c in calls:
            self.paths.of(c).replay(self.ledger, key, i, s, c)
        return len(calls)

    def _restore(self, h: Any, ckpt: tuple[int, Any], name: str, cause: Any,
                 epoch: int) -> str:
        """Waits for Ray to restart the actor, restores ``ckpt`` as ``epoch``; returns its
        node."""
        deadline = time.monotonic() + self.restart_timeout_s
        while True:
            left = max(0.1, deadline - time.monotonic())
            try:
                node, _ = ray.get(h.where.remote(), timeout=left)
                ray.get(h.restore.remote(*ckpt, epoch), timeout=left)
                return node
            except ray.exceptions.GetTimeoutError:
                raise RecoveryError(f"reducer {name} did not come back within "
                                    f"{self.restart_timeout_s} s (cause: {cause!r})") from None
            except ray.exceptions.RayActorError as e:  # restarting: try again
                if time.monotonic() > deadline:
                    raise RecoveryError(f"reducer {name} did not come back within "
                                        f"{self.restart_timeout_s} s: {e}") from e
                time.sleep(0.2)

    def _verify_applied(self, deadline: float) -> None:
        """The end of a run: every reducer says which call it applied last, and that must
        be the last call the driver sent it. A reducer found restarted (or dead) is
        recovered and asked again; a reducer that is up but missing calls raises: a run
        never reports ``lost 0`` beside a wrong state."""
        while True:
            asks = {(key, i): h.applied_status.remote()
                    for key, g in self.reducers.items() for i, h in enumerate(g.handles)}
            broken: dict[tuple[int, int], BaseException] = {}
            for (key, i), ref in asks.items():
                g = self.reducers[key]
                left = max(1.0, deadline - time.monotonic())
                try:
                    last, ready = ray.get(ref, timeout=left)
                except ray.exceptions.GetTimeoutError:
                    raise RecoveryError(f"reducer {g.name}[{i}] did not answer the final "
                                        f"check within {left:.0f} s") from None
                except ray.exceptions.RayError as e:
                    if not _is_failure(e):
                        raise
                    broken[(key, i)] = e
                    continue
                if not ready:
                    broken[(key, i)] = NeedsRestore("restarted by Ray after its last call")
                elif last != g.last:
                    raise RecoveryError(
                        f"reducer {g.name}[{i}] applied calls up to {last}, but the driver "
                        f"sent it calls up to {g.last} and saw them confirmed: its state "
                        "is not the stream's (was it restored or called outside the "
                        "stream?)")
            if not broken:
                return
            for (key, i), cause in broken.items():
                self._recover(key, i, cause)
            while self.ledger.pending:
                if time.monotonic() > deadline:
                    raise RecoveryError("reducers did not come back for the final check "
                                        f"within {self.restart_timeout_s * 4} s")
                self._poll(timeout=1.0)

    def _finished(self, f: _InFlight) -> bool:
        if self.ledger.unconfirmed(f.calls):
            return False
        if f.refs:
            ready = _wait(f.refs, len(f.refs), 0)
            if len(ready) < len(f.refs):
                return False
            for r in f.refs:  # raises if the batch failed: the stage's own error
                try:
                    _value(r)
                except StageFailed as e:
                    raise e.error from None
                except ray.exceptions.RayTaskError as e:
                    if isinstance(e.cause, StageFailed):
                        raise e.cause.error from e
                    raise
        return True

    def _retire(self, in_flight: dict[int, _InFlight], block: bool) -> None:
        """Closes finished batches, oldest first; with ``block`` waits for progress."""
        self._poll(timeout=0)
        while in_flight:
            seq = next(iter(in_flight))
            f = in_flight[seq]
            if not self._finished(f):
                if not block:
                    return
                waiting = list(self.ledger.pending) + list(f.refs)
                ready = _wait(waiting, 1, 1.0)
                if not ready:  # a stall: a node may have died unseen
                    self._note_failures(ray_patch.node_failed())
                    self._resident_stalls()
                self._poll(timeout=0)
                continue
            rec = f.record
            rec.done = time.time()
            del in_flight[seq]
            self.ledger.closed(f.calls)
            self.window.closed(seq)
            # From the batch's slot; with interval_s=0 (no grid) from when it was ready
            # to go, i.e. when it began waiting for room in the window.
            begin = rec.scheduled if self.interval_s > 0 else rec.submitted - rec.held_back_s
            self.metrics.batch_done(rec.done - begin, self.window.in_flight)
            block = False

    # ---- running ------------------------------------------------------------------------
    def run(self, batches: Iterable[Batch] | Callable[[int], Iterable[Batch]],
            on_submit: Optional[Callable[[BatchRecord], None]] = None) -> list[BatchRecord]:
        """Runs every batch on the schedule; returns once all have finished (and every
        reducer call is applied). ``batches`` is pulled only when the window has room.

        ``batches`` is an iterable of ``Batch``, or a replayable source: a function
        ``batches(start)`` giving the batches from number ``start`` on (``start`` is
        ``self.position``: 0 for a new stream; in durable mode, where a resumed stream
        carries on). A durable stream that resumes past batch 0 needs the function form.
        In durable mode the reducers are checkpointed once more at the end, so a later
        driver resumes after the last batch."""
        try:
            return self._run(batches, on_submit)
        except _StageStop as stop:  # the reducers finish the batches before it first
            self._drain_before(stop.batch)
            stop.error.__suppress_context__ = True
            raise stop.error

    def _drain_before(self, batch: int | None) -> None:
        """After a stage stopped the stream at ``batch``: waits (``restart_timeout_s``
        at most) until every reducer applied its calls of the batches before it, so
        that it holds exactly those when ``run`` raises. Calls of that batch and later
        ones are dropped (none can apply: a reducer applies calls in order)."""
        self._stop_batch = batch if batch is not None else -1
        need = {}
        for (key, call), b in self.ledger.batch_of.items():
            if b < self._stop_batch:
                need[key] = max(need.get(key, -1), call)
        deadline = time.monotonic() + self.restart_timeout_s
        while self.ledger.pending and time.monotonic() < deadline and any(
                c < need.get(key, -1) for key, g in self.reducers.items()
                for c in g.confirmed):
            try:
                self._poll(timeout=0.5)
            except _StageStop:  # a later batch's stage: dropped as well
                pass

    def _run(self, batches: Any, on_submit: Any) -> list[BatchRecord]:
        self._stop_batch, self.stats.failed_batch = -1, None
        start_at = self.position
        if callable(batches):
            batches = batches(start_at)
        elif start_at > 0:
            raise ValueError(
                f"stream {self.durable.stream!r} resumes at batch {start_at} (from "
                f"{self.durable.store!r}): pass a replayable source, run(source) with "
                "source(start) yielding the batches from number start on")
        in_flight: dict[int, _InFlight] = {}
        self.window = InFlightWindow(self.max_in_flight)
        self._batches = 0
        t0 = time.perf_counter()
        records = self._pace(iter(batches), start_at, in_flight, on_submit)
        self._drain(in_flight)
        if self.durable is not None:
            self.durable.position = start_at + len(records)
        s = self.stats
        s.batches += len(records)
        s.elapsed_s += time.perf_counter() - t0
        s.lost_calls = self.ledger.lost_calls()
        s.kept_peak = self.ledger.kept_peak
        s.backpressure = self.window.report()
        return records

    def _pace(self, it: Any, start_at: int, in_flight: dict[int, _InFlight],
              on_submit: Any) -> list[BatchRecord]:
        """The pacing loop: each batch at its slot on the fixed grid (or ``lead_s``
        before it, ahead), once the in-flight window has room; returns the records."""
        records: list[BatchRecord] = []
        t_next = grid = time.time() + self.interval_s
        seq = 0
        while True:
            self._retire(in_flight, block=False)
            held = self.window.admit(lambda: self._retire(in_flight, block=True))
            if held > self.interval_s:
                log.info("batch %d held back %.3f s: %d batches in flight (max %d)", seq,
                         held, self.window.in_flight, self.max_in_flight)
            b = next(it, None)
            if b is None:
                self.window.cancel_hold(held)
                return records
            scheduled = grid + seq * self.interval_s  # the fixed grid, never reset
            if b.ahead:
                gate = self._get_gate()
                _sleep_until(t_next - self.lead_s)
                now = time.time()
                start = max(t_next, now)
                submitted = now
                arg = gate.wait_until.remote(start)
            else:
                _sleep_until(t_next)
                start = submitted = time.time()
                arg = start
            cpu0 = time.process_time()
            self._abs_batch = start_at + seq
            refs, calls = self._submit(b, arg)
            if self.durable is not None:
                self.durable.batch_submitted(start_at + seq)
            rec = BatchRecord(b.label, start, submitted, time.time() - submitted, b.ahead,
                              held_back_s=held, scheduled=scheduled,
                              submit_cpu_s=time.process_time() - cpu0)
            records.append(rec)
            self.window.opened(seq)
            self.metrics.batch_opened(held, self.window.in_flight)
            in_flight[seq] = _InFlight(rec, refs, calls)
            seq += 1
            self._batches = seq
            if seq % self.checkpoint_every == 0 and self.reducers:
                self._checkpoint_all()
            if on_submit is not None:
                on_submit(rec)
            # The next slot: one interval later; a driver running late does not build up
            # a debt of more than one interval (no burst of catch-up batches).
            t_next = max(t_next + self.interval_s, time.time() - self.interval_s)

    def _drain(self, in_flight: dict[int, _InFlight]) -> None:
        """After the last batch: every batch closes, every reducer call is confirmed
        (durable: and checkpointed once more, so a later driver resumes after it), and
        every reducer says it applied the last call it was sent."""
        deadline = time.monotonic() + self.restart_timeout_s * 4
        final = self.durable is None or not self.reducers  # the last checkpoint taken
        while in_flight or self.ledger.pending or not final:
            if time.monotonic() > deadline:
                raise RecoveryError(f"stream did not drain within {self.restart_timeout_s * 4}"
                                    f" s: {len(in_flight)} batches unfinished")
            if in_flight:
                self._retire(in_flight, block=True)
            elif self.ledger.pending:
                self._poll(timeout=1.0)
            else:  # durable: checkpoint the end, so a later driver resumes after it
                self._checkpoint_all()
                final = True
        self._verify_applied(deadline)
