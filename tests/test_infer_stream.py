"""Plain Ray code under ``irfront.infer`` inside a ``MicroBatchStream``: its recognised
reduce takes the resident path (no Ray call per reducer per batch), and what the program
reads is what plain Ray gives it (differential: the same code run plainly)."""
from __future__ import annotations

import operator

import numpy as np
import pytest
import ray

import irfront
import ray_patch.resident as rr
from irfront import Batch, MicroBatchStream


@ray.remote
def _bump(part):
    return part + 1


@ray.remote
def _split3(part):
    return tuple(np.array_split(part, 3))


class _Reducer:
    """A plain actor whose ``reduce`` declares its merge (plain Ray ignores it)."""

    def __init__(self, i):
        self.i, self.seen = i, []

    @irfront.combines(operator.add)
    def reduce(self, k, *parts):
        if k == "boom":
            raise ValueError(f"reducer {self.i} refused batch {k}")
        self.seen.append((k, float(sum(p.sum() for p in parts))))
        return self.i, k

    def get(self):
        return self.seen


Reducer = ray.remote(_Reducer)


def _batch(reducers, parts, k):
    """One micro-batch as a Ray user writes it: a map, a shuffle, a reduce."""
    xs = [_bump.remote(p) for p in parts]
    sh = [_split3.options(num_returns=3).remote(x) for x in xs]
    return [r.reduce.remote(k, *[s[i] for s in sh]) for i, r in enumerate(reducers)]


def _inferred(box, parts, k, outs, read_back=False):
    def submit(start):
        with irfront.infer() as block:
            if "reducers" not in box:  # made in the stream: placed with the batch
                box["reducers"] = [Reducer.remote(i) for i in range(3)]
            out = _batch(box["reducers"], parts, k)
            if read_back:  # a plain call after the reduce sees it, as in Ray
                box.setdefault("read", []).append(
                    ray.get([r.get.remote() for r in box["reducers"]]))
            out = block.finish(out)
        outs.append(out)
        return out
    return Batch(submit)


def _plain(parts, n):
    reducers = [Reducer.remote(i) for i in range(3)]
    answers = [_batch(reducers, parts, k) for k in range(n)]
    return ray.get([r.get.remote() for r in reducers]), [ray.get(a) for a in answers]


def test_an_inferred_stream_takes_the_resident_path_and_reads_as_plain_ray(
        cluster, monkeypatch):
    calls = []
    real_call = irfront.lowering.ops.call_actors
    monkeypatch.setattr(irfront.lowering.ops, "call_actors",
                        lambda *a, **k: calls.append(1) or real_call(*a, **k))
    parts = [ray.put(np.arange(40) + j) for j in range(6)]
    box, outs, n = {}, [], 8
    fed0 = rr.fed_batches()
    MicroBatchStream(interval_s=0.0, max_in_flight=4).run(
        _inferred(box, parts, k, outs, read_back=True) for k in range(n))
    assert not calls, "the driver made no Ray call per reducer"
    assert rr.fed_batches() - fed0 >= n, "batches went to the executors' feeds"
    want_seen, want_answers = _plain(parts, n)
    # read through the program's own handles and refs
    assert ray.get([r.get.remote() for r in box["reducers"]]) == want_seen
    for k, read in enumerate(box["read"]):  # batch k's get ran after batch k's reduce
        assert read == [s[:k + 1] for s in want_seen]
    assert all(irfront.is_deferred(x) for x in outs[0]), "answers stay deferred"
    assert [ray.get(o) for o in outs] == want_answers
    assert not any("Executor" in str(a) for a in ray.util.list_named_actors())


def test_a_reducer_error_reaches_the_program_and_the_stream(cluster):
    parts = [ray.put(np.arange(12) + j) for j in range(3)]
    box, outs = {}, []
    labels = [0, 1, "boom"]
    with pytest.raises(Exception) as err:
        MicroBatchStream(interval_s=0.0, max_in_flight=1).run(
            _inferred(box, parts, k, outs) for k in labels)
    assert "refused batch boom" in str(err.value)
    assert [ray.get(o) for o in outs[:2]] == [[(i, k) for i in range(3)] for k in (0, 1)]
    with pytest.raises(ValueError, match="reducer 0 refused batch boom"):
        ray.get(outs[2][0])
    # Ray keeps the raised error with its object, and the error's traceback this frame:
    # what the frame holds is let go, so the batches' groups end with the test
    box.clear()
    outs.clear()


class _ExactReducer(irfront.CheckpointedReducer):
    """An exactly-once reducer written for plain Ray: numbered calls are irfront's."""

    def __init__(self, i):
        self.i, self.total = i, 0

    @irfront.combines(operator.add)
    def reduce(self, k, *parts):
        self.total += int(sum(int(p.sum()) for p in parts))
        return self.i, k

    def get(self):
        return self.total


ExactReducer = ray.remote(**irfront.REDUCER_OPTIONS)(_ExactReducer)


def test_exactly_once_reducers_under_infer_stay_exact_when_one_is_killed(cluster):
    """A CheckpointedReducer group under infer takes the logged path through Ray (its
    calls answer one by one): a reducer killed mid-stream is restored and replayed, and
    its total is plain Ray's."""
    parts = [ray.put(np.arange(24, dtype=np.int64) + j) for j in range(4)]
    box, n = {}, 8

    def batch(k):
        def submit(start):
            if k == 4:  # a reducer dies between batches; Ray restarts it
                ray.kill(box["reducers"][1]._resolve(), no_restart=False)
            with irfront.infer() as block:
                if "reducers" not in box:
                    box["reducers"] = [ExactReducer.remote(i) for i in range(3)]
                return block.finish(_batch(box["reducers"], parts, k))
        return Batch(submit)

    stream = MicroBatchStream(interval_s=0.0, max_in_flight=2, checkpoint_every=3)
    stream.run(batch(k) for k in range(n))
    want = [int(sum(int(np.array_split(p + 1, 3)[i].sum()) for p in map(ray.get, parts)))
            * n for i in range(3)]
    assert ray.get([r.get.remote() for r in box["reducers"]]) == want
    report = stream.report()
    assert report["lost_calls"] == 0
    assert report["recoveries"] >= 1, "the kill was seen and the reducer restored"
