"""Faults during a streaming run (irfront.recovery.ReliableStream): a worker killed
mid-stage, a reducer killed (by Ray or from inside), a node removed. Each run's final
reducer states must equal a fault-free run of the same input exactly: no micro-batch
lost, none counted twice."""
from __future__ import annotations

import os

import numpy as np
import pytest
import ray

import ray_patch
from conftest import needs_core
from irfront.recovery import (REDUCER_OPTIONS, RecoverySettings, ReliableStream,
                              SumReducer, SumReducerBase)

pytestmark = [needs_core, pytest.mark.timeout(240)]

NUM_BATCHES = 12
PARTS = 4
REDUCERS = 3
# 40k int64 per partition: stage outputs and shuffle pieces (> 100 KB) live in the
# nodes' object stores, not inlined, so a node's death really loses some of them.
PART_LEN = 40_000
SETTINGS = RecoverySettings(checkpoint_every=3, max_in_flight=3, restart_timeout_s=90)


def source(num_batches=NUM_BATCHES, parts=PARTS, seed=7):
    rng = np.random.default_rng(seed)
    for _ in range(num_batches):
        yield [rng.integers(0, 1000, PART_LEN, dtype=np.int64) for _ in range(parts)]


def expected_states(num_batches=NUM_BATCHES, reducers=REDUCERS):
    """What each reducer must hold: computed here, without Ray."""
    totals = [0] * reducers
    for parts in source(num_batches):
        for p in parts:
            for i, c in enumerate(np.array_split(p * 3, reducers)):
                totals[i] += int(c.sum())
    return totals


@ray.remote
def triple(part):
    return part * 3


@ray.remote
def crash_once(part, marker):
    """Kills its own worker the first time it sees a marker-free directory."""
    if marker is not None and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        os._exit(1)
    return part


@ray.remote
def split(part, n):
    return tuple(np.array_split(part, n)) if n > 1 else part


@ray.remote(**REDUCER_OPTIONS)
class ExitingReducer(SumReducerBase):
    """A sum reducer whose process exits inside apply(crash_at) once (marker file)."""

    def __init__(self, index, crash_at=None, marker=None):
        super().__init__(index)
        self.crash_at, self.marker = crash_at, marker

    def apply(self, seq, *pieces):
        if seq == self.crash_at and self.marker and not os.path.exists(self.marker) \
                and not self.needs_restore:
            open(self.marker, "w").close()
            os._exit(1)
        return super().apply(seq, *pieces)


def run(reducer=SumReducer, stages=(triple,), on_batch=None, reducer_args=None,
        num_reducers=REDUCERS, settings=SETTINGS):
    with ReliableStream(reducer, num_reducers, list(stages), split, settings,
                        reducer_args=reducer_args) as s:
        report = s.run(source(), on_batch=on_batch)
        states = s.states()
    print(report.summary(), report.recoveries)  # shown with pytest -s (RELIABILITY.md)
    return states, report


@pytest.fixture(scope="module")
def baseline(cluster):
    states, report = run()
    assert report.lost_batches == 0 and not report.recoveries
    assert [int(v) for _, v in states] == expected_states()
    return states


def same(states, baseline):
    assert [s for s, _ in states] == [NUM_BATCHES - 1] * REDUCERS
    assert [int(v) for _, v in states] == [int(v) for _, v in baseline]


@pytest.fixture(autouse=True)
def no_groups_left(cluster):
    yield
    assert ray_patch.core_group_count() == 0


def test_fault_free_run_matches_the_sums_and_checkpoints(baseline):
    states, report = run()
    same(states, baseline)
    # K=3 over 12 batches: 4 checkpoints per reducer; kept inputs bounded by K + window.
    assert report.checkpoints == 4 * REDUCERS
    assert report.kept_peak <= SETTINGS.checkpoint_every + SETTINGS.max_in_flight + 1
    assert report.backpressure["peak_in_flight"] <= SETTINGS.max_in_flight


def test_worker_killed_mid_stage_is_retried(baseline, tmp_path):
    marker = str(tmp_path / "crashed")
    states, report = run(stages=(triple, (crash_once, (marker,))))
    assert os.path.exists(marker)  # a worker did die mid-stage
    same(states, baseline)
    assert report.lost_batches == 0


def test_reducer_killed_by_ray_comes_back_from_checkpoint(baseline):
    def kill(seq, stream):
        if seq == 5:
            ray.kill(stream.handles[1], no_restart=False)

    states, report = run(on_batch=kill)
    same(states, baseline)
    assert [r["reducer"] for r in report.recoveries] == [1]
    assert report.replayed >= 1 and report.lost_batches == 0


def test_reducer_exiting_inside_apply_is_restored_and_replayed(baseline, tmp_path):
    marker = str(tmp_path / "reducer-exited")
    args = [(i, 7 if i == 0 else None, marker) for i in range(REDUCERS)]
    states, report = run(reducer=ExitingReducer, reducer_args=args)
    assert os.path.exists(marker)
    same(states, baseline)
    rec = report.recoveries
    assert rec and rec[0]["reducer"] == 0 and rec[0]["checkpoint_seq"] <= 7
    assert report.lost_batches == 0


def test_node_removed_mid_stream(cluster, baseline):
    # A node added to the shared cluster for this test and removed mid-stream (only it).
    node = cluster.add_node()
    ray_patch.refresh_nodes()
    rt = ray_patch.get_runtime()
    dead_hex = node.node_id
    n = 5  # one reducer per node of the 5, so one lives on the node that goes away
    seen_after: list[set] = []

    def remove(seq, stream):
        if seq == 0:
            where = [ray.get(h.ping.remote())[0] for h in stream.handles]
            assert dead_hex in where, (dead_hex, where)
        if seq == 4:
            cluster.remove_node(node)
        if seq > 4:  # stage groups placed after the failure avoid the dead node
            for g in stream._groups.get(seq, [])[:-1]:
                seen_after.append(set((ray_patch.placement(g) or {}).keys()))

    try:
        states, report = run(on_batch=remove, num_reducers=n)
    finally:  # leave the shared cluster in its asked shape, whatever happened
        if node in cluster.worker_nodes:
            cluster.remove_node(node)
        ray_patch.refresh_nodes()
    exp = [0] * n
    for parts in source():
        for p in parts:
            for i, c in enumerate(np.array_split(p * 3, n)):
                exp[i] += int(c.sum())
    assert [int(v) for _, v in states] == exp
    assert [s for s, _ in states] == [NUM_BATCHES - 1] * n
    assert report.lost_batches == 0
    assert report.recoveries, "the reducer on the removed node was not recovered"
    rec = report.recoveries[0]
    assert rec["node"] != dead_hex  # restarted elsewhere
    # Once the failure was seen, no later group went to the dead node.
    assert dead_hex not in set().union(*seen_after[-3:])
    assert dead_hex not in rt.alive_nodes()
    # Seen at the reducer's failure (its raylet refuses connections), before the GCS.
    assert report.node_failures == [dead_hex]
