"""What lowering reads and writes: the results of evaluated nodes, the lowering context of
one evaluation, and the log of exactly-once reducer calls that the stream driver replays.

Results live here, keyed weakly by the user's node (nodes hold no evaluation state): a
node dropped by the program frees its group (a finalizer queues the free).
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Protocol

from irfront.errors import IRError
from irfront.ir.nodes import InitActors, Node
from irfront.lowering.options import LoweringOptions
from irfront.lowering.submitter import Submitter


@dataclass
class Lowered:
    """What lowering one node gave."""

    value: list | None  # futures (a list per task for num_returns > 1) or actor handles
    group_id: int
    depends_on: int | None = None
    # a ReduceActors on the resident path with per-call answers (``Results.answering``):
    # one ``ray_patch.resident.ReducerAnswer`` per actor call
    calls: list | None = None


@dataclass
class Result:
    """An evaluated (or freed) node."""

    value: list | None  # None: freed, or only its group is known (e.g. a grouped shuffle)
    group_id: int
    depends_on: int | None
    submitter: Submitter
    freed: bool = False
    finalizer: Any = None
    calls: list | None = None  # as ``Lowered.calls``


@dataclass
class ReducerCall:
    """One call of an exactly-once reducer, as submitted: enough to send it again."""

    actors: InitActors
    index: int  # which actor
    seq: int  # the actor group's call number
    method: str  # "apply_batch", or "__ray_call__" with ``invoke``
    args: tuple
    invoke: Any
    ref: Any  # the call's ObjectRef


@dataclass
class DurableActors:
    """How a durable stream wants an InitActors group of exactly-once reducers: named,
    detached actors that outlive the driver."""

    names: list[str]  # one per actor
    namespace: str
    handles: Optional[list] = None  # found alive: used as they are (not created again)
    next_seq: int = 0  # the group's next call number (calls continue across drivers)


class ActorDirectory(Protocol):
    """Set by a durable driver (``Results.actor_directory``) while it submits batches:
    the lowering asks it before creating a checkpointed InitActors' actors."""

    def find(self, actors: InitActors) -> Optional[DurableActors]:
        """Where the group's actors are (or what to name them); None: driver-owned."""

    def started(self, actors: InitActors, handles: list) -> None:
        """Called once the group's handles exist (before any call is sent to them)."""


@dataclass
class ActorGroupState:
    """Driver-side bookkeeping of an evaluated InitActors of exactly-once reducers."""

    next_seq: int = 0
    # per actor, the token of its last restore (0: never restored); the stream driver
    # sets it, the resident lowering sends it with every piece (ray_patch/channel.py)
    epochs: list[int] = field(default_factory=list)


class _DriverScope(threading.local):
    """What a driver sets while it submits a batch, seen by its own thread only: another
    thread of the program evaluating nodes meanwhile neither logs into the batch nor
    finds the driver's durable actors."""

    call_log: list[ReducerCall] | None = None
    actor_directory: ActorDirectory | None = None
    answers: int = 0  # inside ``Results.answering``


class Results:
    """Results of evaluated nodes, and the call log of exactly-once reducers."""

    def __init__(self) -> None:
        self._results: "weakref.WeakKeyDictionary[Node, Result]" = weakref.WeakKeyDictionary()
        self._actor_state: "weakref.WeakKeyDictionary[InitActors, ActorGroupState]" = \
            weakref.WeakKeyDictionary()
        self._scope = _DriverScope()

    @property
    def call_log(self) -> list[ReducerCall] | None:
        """Set by a driver (for its thread) while it submits a batch (``batch_scope``)."""
        return self._scope.call_log

    @property
    def actor_directory(self) -> ActorDirectory | None:
        """Set by a durable driver (for its thread) while it submits a batch."""
        return self._scope.actor_directory

    @contextlib.contextmanager
    def batch_scope(self, log: list, directory: ActorDirectory | None = None) -> Iterator[None]:
        """While a driver submits a batch on this thread: exactly-once reducer calls
        go into ``log``, and a durable driver's ``directory`` finds its actors. A scope
        and not an argument: the batch is built by the user's ``submit``, which
        evaluates nodes through ``node.eval()``, so the driver cannot hand the context
        down; the scope is this thread's and ends with the batch."""
        self._scope.call_log, self._scope.actor_directory = log, directory
        try:
            yield
        finally:
            self._scope.call_log = self._scope.actor_directory = None

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Inside (this thread), a ReduceActors on the resident path answers per actor
        call, as a Ray actor call does (``Lowered.calls``): each reducer keeps its
        call's result until read. For plain Ray code under ``irfront.infer``, whose
        program reads one result per actor call; an exactly-once group then takes the
        path through Ray, whose calls answer one by one."""
        self._scope.answers += 1
        try:
            yield
        finally:
            self._scope.answers -= 1

    @property
    def answers(self) -> bool:
        return self._scope.answers > 0

    def calls(self, node: Node) -> list | None:
        """A node's per-call answers (``Lowered.calls``), or None."""
        r = self._results.get(node)
        return None if r is None else r.calls

    def get(self, node: Node) -> Result | None:
        return self._results.get(node)

    def done(self, node: Node) -> bool:
        """A leaf for passes: evaluated, or freed (using it then raises)."""
        r = self._results.get(node)
        return r is not None and (r.value is not None or r.freed)

    def record(self, node: Node, out: Lowered, submitter: Submitter) -> None:
        old = self._results.get(node)
        if old is not None and old.group_id == out.group_id and not old.freed:
            old.value, old.calls = out.value, out.calls
            return
        if old is not None and old.finalizer is not None:
            old.finalizer()
        fin = weakref.finalize(node, submitter.defer_free, (out.group_id,))
        fin.atexit = False
        self._results[node] = Result(out.value, out.group_id, out.depends_on, submitter,
                                     finalizer=fin, calls=out.calls)

    def free(self, node: Node) -> None:
        r = self._results.get(node)
        if r is None or r.freed:
            return
        r.freed, r.value = True, None
        fin, r.finalizer = r.finalizer, None
        if fin is not None:
            fin()
        r.submitter.free(())

    def next_seq(self, actors: InitActors) -> int:
        st = self._actor_state.get(actors)
        if st is None:
            st = self._actor_state[actors] = ActorGroupState()
        seq = st.next_seq
        st.next_seq += 1
        return seq

    def epochs(self, actors: InitActors) -> list[int]:
        """The group's restore tokens, one per actor: the list itself, which the stream
        driver updates when it restores an actor."""
        st = self._actor_state.get(actors)
        if st is None:
            st = self._actor_state[actors] = ActorGroupState()
        if len(st.epochs) != actors.n:
            st.epochs[:] = [0] * actors.n
        return st.epochs

    def set_next_seq(self, actors: InitActors, seq: int) -> None:
        """Numbers the group's next call ``seq`` (a driver resuming a stream)."""
        st = self._actor_state.get(actors)
        if st is None:
            st = self._actor_state[actors] = ActorGroupState()
        st.next_seq = int(seq)


@dataclass
class LoweringContext:
    """One evaluation: its options, its submitter, and the values lowered so far."""

    options: LoweringOptions
    submitter: Submitter
    results: Results
    local: dict[int, Lowered] = field(default_factory=dict)  # id(node) -> this eval's

    def lowered(self, node: Node) -> Lowered:
        """The value of an input: lowered in this evaluation, or in an earlier one."""
        hit = self.local.get(id(node))
        if hit is not None:
            return hit
        r = self.results.get(node)
        if r is not None and r.freed:
            raise IRError(node.label, f"evaluated after its group g{r.group_id} was freed; "
                          f"node.free() drops the results, so build a new {node.kind}(...) "
                          "node instead of reusing this one")
        if r is None or r.value is None:
            raise IRError(node.label, "internal: input not lowered before its consumer")
        return Lowered(r.value, r.group_id, r.depends_on)

    def value(self, node: Node) -> list:
        return self.lowered(node).value

    def group_of(self, node: Node) -> int:
        return self.lowered(node).group_id
