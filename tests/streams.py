"""A reliable micro-batch pipeline for the fault and backpressure tests, written in the IR:
Objects(partitions) -> Maps -> Map(split, num_returns=n) -> ReduceActors("reduce") on
exactly-once reducers, driven by MicroBatchStream."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import ray

from irfront import (REDUCER_OPTIONS, Batch, InitActors, Map, MicroBatchStream, Objects,
                     ReduceActors, StreamReport, SumReducerBase)

SumReducer = ray.remote(**REDUCER_OPTIONS)(SumReducerBase)


@ray.remote
def split(n, part):
    return tuple(np.array_split(part, n)) if n > 1 else part


@dataclass
class Run:
    totals: list
    report: StreamReport
    stream: MicroBatchStream
    reducers: InitActors
    last: dict  # the last batch's IR nodes: "reduce", "split", "stages"


def run_stream(source: Iterable[Sequence[Any]], num_reducers: int, *,
               reducer: Any = SumReducer, stages: Sequence[tuple] = (),
               reducer_args: list | None = None, checkpoint_every: int = 3,
               max_in_flight: int = 3, on_batch: Callable | None = None,
               interval_s: float = 0.0, name: str = "stream",
               combine: Any = None, reducers: InitActors | None = None) -> Run:
    """Runs every batch of ``source`` through ``stages`` ((task, extra_args) pairs) into
    ``num_reducers`` exactly-once reducers; returns their totals and the report.
    ``on_batch(k, run)`` runs after batch k is submitted (``run.totals`` still empty).
    ``combine``: the reduce's declared merge (``ReduceActors(..., combine=)``).
    ``reducers``: the program's own InitActors node (default: one made here)."""
    n = num_reducers
    if reducers is None:
        reducers = InitActors(reducer, n, reducer_args or [(i,) for i in range(n)])
    last: dict = {}

    def batch(parts):
        def submit(start):
            x = Objects(list(parts))
            maps = []
            for fn, extra in stages:
                x = Map(fn, x, [extra] * len(parts))
                maps.append(x)
            sh = Map(split, x, [(n,)] * len(parts), num_returns=n)
            red = ReduceActors("reduce", reducers, sh, combine=combine)
            last.update(reduce=red, split=sh, stages=maps)
            return red
        return Batch(submit)

    stream = MicroBatchStream(interval_s=interval_s, max_in_flight=max_in_flight,
                              checkpoint_every=checkpoint_every, restart_timeout_s=90,
                              name=name)
    out = Run([], stream.stats, stream, reducers, last)
    count = iter(range(1 << 62))
    hook = None if on_batch is None else (lambda rec: on_batch(next(count), out))
    stream.run((batch(p) for p in source), on_submit=hook)
    out.totals = ray.get([h.get_total.remote() for h in reducers.eval()])
    return out


@ray.remote(max_restarts=-1)
class PlainSum:
    """A plain reducer actor (not exactly-once): Ray's own semantics apply."""

    def __init__(self):
        self.total, self.calls = 0, 0

    def reduce(self, *partials):
        self.total += int(sum(int(np.asarray(p).sum()) for p in partials))
        self.calls += 1

    def get(self):
        return self.total, self.calls


def plain_stream(reducers: InitActors, source: Sequence[Sequence[Any]]) -> list:
    """``source``'s batches into ``reducers`` (PlainSum), combined per node; returns each
    reducer's (total, calls) read through the user's handles."""
    import operator
    n = reducers.n

    def batch(parts):
        def submit(start):
            sh = Map(split, Objects(list(parts)), [(n,)] * len(parts), num_returns=n)
            return ReduceActors("reduce", reducers, sh, combine=operator.add)
        return Batch(submit)

    MicroBatchStream(interval_s=0.0, max_in_flight=3).run(batch(p) for p in source)
    return ray.get([h.get.remote() for h in reducers.eval()])


def expected_totals(source: Sequence[Sequence[Any]], n: int) -> list[int]:
    tot = [0] * n
    for parts in source:
        for p in parts:
            for i, c in enumerate(np.array_split(p, n)):
                tot[i] += int(c.sum())
    return tot


def exact_resident_stream(batches: int, seed: int = 0) -> dict:
    """An exactly-once and a plain stream on the default (resident) path, the same
    partitions every batch so that batches are fed; whether both came out exact, how
    many batches were fed, and the reducers' handles."""
    import operator

    import ray_patch.resident as rr
    rng = np.random.default_rng(seed)
    parts = [rng.integers(0, 100, 256) for _ in range(8)]
    src = [[ray.put(p) for p in parts]] * batches
    fed0 = rr.fed_batches()
    run = run_stream(src, 4, combine=operator.add)
    plain = InitActors(PlainSum, 4)
    got = plain_stream(plain, src)
    want = expected_totals([parts] * batches, 4)
    return {"exact": run.totals == want and run.report.lost_calls == 0,
            "plain_exact": [t for t, _ in got] == want and
            all(c == batches for _, c in got),
            "fed": rr.fed_batches() - fed0,
            "handles": list(run.reducers.eval()) + list(plain.eval())}
