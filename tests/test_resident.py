"""The resident path (switch ``resident``): executors feed the reducers, the driver submits
one call per node and no reducer call; exactly-once through a reducer kill; a change of
reducers or partitions rebuilds the route; other actors get their pieces in order."""
from __future__ import annotations

import logging
import operator
import time

import numpy as np
import pytest
import ray

import irfront
from irfront import (Batch, InitActors, Map, MicroBatchStream, Objects, ReduceActors,
                     lowering_options, options_for)
from streams import SumReducer, run_stream

from conftest import needs_core

pytestmark = needs_core

RESIDENT = options_for("locality+resident")


def _source(batches: int, parts: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [[rng.integers(0, 100, 64) for _ in range(parts)] for _ in range(batches)]


def _expected(source, n):
    tot = [0] * n
    for parts in source:
        for p in parts:
            for i, c in enumerate(np.array_split(p, n)):
                tot[i] += int(c.sum())
    return tot


def test_options_for_names_the_switch():
    assert options_for("locality+resident").resident is True
    assert options_for("locality-noresident").resident is False
    assert "resident" in irfront.lowering.options.SWITCHES


def test_resident_stream_is_exact_and_submits_no_reducer_call(cluster, monkeypatch):
    seen = []
    real = irfront.lowering.resident.lower_resident

    def spy(*a, **k):
        out = real(*a, **k)
        seen.append(out is not None)
        return out

    monkeypatch.setattr(irfront.lowering.ops, "lower_resident", spy)
    calls = []
    real_call = irfront.lowering.ops.call_actors

    def count_calls(*a, **k):
        calls.append(1)
        return real_call(*a, **k)

    monkeypatch.setattr(irfront.lowering.ops, "call_actors", count_calls)
    src = _source(12, 8)
    with lowering_options(RESIDENT):
        run = run_stream(src, 4, combine=operator.add, checkpoint_every=4)
    assert seen and all(seen), "every batch took the resident path"
    assert not calls, "the driver called no reducer"
    assert run.totals == _expected(src, 4)
    assert run.report.lost_calls == 0


def test_reducer_killed_mid_stream_replays_exactly_once(cluster):
    src = _source(16, 8, seed=1)

    def kill(k, run):
        if k == 6:
            h = run.reducers.eval()[1]
            ray.kill(h, no_restart=False)

    with lowering_options(RESIDENT):
        run = run_stream(src, 4, combine=operator.add, checkpoint_every=3,
                         on_batch=kill, interval_s=0.02)
    assert run.totals == _expected(src, 4)
    assert run.report.lost_calls == 0
    assert run.report.recoveries, "the kill was seen and recovered"


def test_change_of_partitions_and_reducers_rebuilds(cluster):
    import ray_patch.resident as rr
    a = _source(5, 8, seed=2)
    b = _source(5, 6, seed=3)  # fewer partitions: another placement
    with lowering_options(RESIDENT):
        r1 = run_stream(a + b, 4, combine=operator.add)
        before = len(rr._ROUTES)
        r2 = run_stream(a, 3, combine=operator.add)  # other reducers: a new route
    assert r1.totals == _expected(a + b, 4)
    assert r2.totals == _expected(a, 3)
    assert len(rr._ROUTES) == before + 1


@ray.remote
class PlainReducer:
    """Not exactly-once: records the order in which batches arrive."""

    def __init__(self):
        self.seen = []

    def reduce(self, k, *partials):
        self.seen.append((k, float(sum(p.sum() for p in partials))))

    def get(self):
        return self.seen


def test_plain_actors_get_every_batch_once_and_in_order(cluster):
    reducers = InitActors(PlainReducer, 3, [()] * 3)
    parts = [np.arange(40) + k for k in range(6)]

    def batch(k):
        def submit(start):
            sh = Map(_split3, Objects(parts), [()] * len(parts), num_returns=3)
            return ReduceActors("reduce", reducers, sh, [(k,)] * 3, combine=operator.add)
        return Batch(submit)

    with lowering_options(RESIDENT):
        s = MicroBatchStream(interval_s=0.0, max_in_flight=4)
        s.run(batch(k) for k in range(10))
    for i, h in enumerate(reducers.eval()):
        seen = ray.get(h.get.remote())
        assert [k for k, _ in seen] == list(range(10))
        want = float(sum(np.array_split(p, 3)[i].sum() for p in parts))
        assert [v for _, v in seen] == [want] * 10


@ray.remote
def _split3(part):
    return tuple(np.array_split(part, 3))


@ray.remote
def _slow_on_executor(marker, part):
    """Hangs for 8 s the first time it runs on an actor (a resident executor; ``marker``
    is created then); as a plain task (the driver's fallback) it returns at once."""
    import os as _os
    if ray.get_runtime_context().get_actor_id() is not None:
        try:
            fd = _os.open(marker, _os.O_CREAT | _os.O_EXCL)
        except FileExistsError:
            return part
        _os.close(fd)
        time.sleep(8)
    return part


def test_an_executor_that_does_not_answer_is_bypassed(cluster, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="irfront.stream")
    marker = str(tmp_path / "slowed")
    src = _source(4, 8, seed=5)
    with lowering_options(RESIDENT):
        from streams import SumReducer as R
        reducers = InitActors(R, 4, [(i,) for i in range(4)])
        t0 = time.monotonic()

        def batch(parts):
            def submit(start):
                x = Map(_slow_on_executor, Objects(list(parts)), [(marker,)] * len(parts))
                sh = Map(_split4, x, [()] * len(parts), num_returns=4)
                return ReduceActors("reduce", reducers, sh, combine=operator.add)
            return Batch(submit)

        s = MicroBatchStream(interval_s=0.0, max_in_flight=2, restart_timeout_s=2.0)
        s.run(batch(p) for p in src)
    totals = ray.get([h.get_total.remote() for h in reducers.eval()])
    assert totals == _expected(src, 4)
    assert s.stats.lost_calls == 0
    assert "did not answer" in caplog.text  # the fallback sent the pieces
    assert time.monotonic() - t0 < 60


@ray.remote
def _split4(part):
    return tuple(np.array_split(part, 4))
