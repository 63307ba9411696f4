"""The stream's reducer ledger: for each group of exactly-once reducers, what the driver
sent, what each reducer confirmed, its last checkpoint and the calls kept for replay;
and what each pending ref (or fed batch's future) stands for.

Bookkeeping only: the ledger makes no Ray call and decides nothing about failures. The
driver (drivers/stream.py) tells it what happened, one typed event per method:

- ``sent``: a batch logged a call to a group (``track``);
- ``confirmed``: a reducer applied calls up to ``seq``;
- ``checkpointed``: a reducer's checkpoint came back (the kept calls it covers go);
- ``restored``: a reducer was restored from its checkpoint as a new epoch (its later
  calls are replayed; answers about the old state no longer count);

and asks it what is left (``unconfirmed``, ``kept_after``, ``lost_calls``).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable


class Wait(enum.Enum):
    """What a pending ref is: a reducer call (``APPLY``), a resident piece sent again by
    the driver (``REPLAY``: answers the last applied call), a checkpoint (``CHECKPOINT``),
    or a source node's executor call of a resident batch (``RESIDENT``)."""

    APPLY = "apply"
    REPLAY = "replay"
    CHECKPOINT = "checkpoint"
    RESIDENT = "resident"


@dataclass(frozen=True)
class Pending:
    kind: Wait
    key: int  # the reducer group
    reducer: int  # -1: every reducer of the group (a resident executor call)
    seq: int
    source: int = -1  # resident calls and replays: the source node's index


@dataclass
class ReducerGroup:
    """The driver's view of one group of exactly-once reducers."""

    handles: list
    ckpt: list[tuple[int, Any]]  # last checkpoint per actor: (seq, state)
    confirmed: list[int]  # last call known applied, per actor
    kept: list[dict[int, Any]]  # calls after the checkpoint, per actor
    last: int = -1  # last call numbered for this group
    recoveries: list[int] = field(default_factory=list)
    name: str = ""
    # per actor: the last call sent before its last recovery; resident answers about
    # calls up to it are superseded by the replay (lowering/resident.py)
    horizon: list[int] = field(default_factory=list)
    # per actor: the token of its last restore; a resident answer counts only if it
    # carries it (an answer about a state lost in a fault says nothing of the restored one).
    # The lowering's own list (lowering.context.Results.epochs), shared: its pieces carry it
    epoch: list[int] = field(default_factory=list)

    @classmethod
    def new(cls, handles: list, ckpt: list[tuple[int, Any]], name: str,
            epoch: list[int]) -> "ReducerGroup":
        """A group as first seen; ``epoch`` is kept as it is (not copied)."""
        n = len(handles)
        return cls(list(handles), list(ckpt), [s for s, _ in ckpt], [dict() for _ in range(n)],
                   recoveries=[0] * n, name=name, horizon=[-1] * n, epoch=epoch)

    # ---- events -------------------------------------------------------------------------
    def sent(self, i: int, seq: int, call: Any) -> bool:
        """Call ``seq`` went to reducer i: kept until a checkpoint covers it, unless it
        is already confirmed; returns whether it was kept."""
        self.last = max(self.last, seq)
        if seq <= self.confirmed[i]:
            return False
        self.kept[i][seq] = call
        return True

    def confirmed_up_to(self, i: int, seq: int) -> None:
        self.confirmed[i] = max(self.confirmed[i], seq)

    def confirmed_resident(self, i: int, answer: tuple[int, int]) -> None:
        """A reducer's answer to a resident piece: ``(last applied, epoch)``. It counts
        when it is about the state the driver last restored (its epoch), whichever path
        brought the piece: after a recovery, a piece an executor sent may complete a
        replayed call as well as the driver's own replay can."""
        last, epoch = answer
        if epoch == self.epoch[i]:
            self.confirmed[i] = max(self.confirmed[i], last)

    def checkpointed(self, i: int, ckpt: tuple[int, Any]) -> bool:
        """Reducer i's checkpoint ``(seq, state)`` came back; True if newer than the one
        held (it replaces it, and the kept calls it covers go)."""
        if ckpt[0] <= self.ckpt[i][0]:
            return False
        self.ckpt[i] = ckpt
        for s in [s for s in self.kept[i] if s <= ckpt[0]]:
            del self.kept[i][s]
        return True

    def restored(self, i: int, epoch: int) -> int:
        """Reducer i was restored from its checkpoint as ``epoch``: it has applied the
        calls up to the checkpoint, and every call sent so far is replayed. Returns the
        checkpoint's call number."""
        self.epoch[i] = epoch
        self.confirmed[i] = self.ckpt[i][0]
        self.horizon[i] = self.last
        return self.ckpt[i][0]

    # ---- questions ----------------------------------------------------------------------
    def kept_after(self, i: int, after: int) -> list[tuple[int, Any]]:
        """Reducer i's kept calls after call ``after``, in order."""
        return [(s, self.kept[i][s]) for s in sorted(s for s in self.kept[i] if s > after)]

    def lost_calls(self) -> int:
        return sum(self.last - c for c in self.confirmed)


class Ledger:
    """Every reducer group of a stream, and what each pending ref stands for."""

    def __init__(self) -> None:
        self.groups: dict[int, ReducerGroup] = {}  # id(InitActors) -> its group
        self.actors: dict[int, Any] = {}  # id -> InitActors (kept alive)
        self.pending: dict[Any, Pending] = {}  # refs (and fed batches' futures)
        self.batch_of: dict[tuple[int, int], int] = {}  # (key, call) -> batch, in flight
        self.kept_peak = 0

    def group(self, actors: Any, make: Callable[[], ReducerGroup]) -> tuple[int, ReducerGroup]:
        """The group of ``actors`` (an InitActors), made by ``make`` on first use."""
        key = id(actors)
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = make()
            self.actors[key] = actors
        return key, g

    def sent(self, key: int, i: int, seq: int, call: Any, batch: int) -> bool:
        """Call ``seq`` of batch ``batch`` went to reducer i of group ``key``; returns
        whether it was kept (not already confirmed)."""
        g = self.groups[key]
        kept = g.sent(i, seq, call)
        self.kept_peak = max(self.kept_peak, len(g.kept[i]))
        self.batch_of[(key, seq)] = batch
        return kept

    def expect(self, ref: Any, pending: Pending) -> None:
        self.pending[ref] = pending

    def drop_pending_of(self, key: int, i: int) -> None:
        """Forgets what is pending for reducer i (superseded by its replay)."""
        for r, w in list(self.pending.items()):
            if (w.key, w.reducer) == (key, i):
                del self.pending[r]

    def unconfirmed(self, calls: list[tuple[int, int, int]]) -> bool:
        """Whether some ``(group key, reducer, seq)`` is not confirmed yet."""
        return any(self.groups[key].confirmed[i] < seq for key, i, seq in calls)

    def closed(self, calls: list[tuple[int, int, int]]) -> None:
        """A batch with these calls finished: its calls no longer map to it."""
        for key, _, call in calls:
            self.batch_of.pop((key, call), None)

    def lost_calls(self) -> int:
        return sum(g.lost_calls() for g in self.groups.values())

    def clear(self) -> None:
        self.groups.clear()
        self.actors.clear()
        self.pending.clear()
