"""A micro-batch driver: one batch every ``interval_s``, at most ``max_in_flight`` unfinished.

    stream = MicroBatchStream(interval_s=0.1, max_in_flight=4)
    records = stream.run([Batch(submit=my_batch, label=k) for k in range(100)])

A ``Batch`` is a function ``submit(start) -> list[ObjectRef]`` (the refs whose completion
marks the batch done, e.g. a ReduceActors node's ``eval()``) plus two flags:

- ``ahead=False``: submitted at its start time; ``start`` is ``time.time()`` read just
  before ``submit`` is called (the draft's measurement).
- ``ahead=True`` (pre-scheduling): submitted up to ``lead_s`` *before* its start time
  ``T``. ``start`` is then an ObjectRef produced by a gate (a small threaded actor on the
  driver's node) that returns ``T`` at time ``T``: tasks that take ``start`` as a direct
  argument cannot run before ``T``, and a latency measured as ``time.time() - start``
  counts from ``T``, the batch's start, not from its early submission. What moves off the
  critical path is the driver's work (building the IR, placing groups, submitting tasks).
  When the driver is late (the in-flight bound held it past ``T``), ``T`` is the time of
  submission, exactly as for ``ahead=False``.

Backpressure: the bound on unfinished batches is an ``irfront.backpressure.InFlightWindow``
(the same mechanism as ``irfront.recovery.ReliableStream``). A batch waits for room before
it is submitted; each ``BatchRecord`` says how long (``held_back_s``), and
``stream.report()`` gives the totals of the last run (``peak_in_flight``, ``held_back_s``,
``held_back_batches``, ``longest_hold_s``, ``max_in_flight``, ``batches``).

The driver is single-threaded and simple on purpose. It does not recover from failures:
a failing batch raises from ``run`` (``irfront.recovery.ReliableStream`` is the driver
with checkpointed reducers and replay).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence

import ray

from irfront.backpressure import InFlightWindow

__all__ = ["Batch", "BatchRecord", "MicroBatchStream"]


@dataclass
class Batch:
    """One micro-batch: ``submit(start)`` submits its tasks and returns the refs that mark
    it done. ``start`` is a float, or (``ahead=True``) an ObjectRef of the float."""

    submit: Callable[[Any], Sequence[ray.ObjectRef]]
    ahead: bool = False
    label: Any = None


@dataclass
class BatchRecord:
    """What the driver saw of one batch (times are ``time.time()`` seconds)."""

    label: Any
    start: float  # the batch's start (what its tasks get as ``start``)
    submitted: float  # when ``submit`` was called
    submit_s: float  # how long ``submit`` took on the driver
    ahead: bool
    done: Optional[float] = None  # when the driver saw it finish (after the fact; coarse)
    held_back_s: float = 0.0  # how long it waited for room in the in-flight window


def _gate_class():
    # Built in a function so that cloudpickle ships it by value: workers need not import
    # irfront.
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


class MicroBatchStream:
    """Submits batches on a fixed schedule with a bound on unfinished batches."""

    def __init__(self, interval_s: float = 0.1, max_in_flight: int = 4,
                 lead_s: Optional[float] = None):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0; got {interval_s}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1; got {max_in_flight}")
        self.interval_s = interval_s
        self.max_in_flight = max_in_flight
        self.lead_s = interval_s / 4 if lead_s is None else lead_s
        self._gate = None
        self.window = InFlightWindow(max_in_flight)  # a fresh one per run
        self._batches = 0

    # ---- the gate for ahead-of-time batches ---------------------------------------------
    def _get_gate(self):
        if self._gate is None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
            here = ray.get_runtime_context().get_node_id()
            self._gate = _gate_class().options(scheduling_strategy=(
                NodeAffinitySchedulingStrategy(here, soft=True))).remote()
            ray.get(self._gate.ping.remote())
        return self._gate

    def close(self) -> None:
        """Drops the gate actor (it is also dropped with the stream)."""
        self._gate = None

    # ---- running ------------------------------------------------------------------------
    def report(self) -> dict:
        """Backpressure of the last run: the window's figures and the batch count."""
        return {**self.window.report(), "batches": self._batches}

    def _retire(self, in_flight: dict, block: bool) -> None:
        """Closes finished batches, oldest first; with ``block`` waits for the oldest."""
        while in_flight:
            seq = next(iter(in_flight))
            rec, refs = in_flight[seq]
            if refs:
                ready, _ = ray.wait(list(refs), num_returns=len(refs),
                                    timeout=None if block else 0)
                if len(ready) < len(refs):
                    return
                ray.get(list(refs))  # raises if the batch failed
            rec.done = time.time()
            del in_flight[seq]
            self.window.closed(seq)
            block = False

    def run(self, batches: Iterable[Batch],
            on_submit: Optional[Callable[[BatchRecord], None]] = None) -> list[BatchRecord]:
        """Runs every batch on the schedule; returns once all have finished."""
        records: list[BatchRecord] = []
        in_flight: dict[int, tuple[BatchRecord, list]] = {}  # seq -> (record, refs), FIFO
        self.window = InFlightWindow(self.max_in_flight)
        self._batches = 0
        t_next = time.time() + self.interval_s
        for seq, b in enumerate(batches):
            self._retire(in_flight, block=False)
            held = self.window.admit(lambda: self._retire(in_flight, block=True))
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
            refs = list(b.submit(arg))
            rec = BatchRecord(b.label, start, submitted, time.time() - submitted, b.ahead,
                              held_back_s=held)
            records.append(rec)
            self.window.opened(seq)
            in_flight[seq] = (rec, refs)
            self._batches = seq + 1
            if on_submit is not None:
                on_submit(rec)
            # The next start: one interval later; a driver running late does not build up
            # a debt of more than one interval (no burst of catch-up batches).
            t_next = max(t_next + self.interval_s, time.time() - self.interval_s)
        while in_flight:
            self._retire(in_flight, block=True)
        return records
