"""bench/baselines.py: each hand-written Ray baseline of the streaming benchmark gives the
reducer sums that plain Python gives, on a tiny shape (and records one latency per
reducer per tagged batch)."""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest
import ray

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import baselines as bl  # noqa: E402
from baseline_cgraph import CompiledGraphDriver  # noqa: E402

pytestmark = pytest.mark.timeout(300)

DATA_MB, PARTITIONS, MAPS, REDUCERS, BATCHES = 0.01, 6, 2, 3, 3


@pytest.mark.parametrize("name", bl.PLAIN_BASELINES)
def test_plain_baseline_sums_match_python(cluster, name):
    bl.ship_by_value()
    layout = bl.Layout(bl.cpu_node_ids(), PARTITIONS, MAPS, REDUCERS)
    copies = bl.broadcast_copies(layout, DATA_MB)
    reducers = bl.start_reducers(layout)
    for k in range(BATCHES):
        ray.get(bl.SUBMIT[name](layout, copies, reducers, time.time(), (name, k)))
    totals = ray.get([a.get_total.remote() for a in reducers])
    np.testing.assert_allclose(totals, bl.reference_sums(DATA_MB, PARTITIONS, REDUCERS,
                                                         BATCHES), rtol=1e-12)
    records = [r for recs in ray.get([a.take_records.remote() for a in reducers])
               for r in recs]
    assert sorted(tag for tag, _ in records) == sorted(
        (name, k) for k in range(BATCHES) for _ in range(REDUCERS))
    assert all(lat >= 0 for _, lat in records)
    for a in reducers:
        ray.kill(a)


@pytest.mark.parametrize("name", bl.PLAIN_BASELINES)
def test_new_data_baselines_with_work_match_python(cluster, name):
    """The new-data baselines (each batch's own partitions, put by the driver) with
    computing stages give the sums plain Python gives on the same batches."""
    bl.ship_by_value()
    layout = bl.Layout(bl.cpu_node_ids(), PARTITIONS, MAPS, REDUCERS)
    reducers = bl.start_reducers(layout)
    batches = [bl.new_partitions(DATA_MB, PARTITIONS, seed) for seed in range(BATCHES)]
    for k, parts in enumerate(batches):
        ray.get(bl.SUBMIT_NEW[name](layout, parts, reducers, time.time(), None, 2))
    want = np.zeros(REDUCERS)
    for parts in batches:
        for p in parts:
            x = p
            for _ in range(MAPS):
                x = bl.burn(x, 2)
            want += bl.shuffle_sums(x, REDUCERS)
    totals = ray.get([a.get_total.remote() for a in reducers])
    np.testing.assert_allclose(totals, want, rtol=1e-12)
    for a in reducers:
        ray.kill(a)


def test_work_reps_calibrates_to_the_asked_time():
    assert bl.work_reps(1000, 0) == (0, 0.0)
    reps, per_pass_ms = bl.work_reps(1 << 16, 5.0)
    assert reps >= 1 and per_pass_ms > 0
    assert bl.burn(np.zeros(4), 0) is not None and bl.burn(np.zeros(4), 1)[0] == 1.0


def test_layout_spreads_partitions_and_reducers_evenly():
    layout = bl.Layout(["a", "b", "c", "d"], 16, 2, 8)
    assert layout.parts_on == [4, 4, 4, 4]
    assert [layout.node_of_reducer(r) for r in range(8)] == [0, 1, 2, 3] * 2
    with pytest.raises(ValueError, match="node_ids"):
        bl.Layout([], 16, 2, 8)


@pytest.fixture
def own_cluster(cluster):
    """A 2-node cluster of its own for the compiled graph: on Ray 2.60 a raylet can die at
    a compiled graph's teardown, and the session's shared cluster must survive it. The
    driver stays connected to the shared cluster; the graph's own driver process joins
    this one by address."""
    from ray.cluster_utils import Cluster
    args = {"num_cpus": 2, "node_ip_address": "127.0.0.1",
            "object_store_memory": 150 * 1024 * 1024}
    c = Cluster(initialize_head=True, connect=False,
                head_node_args={**args, "include_dashboard": False})
    try:
        c.add_node(**args)
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()


@pytest.mark.slow  # a cluster of its own (about 15 s on 2 cores): `make test-slow`
def test_compiled_graph_sums_match_python(own_cluster):
    drv = CompiledGraphDriver(own_cluster.address, partitions=PARTITIONS, maps=MAPS,
                              reducers=REDUCERS, sizes=[DATA_MB], max_in_flight=2,
                              warmup=0, start_timeout_s=240, finish_timeout_s=120)
    assert drv.start(), drv.error
    for k in range(BATCHES):
        drv.submit(0, time.time(), ["compiled-graph", k])
        time.sleep(0.05)
    out = drv.finish()
    assert out is not None, drv.error
    np.testing.assert_allclose(out["totals"], bl.reference_sums(DATA_MB, PARTITIONS,
                                                                REDUCERS, BATCHES),
                               rtol=1e-12)
    assert sorted(t for t, _ in out["records"]) == sorted(
        ("compiled-graph", k) for k in range(BATCHES) for _ in range(REDUCERS))
    assert set(out["cpu_s"]) == {("compiled-graph", k) for k in range(BATCHES)}
