"""Backpressure: a fast source and a slow reducer. In-flight batches never exceed
max_in_flight, the source is held back (and the report says how long), and the inputs
kept for replay stay bounded."""
from __future__ import annotations

import time

import numpy as np
import pytest
import ray

import ray_patch
from conftest import needs_core
from irfront.backpressure import InFlightWindow
from irfront.recovery import REDUCER_OPTIONS, RecoverySettings, ReliableStream, SumReducerBase

pytestmark = [needs_core, pytest.mark.timeout(180)]


@ray.remote
def split(part, n):
    return tuple(np.array_split(part, n))


@ray.remote(**REDUCER_OPTIONS)
class SlowReducer(SumReducerBase):
    def merge(self, state, pieces):
        time.sleep(0.15)
        return super().merge(state, pieces)


def test_window_rejects_bad_bounds():
    for bad in (0, -1, 1.5, True, "4"):
        with pytest.raises(ValueError, match="max_in_flight must be an int >= 1"):
            InFlightWindow(bad)


def test_window_blocks_until_a_batch_closes():
    w = InFlightWindow(2)
    w.opened(0)
    w.opened(1)
    with pytest.raises(RuntimeError, match="call admit"):
        w.opened(2)
    held = w.admit(lambda: (time.sleep(0.05), w.closed(0)))
    assert held >= 0.05 and w.held_back_count == 1 and w.peak_in_flight == 2


@pytest.mark.parametrize("max_in_flight", [1, 3])
def test_fast_source_slow_reducer_stays_bounded(cluster, max_in_flight):
    settings = RecoverySettings(checkpoint_every=2, max_in_flight=max_in_flight)
    pulled: list[float] = []
    in_flight_seen: list[int] = []

    def fast_source():
        for k in range(10):  # arrives at once: no pacing at all
            pulled.append(time.perf_counter())
            yield [np.full(1000, k, dtype=np.int64) for _ in range(2)]

    def check(seq, stream):
        in_flight_seen.append(stream.window.in_flight)

    with ReliableStream(SlowReducer, 2, [], split, settings) as s:
        report = s.run(fast_source(), on_batch=check)
        states = s.states()
    assert max(in_flight_seen) <= max_in_flight
    bp = report.backpressure
    assert bp["peak_in_flight"] <= max_in_flight and bp["max_in_flight"] == max_in_flight
    assert bp["held_back_s"] > 0 and bp["held_back_batches"] > 0
    # The source really waited: 10 batches x 0.15 s at the reducer cannot be pulled at once.
    assert pulled[-1] - pulled[0] > 0.15 * (10 - max_in_flight - 1)
    # Memory: inputs kept for replay are bounded by the checkpoint interval + the window.
    assert report.kept_peak <= settings.checkpoint_every + max_in_flight + 1
    assert sum(int(v) for _, v in states) == sum(k * 2000 for k in range(10))
    assert report.lost_batches == 0
    assert ray_patch.core_group_count() == 0
