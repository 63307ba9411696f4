"""irfront's Ray metrics, read back from the local cluster's metrics endpoints (Prometheus
text over HTTP on 127.0.0.1: each node's metrics agent serves its own
``MetricsExportPort``). A stream runs with a reducer killed mid-stream; then the test
polls every node's endpoint (bounded: at most POLL_S seconds, POLL_MAX fetches per
node) until the driver's metrics show every batch. Needs ray[default] (the agents)."""
from __future__ import annotations

import gc
import time
import urllib.request
import uuid

import numpy as np
import pytest
import ray

import irfront
import ray_patch
from conftest import needs_core
from streams import run_stream

pytest.importorskip("ray.dashboard.optional_deps",
                    reason="Ray's metrics agent needs ray[default] (pip install "
                           "-c constraints.txt 'ray[default]')")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

pytestmark = [needs_core, pytest.mark.timeout(240)]

NUM_BATCHES = 8
REDUCERS = 2
POLL_S = 60.0  # metrics_report_interval_ms sets the pace (2 s in the session cluster)
POLL_MAX = 120
POLL_EVERY_S = 0.5


def fetch(host: str, port: int) -> list:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name.startswith("ray_irfront_")]


def samples(cluster) -> list:
    out = []
    for host, port in cluster.metrics_ports().values():
        try:
            out += fetch(host, port)
        except OSError:  # an agent not serving yet
            pass
    return out


def value(found: list, name: str, **labels) -> float | None:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    vals = [s.value for s in found if s.name == name
            and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(vals) if vals else None


@pytest.fixture(autouse=True)
def clean(cluster, scheduler_mode):
    irfront.init(scheduler="locality")
    yield
    gc.collect()


def test_metrics_reach_the_prometheus_endpoint(cluster):
    ports = cluster.metrics_ports()
    assert len(ports) == len(cluster.node_ids()), ports  # one endpoint per node
    assert len({p for _, p in ports.values()}) == len(ports)  # each its own port
    assert all(h == "127.0.0.1" for h, _ in ports.values())

    name = f"metrics-{uuid.uuid4().hex[:8]}"  # this test's own series
    rng = np.random.default_rng(3)
    source = [[rng.integers(0, 100, 1000, dtype=np.int64) for _ in range(3)]
              for _ in range(NUM_BATCHES)]

    def kill(k, run):
        if k == 3:
            ray.kill(run.reducers.eval()[1], no_restart=False)

    out = run_stream(source, REDUCERS, checkpoint_every=2, max_in_flight=2,
                     on_batch=kill, name=name)
    assert out.report.lost_calls == 0
    recoveries = len(out.report.recoveries)
    assert recoveries >= 1
    ray_patch.group_count()  # applies queued frees: the live-groups gauge is set

    t0 = time.perf_counter()
    found: list = []
    for attempt in range(POLL_MAX):
        found = samples(cluster)
        if (value(found, "ray_irfront_batch_latency_seconds_count", stream=name)
                or 0) >= NUM_BATCHES and \
                (value(found, "ray_irfront_recoveries_total", stream=name) or 0) >= 1:
            break
        if time.perf_counter() - t0 > POLL_S:
            break
        time.sleep(POLL_EVERY_S)
    waited = time.perf_counter() - t0
    print(f"metrics exported {waited:.1f} s after the run ({attempt + 1} polls); "
          f"{len({s.name for s in found})} irfront series")
    names = sorted({s.name for s in found})
    assert value(found, "ray_irfront_batch_latency_seconds_count", stream=name) == \
        NUM_BATCHES, names
    assert value(found, "ray_irfront_batch_held_back_seconds_count", stream=name) == \
        NUM_BATCHES
    lat_sum = value(found, "ray_irfront_batch_latency_seconds_sum", stream=name)
    assert 0 < lat_sum < out.report.elapsed_s * NUM_BATCHES
    assert value(found, "ray_irfront_batches_in_flight", stream=name) == 0
    assert value(found, "ray_irfront_recoveries_total", stream=name) == recoveries
    # ray_patch's: one solve and one bytes-moved sample per placed group (>= one per
    # batch: the fused stage group), the live-groups gauge.
    assert value(found, "ray_irfront_placement_solve_seconds_count",
                 policy="locality") >= NUM_BATCHES
    assert value(found, "ray_irfront_group_bytes_moved_count",
                 policy="locality") >= NUM_BATCHES
    assert value(found, "ray_irfront_placement_solve_seconds_sum", policy="locality") > 0
    assert value(found, "ray_irfront_live_groups") is not None


def test_metrics_cost_per_record(cluster):
    """A record is a few microseconds of driver time (a batch makes about 4 + 3 per
    group): printed for docs, bounded loosely (the 2-core machine is shared)."""
    from irfront.drivers.metrics import StreamMetrics
    from ray_patch import metrics
    m = StreamMetrics("cost")
    n = 2000
    t0 = time.perf_counter()
    for i in range(n):
        m.batch_opened(0.0, 1)
        m.batch_done(0.01, 0)
    per_stream = (time.perf_counter() - t0) / (2 * n)
    t0 = time.perf_counter()
    for i in range(n):
        metrics.placed("locality", 0.5, 1 << 20)
    per_group = (time.perf_counter() - t0) / n
    print(f"stream record {per_stream * 1e6:.1f} us (two values each), placement record "
          f"{per_group * 1e6:.1f} us (two histograms)")
    assert per_stream < 500e-6 and per_group < 500e-6
