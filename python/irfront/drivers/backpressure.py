"""Backpressure: a bound on unfinished micro-batches, and an account of the waiting.

    window = InFlightWindow(max_in_flight=4)
    window.admit(wait=lambda: driver_waits_for_something())   # blocks while full
    window.opened(seq); ...; window.closed(seq)
    window.report()  # {"max_in_flight": 4, "peak_in_flight": 4, "held_back_s": 1.7, ...}

The source is pulled only when the window has room: when batches arrive faster than the
pipeline drains them, the driver stops taking new ones (the source waits) instead of
queueing them in Ray, so what is held in memory (the batches' inputs and results) stays
bounded by ``max_in_flight``. ``held_back_s`` is the total time the source was held back.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class InFlightWindow:
    """At most ``max_in_flight`` batches opened and not yet closed."""

    max_in_flight: int = 4
    open_seqs: set[int] = field(default_factory=set)
    peak_in_flight: int = 0
    held_back_s: float = 0.0
    held_back_count: int = 0  # batches that had to wait for room
    longest_hold_s: float = 0.0

    def __post_init__(self) -> None:
        if (isinstance(self.max_in_flight, bool) or not isinstance(self.max_in_flight, int)
                or self.max_in_flight < 1):
            raise ValueError(f"max_in_flight must be an int >= 1; got {self.max_in_flight!r}")

    @property
    def in_flight(self) -> int:
        return len(self.open_seqs)

    @property
    def full(self) -> bool:
        return len(self.open_seqs) >= self.max_in_flight

    def admit(self, wait: Callable[[], None]) -> float:
        """Blocks while the window is full, calling ``wait()`` (which must make progress:
        wait for some batch to finish and close it); returns the seconds held back."""
        if not self.full:
            return 0.0
        t0 = time.perf_counter()
        while self.full:
            wait()
        held = time.perf_counter() - t0
        self.held_back_s += held
        self.held_back_count += 1
        self.longest_hold_s = max(self.longest_hold_s, held)
        return held

    def cancel_hold(self, held: float) -> None:
        """Takes back the last ``admit``'s hold: the source turned out to be exhausted,
        so no batch waited."""
        if held > 0:
            self.held_back_s -= held
            self.held_back_count -= 1

    def opened(self, seq: int) -> None:
        if self.full:
            raise RuntimeError(f"batch {seq} opened with {self.in_flight} in flight "
                               f"(max_in_flight={self.max_in_flight}); call admit() first")
        self.open_seqs.add(seq)
        self.peak_in_flight = max(self.peak_in_flight, len(self.open_seqs))

    def closed(self, seq: int) -> None:
        self.open_seqs.discard(seq)

    def report(self) -> dict:
        return {"max_in_flight": self.max_in_flight, "peak_in_flight": self.peak_in_flight,
                "held_back_s": self.held_back_s, "held_back_batches": self.held_back_count,
                "longest_hold_s": self.longest_hold_s}
