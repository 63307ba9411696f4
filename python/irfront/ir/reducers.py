"""Exactly-once reducer actors: derive the actor class from ``CheckpointedReducer``.

    @ray.remote(**REDUCER_OPTIONS)          # optional: InitActors sets these itself
    class Reducer(CheckpointedReducer):
        def __init__(self, index):
            self.index, self.total = index, 0
        def reduce(self, *partitions):      # the 2018 IR's ReduceActors signature
            self.total += sum(partitions)

``ReduceActors("reduce", InitActors(Reducer, n), ...)`` then calls
``apply_batch(seq, "reduce", *args)`` instead of ``reduce(*args)``: each actor applies
call ``seq`` (numbered per actor group by the evaluator, 0, 1, ...) once and in order; an
older one is skipped, and after a restart by Ray every call is refused (``NeedsRestore``)
until the driver restores the last checkpoint and replays what followed it.

The checkpointed state is the instance's ``__dict__`` minus this class's bookkeeping
(``_irf_*``), unless the class overrides ``checkpoint_state``/``restore_state``. The
method must be deterministic for a replay to give the state the first run gave.
"""
from __future__ import annotations

import copy
import inspect
import warnings
from typing import Any, Optional

import ray

from ray_patch.channel import locked

# Ray restarts a killed reducer (on another node if its node died); the driver, not Ray,
# re-sends its calls (after restoring a checkpoint).
REDUCER_OPTIONS = {"max_restarts": -1, "max_task_retries": 0}


class NeedsRestore(RuntimeError):
    """A reducer refused a call: it was restarted, or a call is missing before this one."""


def _reconstructed() -> bool:
    with warnings.catch_warnings():  # Ray warns about an attribute it reads itself
        warnings.simplefilter("ignore")
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


def _lock_methods(cls: type) -> None:
    """Wraps the methods ``cls`` itself defines with ``channel.locked`` (not dunders, not
    the ``_irf_`` helpers, not coroutine or generator functions)."""
    for name, fn in list(vars(cls).items()):
        if name.startswith(("__", "_irf_")) or not inspect.isfunction(fn) or getattr(
                fn, "_irf_locked", False) or inspect.iscoroutinefunction(fn) or \
                inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            continue
        setattr(cls, name, locked(fn))


class CheckpointedReducer:
    """Base of exactly-once reducer actors (see the module's docstring).

    Every method, the subclass's included, runs under one re-entrant lock per actor
    (``_irf_lock``): the resident path applies calls on the reducer's channel threads
    (ray_patch/channel.py), and a user's method (a ``get_total``, a ``take_records``)
    must never interleave with one. Coroutine and generator methods are not wrapped."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _lock_methods(cls)

    def _irf_init(self) -> None:
        if "_irf_last" not in self.__dict__:
            self._irf_last = -1
            self._irf_applied = 0
            self._irf_skipped = 0
            self._irf_stale = _reconstructed()
            self._irf_epoch = 0  # set by each restore: which recovery this state is of

    def _irf_ready_for(self, seq: int) -> None:
        """Raises ``NeedsRestore`` for call ``seq`` while restarted and not restored."""
        self._irf_init()
        if self._irf_stale:
            raise NeedsRestore(f"reducer restarted by Ray: refusing call {seq} until "
                               "restored from a checkpoint")

    # ---- what the driver calls ---------------------------------------------------------
    def apply_batch(self, seq: int, method: str, *args: Any) -> Any:
        """Runs ``method(*args)`` as call ``seq`` once, in order; returns its result
        (None for a call already applied)."""
        self._irf_ready_for(seq)
        if seq <= self._irf_last:
            self._irf_skipped += 1
            return None
        if seq != self._irf_last + 1:
            raise NeedsRestore(f"call {seq} arrived after {self._irf_last}: a call is "
                               "missing in between")
        out = getattr(self, method)(*args)
        self._irf_last = seq
        self._irf_applied += 1
        return out

    def apply_partial(self, seq: int, source: int, nsources: int, method: str,
                      prefix: tuple, partial: Any, failed: bool = False) -> int:
        """The resident path (ray_patch/resident.py): piece ``source`` of call ``seq``,
        sent by that source node's executor. Pieces are buffered until all ``nsources``
        arrived; then ``method(*prefix, *pieces)`` runs once and in order, with
        ``apply_batch``'s rules (an applied call is skipped, a restarted reducer refuses
        every call until restored), and every complete call waiting on it follows. A
        ``failed`` piece (its node task raised) counts for nothing: the call waits for
        a good piece from that source (the driver's retry), so a call is never skipped.
        Returns ``(last applied call, epoch)``: pieces arrive in any order, from many
        senders, and the epoch (the last ``restore``'s) tells the driver whether the
        answer is about the state it restored or about one lost before."""
        self._irf_ready_for(seq)
        if seq <= self._irf_last:
            return self._irf_last, self._irf_epoch
        if failed:
            return self._irf_last, self._irf_epoch
        parts = self.__dict__.setdefault("_irf_parts", {})
        got = parts.setdefault(seq, [nsources, prefix, {}])
        got[2][source] = partial  # a piece sent twice (a retry, a replay) counts once
        while True:
            nxt = parts.get(self._irf_last + 1)
            if nxt is None or len(nxt[2]) < nxt[0]:
                return self._irf_last, self._irf_epoch
            del parts[self._irf_last + 1]
            n, pre, pieces = nxt
            getattr(self, method)(*pre, *[pieces[k] for k in range(n)])
            self._irf_applied += 1
            self._irf_last += 1

    def checkpoint(self) -> Optional[tuple[int, Any]]:
        """``(last applied call, state)``, or None while waiting for a restore."""
        self._irf_init()
        if self._irf_stale:
            return None
        return self._irf_last, self.checkpoint_state()

    def restore(self, seq: int, state: Any, epoch: int = 0) -> int:
        """Back to ``state`` as of call ``seq``; ``epoch`` names this restore (the
        driver's token for the recovery, see ``apply_partial``)."""
        self._irf_init()
        if state is not None:
            self.restore_state(state)
        self._irf_last = seq
        self._irf_epoch = epoch
        parts = self.__dict__.get("_irf_parts")
        for s in [s for s in (parts or ()) if s <= seq]:  # pieces of applied calls
            del parts[s]
        self._irf_stale = False
        return seq

    def last_applied(self) -> int:
        self._irf_init()
        return self._irf_last

    def applied_status(self) -> tuple[int, bool]:
        """``(last applied call, ready)``: what the driver checks at the end of a run
        against what it sent (not ready: restarted by Ray, waiting for a restore)."""
        self._irf_init()
        return self._irf_last, not self._irf_stale

    def reducer_stats(self) -> dict:
        self._irf_init()
        return {"applied": self._irf_applied, "skipped": self._irf_skipped,
                "last": self._irf_last, "restarted": _reconstructed()}

    def where(self) -> tuple[str, bool]:
        """``(node id, ready)``: where the reducer runs, and whether it takes calls."""
        self._irf_init()
        return ray.get_runtime_context().get_node_id(), not self._irf_stale

    # ---- what a subclass may override --------------------------------------------------
    def checkpoint_state(self) -> Any:
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items()
                if not k.startswith("_irf_")}

    def restore_state(self, state: Any) -> None:
        for k in [k for k in self.__dict__ if not k.startswith("_irf_")]:
            del self.__dict__[k]
        self.__dict__.update(copy.deepcopy(state))


_lock_methods(CheckpointedReducer)


class SumReducerBase(CheckpointedReducer):
    """Adds up what it gets: numbers, or the sum of each numpy array (ints stay exact)."""

    def __init__(self, index: int = 0):
        self.index = index
        self.total = 0

    def reduce(self, *pieces: Any) -> Any:
        for p in pieces:
            self.total = self.total + (p.sum() if hasattr(p, "sum") else p)
        return self.total

    def get_total(self) -> Any:
        return self.total
