"""The 2018 draft's streaming application: its tasks and its reducer actor.

    deps     = Broadcast(generate_dependencies, nodes * 4, data_mb)
    x        = Map(map_step, x, [(start,)] * n)          # num_maps times: map_step(start, x)
    shuffled = Map(shuffle, x, [(num_reducers,)] * n, num_returns=num_reducers)
    ReduceActors("reduce", reducers, shuffled, [(start, tag)] * num_reducers)
                                          # reducer i: reduce(start, tag, *partials_i)

``map_step`` passes its partition on unchanged (the draft's map stages move data, they do
not compute): unfused, each stage writes a new ``data_mb`` object per partition. The
shuffle writes tiny outputs (one partial sum per reducer, as in the draft), and each
reducer records ``time.time() - start`` when its ``reduce`` call runs: the latency from
the batch's start on the driver to its arrival at that reducer (same machine clock).

``build_batch`` builds one micro-batch of the program; ``bench/stream.py`` drives it.
This module is pickled by value (``ray.cloudpickle.register_pickle_by_value``), so the
workers of any cluster can run it without having ``bench/`` on their path.
"""
from __future__ import annotations

import operator
import time

import numpy as np
import ray

from baselines import burn
from irfront import REDUCER_OPTIONS, CheckpointedReducer, Map, ReduceActors, combines

FLOAT_BYTES = 8


@ray.remote
def generate_dependencies(data_mb: float, seed: int = 0):
    """The broadcast array: ``data_mb`` MiB of float64 (at least one element)."""
    n = max(1, int(data_mb * (1 << 20)) // FLOAT_BYTES)
    return np.random.default_rng(seed).random(n)


@ray.remote
def map_step(start, batch):
    """One one-to-one stage: the partition, unchanged (``start`` as in the draft)."""
    return batch


@ray.remote
def map_work(start, reps, batch):
    """A stage that computes: ``reps`` passes of numpy over the partition
    (``baselines.burn``, the hand-written baselines' own stage)."""
    return burn(batch, reps)


@ray.remote
def shuffle(num_reducers, batch):
    """The all-to-all step: one partial sum per reducer (contiguous chunks, one pass)."""
    chunks = np.array_split(batch, num_reducers)
    return tuple(float(c.sum()) for c in chunks)


class _Reducer:
    """Accumulates partial sums; records each batch's latency on arrival."""

    def __init__(self, index):
        self.index = index
        self.total = 0.0
        self.records = []

    def reduce(self, start, tag, *partials):
        now = time.time()
        self.total += sum(partials)
        if tag is not None:
            self.records.append((tag, now - start))
        return self.index

    def take_records(self):
        out, self.records = self.records, []
        return out

    def get_total(self):
        return self.total


_Reducer.__name__ = _Reducer.__qualname__ = "Reducer"  # its name in Ray's dashboard
Reducer = ray.remote(_Reducer)


class _CombiningReducer(_Reducer):
    """``Reducer`` whose ``reduce`` declares its merge on the method, as plain Ray code
    does for ``irfront.infer`` (the inferred series): the recognised reduce then merges
    each node's partials per reducer, as the IR series' ``combine=operator.add``. Plain
    Ray ignores the declaration."""

    @combines(operator.add)
    def reduce(self, start, tag, *partials):
        return _Reducer.reduce(self, start, tag, *partials)


_CombiningReducer.__name__ = _CombiningReducer.__qualname__ = "Reducer"
CombiningReducer = ray.remote(_CombiningReducer)


@ray.remote(**REDUCER_OPTIONS)
class ExactlyOnceReducer(CheckpointedReducer):
    """``Reducer`` as an exactly-once reducer (checkpointed, each call applied once)."""

    __init__ = _Reducer.__init__
    reduce = _Reducer.reduce
    take_records = _Reducer.take_records
    get_total = _Reducer.get_total


def build_batch(deps, reducers, num_maps: int, num_reducers: int, start, tag=None,
                combine=None, reps: int = 0):
    """One micro-batch of the draft's program as IR (nothing is evaluated here).
    ``deps``: its input (a Broadcast, or ``Objects`` of the batch's own partitions).
    ``combine``: the reduce's declared merge of partials (``operator.add``: ``reduce``
    sums them), which lets a grouped shuffle merge each node's pieces per reducer.
    ``reps`` > 0: each map stage computes (``map_work``) instead of passing data on."""
    x = deps
    for _ in range(num_maps):
        x = (Map(map_work, x, args=[(start, reps)] * len(x)) if reps else
             Map(map_step, x, args=[(start,)] * len(x)))
    shuffled = Map(shuffle, x, [(num_reducers,)] * len(x), num_returns=num_reducers)
    return ReduceActors("reduce", reducers, shuffled, [(start, tag)] * num_reducers,
                        combine=combine)


def plain_batch(deps, reducers, num_maps: int, num_partitions: int, num_reducers: int,
                start, tag=None):
    """The same micro-batch as a Ray user writes it: plain ``.remote()`` calls, no IR.
    Under ``irfront.infer`` it is recognised as ``build_batch``'s nodes."""
    x = [deps] * num_partitions
    for _ in range(num_maps):
        x = [map_step.remote(start, p) for p in x]
    shuffled = [shuffle.options(num_returns=num_reducers).remote(num_reducers, p) for p in x]
    return [r.reduce.remote(start, tag, *[s[i] for s in shuffled])
            for i, r in enumerate(reducers)]
