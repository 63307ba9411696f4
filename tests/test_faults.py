"""Faults during a streaming run on the IR driver (MicroBatchStream with exactly-once
reducers): a worker killed mid-stage, a reducer killed (by Ray or from inside), a node
removed. Each run's final reducer totals must equal plain Python's exactly: no
micro-batch lost, none counted twice."""
from __future__ import annotations

import gc
import operator
import os
import time

import numpy as np
import pytest
import ray

import irfront
import ray_patch
from conftest import needs_core
from irfront import REDUCER_OPTIONS, SumReducerBase
import streams
from streams import run_stream

pytestmark = [needs_core, pytest.mark.timeout(240)]

NUM_BATCHES = 12
PARTS = 4
REDUCERS = 3
K = 3
WINDOW = 3
# 40k int64 per partition: stage outputs and shuffle pieces (> 100 KB) live in the
# nodes' object stores, not inlined, so a node's death really loses some of them.
PART_LEN = 40_000


def source(num_batches=NUM_BATCHES, parts=PARTS, seed=7):
    rng = np.random.default_rng(seed)
    for _ in range(num_batches):
        yield [rng.integers(0, 1000, PART_LEN, dtype=np.int64) for _ in range(parts)]


def expected(reducers=REDUCERS):
    """What each reducer must hold: computed here, without Ray."""
    totals = [0] * reducers
    for parts in source():
        for p in parts:
            for i, c in enumerate(np.array_split(p * 3, reducers)):
                totals[i] += int(c.sum())
    return totals


@ray.remote
def triple(part):
    return part * 3


@ray.remote
def crash_once(marker, part):
    """Kills its own worker the first time it sees no marker file."""
    if marker is not None and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        os._exit(1)
    return part


@ray.remote(**REDUCER_OPTIONS)
class ExitingReducer(SumReducerBase):
    """A sum reducer whose process exits inside call ``crash_at`` once (marker file)."""

    def __init__(self, index, crash_at=None, marker=None):
        super().__init__(index)
        self.crash_at, self.marker = crash_at, marker

    def apply_batch(self, seq, method, *args):
        self._irf_init()
        if seq == self.crash_at and self.marker and not os.path.exists(self.marker) \
                and not self._irf_stale:
            open(self.marker, "w").close()
            os._exit(1)
        return super().apply_batch(seq, method, *args)


def run(**kw):
    kw.setdefault("stages", [(triple, ())])
    out = run_stream(source(), kw.pop("num_reducers", REDUCERS), checkpoint_every=K,
                     max_in_flight=WINDOW, **kw)
    print(out.report.summary(), out.report.recoveries)  # pytest -s (RELIABILITY.md)
    return out


@pytest.fixture(autouse=True)
def clean(cluster, scheduler_mode):
    irfront.init(scheduler="locality")
    yield
    gc.collect()
    assert ray_patch.core_group_count() == 0


def exact(out, n=REDUCERS):
    assert [int(v) for v in out.totals] == expected(n)
    assert out.report.lost_calls == 0


def test_fault_free_run_matches_the_sums_and_checkpoints():
    out = run()
    exact(out)
    assert not out.report.recoveries
    # K=3 over 12 batches: 4 checkpoints per reducer; kept calls bounded by K + window.
    assert out.report.checkpoints == 4 * REDUCERS
    assert out.report.kept_peak <= K + WINDOW + 1
    assert out.report.backpressure["peak_in_flight"] <= WINDOW


def test_worker_killed_mid_stage_is_retried(tmp_path):
    marker = str(tmp_path / "crashed")
    out = run(stages=[(triple, ()), (crash_once, (marker,))])
    assert os.path.exists(marker)  # a worker did die mid-stage
    exact(out)


@pytest.mark.parametrize("combine", [None, operator.add])
def test_reducer_killed_by_ray_comes_back_from_checkpoint(combine):
    """Also with each node's pieces merged per reducer (combine=): the merged calls are
    logged and replayed like any other."""
    def kill(k, run):
        if k == 5:
            ray.kill(run.reducers.eval()[1], no_restart=False)

    out = run(on_batch=kill, combine=combine)
    exact(out)
    assert [r["reducer"] for r in out.report.recoveries] == [1]
    assert out.report.replayed >= 1


def test_reducer_exiting_inside_apply_is_restored_and_replayed(tmp_path):
    marker = str(tmp_path / "reducer-exited")
    args = [(i, 7 if i == 0 else None, marker) for i in range(REDUCERS)]
    out = run(reducer=ExitingReducer, reducer_args=args)
    assert os.path.exists(marker)
    exact(out)
    rec = out.report.recoveries
    assert rec and rec[0]["reducer"] == 0 and rec[0]["checkpoint_seq"] <= 7


def test_node_removed_mid_stream(cluster):
    # A node added to the shared cluster for this test and removed mid-stream (only it).
    node = cluster.add_node()
    ray_patch.refresh_nodes()
    rt = ray_patch.get_runtime()
    dead_hex = node.node_id
    n = 5  # one reducer per node of the 5, so one lives on the node that goes away
    seen_after: list[set] = []
    removed_at: list[float] = []
    # IRF_PROBE_RAYLETS=1: also probe the raylets (ray_patch's opt-in TCP probe), for the
    # probe on/off figures of docs/RELIABILITY.md.
    probe = os.environ.get("IRF_PROBE_RAYLETS") == "1"
    ray_patch.configure(probe_raylets=probe)

    def remove(k, run):
        if k == 0:
            where = [ray.get(h.where.remote())[0] for h in run.reducers.eval()]
            assert dead_hex in where, (dead_hex, where)
        if k == 4:
            removed_at.append(time.time())
            cluster.remove_node(node)
        if k > 4:  # the stage group (triple fused into split) avoids the dead node
            seen_after.append(set((run.last["split"].placement().counts or {}).keys()))

    try:
        out = run(on_batch=remove, num_reducers=n)
        ended = time.time()
    finally:  # leave the shared cluster in its asked shape, whatever happened
        ray_patch.configure(probe_raylets=False)
        if node in cluster.worker_nodes:
            cluster.remove_node(node)
        ray_patch.refresh_nodes()
    rec = out.report.recoveries[0] if out.report.recoveries else {}
    print(f"node removed (probe {'on' if probe else 'off'}): reducer back "
          f"{rec.get('at', float('nan')) - removed_at[0]:.2f} s after the removal "
          f"({rec.get('seconds', float('nan')):.2f} s in _recover), stream done "
          f"{ended - removed_at[0]:.2f} s after it")
    exact(out, n)
    assert out.report.recoveries, "the reducer on the removed node was not recovered"
    assert out.report.recoveries[0]["node"] != dead_hex  # restarted elsewhere
    # Once the failure was seen, no later group went to the dead node.
    assert dead_hex not in set().union(*seen_after[-3:])
    assert dead_hex not in rt.alive_nodes()
    # Seen dead in Ray's node table (the GCS health checks: irfront.cluster.HEALTH_CHECK),
    # or by the raylet probe when it is on.
    assert out.report.node_failures == [dead_hex]


@pytest.mark.parametrize("seed", [1, 2])
def test_reducers_read_from_another_thread_are_the_streams(seed):
    """The README's pattern: the program's own thread reads ``reducers.eval()`` (in a
    loop, from before the first batch) while the stream runs, and kills one reducer at a
    random moment through that handle. One InitActors has one set of actors whoever
    evaluates it first: the user's handles hold the exact sums, and the one fault brings
    back the one reducer it hit (no cascade over the others)."""
    import random
    import threading
    rng = random.Random(seed)
    reducers = irfront.InitActors(streams.SumReducer, REDUCERS,
                                  [(i,) for i in range(REDUCERS)])
    state: dict = {"handles": set(), "killed": None, "reducers": reducers}
    stop = threading.Event()

    def reader():
        kill_at = time.monotonic() + rng.uniform(0.5, 2.5)
        while not stop.is_set():
            red = state["reducers"]
            if red is not None:
                hs = red.eval()
                state["handles"].add(tuple(h._actor_id.hex() for h in hs))
                if state["killed"] is None and time.monotonic() > kill_at:
                    i = rng.randrange(len(hs))
                    ray.kill(hs[i], no_restart=False)
                    state["killed"] = i
            time.sleep(0.001)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        out = run(reducers=reducers, interval_s=0.05)
    finally:
        stop.set()
        t.join(timeout=30)
    exact(out)  # read through reducers.eval(): the user's handles
    assert len(state["handles"]) == 1, "the program saw more than one set of actors"
    assert state["handles"] == {tuple(h._actor_id.hex() for h in out.reducers.eval())}
    recovered = {r["reducer"] for r in out.report.recoveries}
    if state["killed"] is not None:
        assert recovered <= {state["killed"]}, out.report.recoveries
    assert len(out.report.recoveries) <= 2, out.report.recoveries
