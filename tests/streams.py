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
