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
import ray_patch
from irfront import (Batch, InitActors, Map, MicroBatchStream, Objects, ReduceActors,
                     lowering_options, options_for)
from streams import SumReducer, expected_totals, run_stream

from conftest import needs_core

pytestmark = needs_core

RESIDENT = options_for("locality+resident")


def _source(batches: int, parts: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [[rng.integers(0, 100, 64) for _ in range(parts)] for _ in range(batches)]


def test_options_for_names_the_switch():
    assert options_for("locality+resident").resident is True
    assert options_for("locality-noresident").resident is False
    assert "resident" in irfront.lowering.options.SWITCHES


def test_lowering_options_and_quiet_change_only_the_calling_thread():
    """A block of lowering options (and irfront.infer's quiet(), which turns executors
    off for irfront's own calls) must not switch the resident path off for a stream
    running in another thread."""
    import threading
    from irfront.inference.quiet import quiet
    from irfront.lowering.options import get_options, lowering_options
    inside, outside = threading.Event(), threading.Event()
    seen = {}

    def other():
        inside.wait(10)
        seen["other"] = (get_options().enabled("executors"), get_options().scheduler)
        outside.set()

    process = irfront.get_options()
    block = "spread" if process.scheduler == "pack" else "pack"
    t = threading.Thread(target=other)
    t.start()
    with lowering_options(options_for("locality")), quiet(), \
            lowering_options(scheduler=block):
        seen["here"] = (get_options().enabled("executors"), get_options().scheduler)
        inside.set()
        assert outside.wait(10)
    t.join(10)
    assert seen["here"] == (False, block)
    assert seen["other"] == (process.enabled("executors"), process.scheduler)
    assert irfront.get_options() is process


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
    assert run.totals == expected_totals(src, 4)
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
    assert run.totals == expected_totals(src, 4)
    assert run.report.lost_calls == 0
    assert run.report.recoveries, "the kill was seen and recovered"


def test_change_of_partitions_and_reducers_rebuilds(cluster):
    import ray_patch.resident as rr
    a = _source(5, 8, seed=2)
    b = _source(5, 6, seed=3)  # fewer partitions: another placement
    def key(run):  # a route's key: its reducers, exactly-once
        return tuple(h._actor_id.binary() for h in run.reducers.eval()), True

    with lowering_options(RESIDENT):
        r1 = run_stream(a + b, 4, combine=operator.add)
        before = set(rr._routes(ray_patch.get_runtime()))
        r2 = run_stream(a, 3, combine=operator.add)  # other reducers: a new route
    assert r1.totals == expected_totals(a + b, 4)
    assert r2.totals == expected_totals(a, 3)
    routes = rr._routes(ray_patch.get_runtime())  # (earlier tests' routes may go)
    assert key(r1) in before and key(r1) in routes
    assert key(r2) not in before and key(r2) in routes


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


@pytest.mark.timeout(300)  # a hang guard (the fallback must not wait forever), not a speed bound
def test_an_executor_that_does_not_answer_is_bypassed(cluster, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="irfront.stream")
    marker = str(tmp_path / "slowed")
    src = _source(4, 8, seed=5)
    with lowering_options(RESIDENT):
        from streams import SumReducer as R
        reducers = InitActors(R, 4, [(i,) for i in range(4)])

        def batch(parts):
            def submit(start):
                x = Map(_slow_on_executor, Objects(list(parts)), [(marker,)] * len(parts))
                sh = Map(_split4, x, [()] * len(parts), num_returns=4)
                return ReduceActors("reduce", reducers, sh, combine=operator.add)
            return Batch(submit)

        s = MicroBatchStream(interval_s=0.0, max_in_flight=2, restart_timeout_s=2.0)
        s.run(batch(p) for p in src)
    totals = ray.get([h.get_total.remote() for h in reducers.eval()])
    assert totals == expected_totals(src, 4)
    assert s.stats.lost_calls == 0
    assert "did not answer" in caplog.text  # the fallback sent the pieces
    assert s.stats.resident_fallbacks >= 1  # counted as well as logged


@ray.remote
def _split4(part):
    return tuple(np.array_split(part, 4))


def _frames(sock, *frames) -> list:
    """Sends channel pieces on a socket that passed the handshake; returns the
    reducer's replies."""
    from ray_patch import channel, wire
    out = []
    f = sock.makefile("rb")
    for args in frames:
        sock.sendall(wire.dumps(channel.Piece(*args)))
        out.append(wire.loads(wire.read_frame(f)))
    return out


def test_a_channel_applies_pieces_once_and_fences_off_other_epochs(cluster):
    """The reducer side of a channel, driven by hand: pieces are buffered until every
    source sent one, applied once (a piece sent twice counts once), and a piece that
    carries another restore token than the reducer's is answered STALE and not applied
    (a process Ray replaced must not take pieces meant for the restored one)."""
    import socket
    from ray_patch import channel, resident_worker, wire
    h = SumReducer.remote(0)
    addr = ray.get(h.__ray_call__.remote(channel.open_channel, resident_worker.APPLY_PARTIAL,
                                         "reduce"))
    assert addr == ray.get(h.__ray_call__.remote(channel.open_channel,
                                                 resident_worker.APPLY_PARTIAL, "reduce"))
    with socket.create_connection(tuple(addr), timeout=30) as s:
        wire.client_handshake(s, wire.cluster_key())
        # (seq, source, nsources, method, prefix, partial, failed, epoch)
        got = _frames(s, (0, 0, 2, "reduce", (), 5, False, 0),
                      (0, 0, 2, "reduce", (), 5, False, 0),   # sent twice: once
                      (0, 1, 2, "reduce", (), 7, False, 0))
        assert got == [(True, (-1, 0)), (True, (-1, 0)), (True, (0, 0))]
        assert ray.get(h.get_total.remote()) == 12
        ray.get(h.restore.remote(0, {"index": 0, "total": 12}, 99))
        got = _frames(s, (1, 0, 1, "reduce", (), 100, False, 0),   # an old epoch
                      (1, 0, 1, "reduce", (), 1, False, 99))
        assert got == [(True, resident_worker.STALE), (True, (1, 99))]
        # a method no open_channel call allowed is refused, whatever the piece says
        (ok, err), = _frames(s, (2, 0, 1, "restore", (0, None), 0, False, 99))
        assert not ok and isinstance(err, PermissionError)
    assert ray.get(h.get_total.remote()) == 13
    assert ray.get(h.applied_status.remote()) == (1, True)


def test_a_reducers_own_methods_never_run_beside_a_piece():
    """Every method of a CheckpointedReducer class, its subclass's included, holds the
    actor's lock, which the channel threads take to apply a piece."""
    from irfront import CheckpointedReducer, SumReducerBase

    class R(SumReducerBase):
        def take(self):
            return self.total

        async def later(self):  # coroutines are left alone
            return 0

    assert R.take._irf_locked and R.reduce._irf_locked and R.get_total._irf_locked
    assert CheckpointedReducer.apply_partial._irf_locked
    assert not getattr(R.later, "_irf_locked", False)
    import inspect
    assert list(inspect.signature(R.take).parameters) == ["self"]


@ray.remote
def _scribble(part):
    """A task that changes its input in place when Ray lets it (a copy of its own)."""
    if isinstance(part, np.ndarray) and part.flags.writeable:
        part += 1
    return part


def _held(ids: set) -> set:
    """Which of these inputs (ref ids) some resident executor keeps."""
    from ray_patch import current_runtime, executors as ex
    held = set()
    for h in ex.executor_nodes(current_runtime(), "resident").values():
        held |= ids & set(ray.get(h.__ray_call__.remote(lambda self: list(self.inputs))))
    return held


def test_fed_batches_keep_repeated_inputs_and_match_plain_ray(cluster):
    """Batches reading the same inputs go to the executors through their feeds, which
    keep those inputs; a task that writes into its input still sees a fresh copy each
    batch, as under plain Ray (differential: the same tasks run plainly)."""
    import ray_patch.resident as rr
    for size in (8, 1 << 15):  # inlined in the task (a copy), and in the object store
        refs = [ray.put(np.arange(size, dtype=np.int64) + i) for i in range(8)]
        plain = ray.get([_scribble.remote(r) for r in refs])
        fed0 = rr.fed_batches()
        with lowering_options(RESIDENT):
            run = run_stream([refs] * 10, 4, stages=[(_scribble, ())],
                             combine=operator.add)
        assert run.totals == expected_totals([plain] * 10, 4)
        assert run.report.lost_calls == 0
        assert rr.fed_batches() - fed0 >= 10, "fed"
        assert _held({r.binary() for r in refs}), "the executors keep them"


def test_inputs_new_in_every_batch_are_not_kept(cluster):
    src = [[ray.put(p) for p in parts] for parts in _source(6, 8, seed=9)]
    with lowering_options(RESIDENT):
        run = run_stream(src, 4, combine=operator.add)
    assert run.totals == expected_totals([ray.get(p) for p in src], 4)
    assert not _held({r.binary() for parts in src for r in parts})


@ray.remote
def _made_there(seed):
    """Large enough for the object store of the node it runs on."""
    return np.random.default_rng(seed).integers(0, 100, 1 << 15)


def test_new_data_every_batch_goes_in_the_frames_and_stays_exact(cluster):
    """Each batch's own partitions (``ray.put`` in the driver) reach the executors inside
    their feeds' frames, not through a Ray call per node: exact for exactly-once and
    plain reducers, read through the user's handles. Partitions made by a task on
    another node are not the driver's to send: they go through Ray, and stay exact."""
    import ray_patch.resident as rr
    from streams import PlainSum, plain_stream
    parts = _source(14, 8, seed=21)
    src = [[ray.put(p) for p in ps] for ps in parts]
    want = expected_totals(parts, 4)
    fed0, sent0 = rr.fed_batches(), rr.sent_inputs()
    with lowering_options(RESIDENT):
        run = run_stream(src, 4, combine=operator.add)
        assert run.totals == want and run.report.lost_calls == 0
        plain = InitActors(PlainSum, 4)
        got = plain_stream(plain, src)
        assert [t for t, _ in got] == want and all(c == len(src) for _, c in got)
        sent = rr.sent_inputs() - sent0
        assert rr.fed_batches() - fed0 >= 8, "most node-batches were fed"
        assert sent >= 8 * 8, f"the batches' own data went in the frames ({sent})"
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        here = ray.get_runtime_context().get_node_id()
        there = next(n["NodeID"] for n in ray.nodes() if n["Alive"]
                     and n["NodeID"] != here and n["Resources"].get("CPU"))
        make = _made_there.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(there, soft=False))
        remote = [[make.remote(100 * b + i) for i in range(8)] for b in range(6)]
        ray.wait([r for ps in remote for r in ps], num_returns=48, fetch_local=False)
        sent0 = rr.sent_inputs()
        run = run_stream(remote, 4, combine=operator.add)
    assert run.totals == expected_totals([ray.get(p) for p in remote], 4)
    assert rr.sent_inputs() == sent0, "another node's objects are not sent by the driver"


# ---- plain actors keep Ray's actor semantics on the resident path --------------------
def test_a_restarted_plain_reducer_gets_every_later_batch(cluster):
    """Killed and restarted by Ray between two streams, a plain reducer applies every
    batch of the second one (a fresh state: Ray's restart), as it does without the
    resident path."""
    from streams import PlainSum, plain_stream
    parts = [np.arange(64) + k for k in range(8)]
    src = [[ray.put(p) for p in parts]] * 10
    reducers = InitActors(PlainSum, 3)
    with lowering_options(RESIDENT):
        first = plain_stream(reducers, src)
        assert [c for _, c in first] == [10] * 3
        for h in reducers.eval():
            ray.kill(h, no_restart=False)
        deadline = time.monotonic() + 60
        for h in reducers.eval():  # until each answers again (a new process)
            while True:
                try:
                    if ray.get(h.get.remote(), timeout=10) == (0, 0):
                        break
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                    pass
                assert time.monotonic() < deadline, "the reducer never came back"
                time.sleep(0.2)
        second = plain_stream(reducers, src)
    assert second == [(t, 10) for t in expected_totals([parts] * 10, 3)]


@ray.remote
class _Probe:
    """Plain actor: ``reduce`` holds ``busy`` for a while; ``probe`` reports whether it
    ever ran while a reduce was running."""

    def __init__(self):
        self.busy, self.overlaps, self.total = False, 0, 0

    def reduce(self, *partials):
        self.busy = True
        time.sleep(0.01)
        self.total += int(sum(int(p.sum()) for p in partials))
        self.busy = False

    def probe(self):
        self.overlaps += self.busy
        return self.overlaps

    def get(self):
        return self.total


def test_plain_actor_methods_never_run_beside_a_piece(cluster):
    """A plain actor runs one method at a time (Ray's default): a method called while
    the stream's pieces arrive on its channel never sees one half-applied."""
    import threading
    reducers = InitActors(_Probe, 2)
    parts = [np.arange(32) + k for k in range(8)]
    src = [[ray.put(p) for p in parts]] * 30
    stop = threading.Event()
    seen: list = []

    def probe():
        hs = reducers.eval()
        while not stop.is_set():
            seen.append(sum(ray.get([h.probe.remote() for h in hs])))

    with lowering_options(RESIDENT):
        reducers.eval()
        t = threading.Thread(target=probe)
        t.start()
        try:
            def batch(ps):
                def submit(start):
                    sh = Map(_split2, Objects(list(ps)), [()] * len(ps), num_returns=2)
                    return ReduceActors("reduce", reducers, sh, combine=operator.add)
                return Batch(submit)
            MicroBatchStream(interval_s=0.0, max_in_flight=3).run(batch(p) for p in src)
        finally:
            stop.set()
            t.join(60)
    assert len(seen) > 5
    assert seen[-1] == 0, "a method ran beside a piece"
    want = [sum(int(np.array_split(p, 2)[i].sum()) for p in parts) * 30 for i in range(2)]
    assert ray.get([h.get.remote() for h in reducers.eval()]) == want


@ray.remote
def _split2(part):
    return tuple(np.array_split(part, 2))


@ray.remote
class _AsyncSum:
    def __init__(self):
        self.total = 0

    async def reduce(self, *partials):
        import asyncio
        await asyncio.sleep(0)
        self.total += int(sum(int(p.sum()) for p in partials))

    async def get(self):
        return self.total


def test_async_reducer_methods_are_awaited(cluster):
    """An async actor's reduce is awaited by Ray (the resident path keeps off it)."""
    reducers = InitActors(_AsyncSum, 2)
    parts = [np.arange(16) + k for k in range(4)]

    def batch(ps):
        def submit(start):
            sh = Map(_split2, Objects(list(ps)), [()] * len(ps), num_returns=2)
            return ReduceActors("reduce", reducers, sh, combine=operator.add)
        return Batch(submit)

    with lowering_options(RESIDENT):
        MicroBatchStream(interval_s=0.0).run(batch(parts) for _ in range(5))
    want = [sum(int(np.array_split(p, 2)[i].sum()) for p in parts) * 5 for i in range(2)]
    assert ray.get([h.get.remote() for h in reducers.eval()]) == want


@ray.remote
class _Ephemeral:
    """A plain reducer made and dropped by every stream of the lifecycle test."""

    def __init__(self):
        self.total = 0

    def reduce(self, *partials):
        self.total += int(sum(int(p.sum()) for p in partials))

    def get(self):
        return self.total


def _alive(class_name: str) -> int:
    from ray._private.state import actors
    return sum(1 for a in actors().values()
               if a["State"] == "ALIVE" and a["ActorClassName"] == class_name)


@pytest.mark.parametrize("mode", [  # without resident: in `make test-slow`
    "locality", pytest.param("locality-noresident", marks=pytest.mark.slow)])
def test_streams_made_and_dropped_leave_no_actor_alive(cluster, mode):
    """Four streams, each with InitActors of its own, closed and dropped: every reducer
    ends, as plain Ray's actors do when their last handle goes (no cache of irfront's
    keeps one alive), on the resident path and without it."""
    import gc
    parts = [np.arange(32) + k for k in range(4)]

    def one_stream():  # its InitActors, refs and stream go when it returns
        reducers = InitActors(_Ephemeral, 3)
        src = [ray.put(p) for p in parts]

        def batch(j):
            def submit(start):
                sh = Map(_split3, Objects(src), [()] * len(src), num_returns=3)
                return ReduceActors("reduce", reducers, sh, combine=operator.add)
            return Batch(submit)

        s = MicroBatchStream(interval_s=0.0)
        s.run(batch(j) for j in range(3))
        want = sum(int(p.sum()) for p in parts) * 3
        assert sum(ray.get([h.get.remote() for h in reducers.eval()])) == want
        s.close()

    with lowering_options(options_for(mode)):
        for _ in range(4):
            one_stream()
    gc.collect()
    deadline = time.monotonic() + 60
    while _alive("_Ephemeral") and time.monotonic() < deadline:
        time.sleep(0.5)
        gc.collect()
    assert _alive("_Ephemeral") == 0


def test_two_pipelines_interleaved_in_one_driver_are_both_fed(cluster):
    """Batches of two pipelines (their own inputs and reducers) alternate in one driver:
    each keeps its inputs on the executors and is fed, and both stay exact."""
    import ray_patch.resident as rr
    from streams import PlainSum
    pipes = []
    for seed in (1, 2):
        parts = [np.arange(64) * seed + k for k in range(8)]
        pipes.append((InitActors(PlainSum, 2), [ray.put(p) for p in parts], parts))

    def batch(red, refs):
        def submit(start):
            sh = Map(_split2, Objects(refs), [()] * len(refs), num_returns=2)
            return ReduceActors("reduce", red, sh, combine=operator.add)
        return Batch(submit)

    fed0 = rr.fed_batches()
    with lowering_options(RESIDENT):
        MicroBatchStream(interval_s=0.0, max_in_flight=2).run(
            batch(*pipes[k % 2][:2]) for k in range(24))
    fed = rr.fed_batches() - fed0
    assert fed >= 12, f"only {fed} node-batches fed"
    for red, _, parts in pipes:
        got = ray.get([h.get.remote() for h in red.eval()])
        assert got == [(t, 12) for t in expected_totals([parts] * 12, 2)]
