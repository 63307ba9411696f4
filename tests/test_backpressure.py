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
from irfront import REDUCER_OPTIONS, InFlightWindow, SumReducerBase
from streams import run_stream

pytestmark = [needs_core, pytest.mark.timeout(180)]


@ray.remote(**REDUCER_OPTIONS)
class SlowReducer(SumReducerBase):
    def reduce(self, *pieces):
        time.sleep(0.15)
        return super().reduce(*pieces)


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
    pulled: list[float] = []
    in_flight_seen: list[int] = []
    k_every = 2

    def fast_source():
        for k in range(10):  # arrives at once: no pacing at all
            pulled.append(time.perf_counter())
            yield [np.full(1000, k, dtype=np.int64) for _ in range(2)]

    def check(k, run):
        in_flight_seen.append(run.stream.window.in_flight)

    out = run_stream(fast_source(), 2, reducer=SlowReducer, checkpoint_every=k_every,
                     max_in_flight=max_in_flight, on_batch=check)
    assert max(in_flight_seen) <= max_in_flight
    bp = out.report.backpressure
    assert bp["peak_in_flight"] <= max_in_flight and bp["max_in_flight"] == max_in_flight
    assert bp["held_back_s"] > 0 and bp["held_back_batches"] > 0
    # The source really waited: 10 batches x 0.15 s at the reducer cannot be pulled at once.
    assert pulled[-1] - pulled[0] > 0.15 * (10 - max_in_flight - 1)
    # Memory: calls kept for replay are bounded by the checkpoint interval + the window.
    assert out.report.kept_peak <= k_every + max_in_flight + 1
    assert sum(int(v) for v in out.totals) == sum(k * 2000 for k in range(10))
    assert out.report.lost_calls == 0
    del out
    import gc
    gc.collect()
    assert ray_patch.core_group_count() == 0
