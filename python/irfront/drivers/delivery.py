"""How a reducer call reaches its reducer, behind one small interface: the stream's loop
and its ledger (drivers/ledger.py) do not know which path a call took.

- ``RayCalls``: a reducer call is a Ray actor call (``ReducerCall``); its ref answers it,
  and a replay sends the same call again.
- ``ResidentPieces``: the resident path (``ResidentCall``, lowering/resident.py): each
  source node's executor feeds every reducer its piece, and answers per reducer; a
  replay sends every source's piece again from plain tasks, and a source whose executor
  failed or went silent has its pieces sent again the same way.

A path implements ``sent`` (a batch logged a call: what to wait for) and ``replay``
(send reducer i call ``seq`` again); ``Paths.of`` picks the path of a logged call.
"""
from __future__ import annotations

import time
from typing import Any, Protocol

import ray_patch
from irfront.drivers.ledger import Ledger, Pending, Wait
from irfront.lowering.context import ReducerCall
from irfront.lowering.resident import ResidentCall


class Delivery(Protocol):
    def sent(self, ledger: Ledger, key: int, call: Any, batch: int) -> None:
        """A batch logged ``call`` to group ``key``: the ledger keeps it and learns what
        answers it."""

    def replay(self, ledger: Ledger, key: int, i: int, seq: int, call: Any) -> None:
        """Sends reducer i its call ``seq`` again (reducers apply a call once)."""


class RayCalls:
    """Reducer calls as Ray actor calls."""

    def sent(self, ledger: Ledger, key: int, call: ReducerCall, batch: int) -> None:
        if ledger.sent(key, call.index, call.seq, call, batch):
            ledger.expect(call.ref, Pending(Wait.APPLY, key, call.index, call.seq))

    def replay(self, ledger: Ledger, key: int, i: int, seq: int, call: ReducerCall) -> None:
        h = ledger.groups[key].handles[i]
        ref = ray_patch.resend_call(h, call.method, call.args, call.invoke)
        ledger.expect(ref, Pending(Wait.APPLY, key, i, seq))


class ResidentPieces:
    """Resident batches: one executor call per source node answers for every reducer."""

    def __init__(self) -> None:
        self.waiting: dict[Any, float] = {}  # executor call -> when it was sent

    def sent(self, ledger: Ledger, key: int, call: ResidentCall, batch: int) -> None:
        for i in range(call.actors.n):  # kept for every reducer; one answer per source
            ledger.sent(key, i, call.seq, call, batch)
        now = time.monotonic()
        for s, ref in enumerate(call.refs):
            ledger.expect(ref, Pending(Wait.RESIDENT, key, -1, call.seq, s))
            self.waiting[ref] = now

    def replay(self, ledger: Ledger, key: int, i: int, seq: int, call: ResidentCall) -> None:
        for source, ref in enumerate(call.replay(i)):  # every source's piece, from the driver
            ledger.expect(ref, Pending(Wait.REPLAY, key, i, seq, source))

    def answered(self, ref: Any) -> None:
        self.waiting.pop(ref, None)

    def resend_source(self, ledger: Ledger, key: int, source: int, seq: int,
                      rerun: bool = False, only: int | None = None) -> None:
        """Source ``source``'s pieces of resident batch ``seq`` sent again by the driver
        (plain tasks) to every reducer that has not confirmed it (or to reducer
        ``only``): its executor failed or did not answer in time, or (``rerun``) its
        plain task failed and runs again."""
        g = ledger.groups[key]
        rerun_done = not rerun
        for i in range(len(g.handles)) if only is None else (only,):
            c = g.kept[i].get(seq)
            if c is None or g.confirmed[i] >= seq or (only is None and seq <= g.horizon[i]):
                continue
            if not rerun_done:  # its plain task ran and failed: run it again
                c.batch.forget_source(source)
                rerun_done = True
            ref = c.batch.replay_source(source, i)
            ledger.expect(ref, Pending(Wait.REPLAY, key, i, seq, source))

    def stalled(self, ledger: Ledger, timeout_s: float) -> list[Pending]:
        """Executor calls unanswered for ``timeout_s``: no longer waited for (a late
        answer is ignored); their pieces are for the caller to send again."""
        limit = time.monotonic() - timeout_s
        out = []
        for ref, t in list(self.waiting.items()):
            if t < limit:
                del self.waiting[ref]
                w = ledger.pending.pop(ref, None)
                if w is not None:
                    out.append(w)
        return out

    def clear(self) -> None:
        self.waiting.clear()


class Paths:
    """The delivery paths of one stream, by the type of call a batch logs: a new path
    is one more entry here (and its call type in the lowering's log)."""

    def __init__(self) -> None:
        self.ray = RayCalls()
        self.resident = ResidentPieces()
        self._by_type: dict[type, Delivery] = {ReducerCall: self.ray,
                                               ResidentCall: self.resident}

    def of(self, call: Any) -> Delivery:
        return self._by_type[type(call)]

    def clear(self) -> None:
        self.resident.clear()
