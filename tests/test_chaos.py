"""The short fault matrix (bench/chaos.py): every lowering configuration runs a stream of
exactly-once reducers while another thread injects faults at random moments (reducers
killed or SIGKILLed, task workers SIGKILLed, executors killed, a node removed or its
raylet SIGKILLed); durable drivers are SIGKILLed several times in a row and resumed.
Sums and call counts are read through the program's own reducer handles.

Seeded: ``IRF_CHAOS_SEED=N pytest tests/test_chaos.py`` replays seed N (default 1);
``make chaos`` runs the long matrix and writes docs/RELIABILITY.md's table.
"""
from __future__ import annotations

import gc
import time
import os
import sys

import pytest

from conftest import ROOT, needs_core

sys.path.insert(0, os.path.join(ROOT, "bench"))
import chaos  # noqa: E402

pytestmark = [needs_core, pytest.mark.timeout(300)]

SEED = int(os.environ.get("IRF_CHAOS_SEED", "1"))
PLAN = chaos.short_plan(SEED)


@pytest.fixture(autouse=True)
def locality(cluster, scheduler_mode):
    import irfront
    import ray_patch
    irfront.init(scheduler="locality")
    yield
    # A run's nodes (closures in its batches) go, and their groups with them: at once,
    # or once the threads that still answer a dead node's calls end (bounded wait).
    deadline = time.monotonic() + 20
    while True:
        gc.collect()
        if ray_patch.group_count() == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    rt = ray_patch.current_runtime()
    left = [(r.group_id, r.name, r.policy) for r in rt.groups.values()] if rt else []
    assert ray_patch.group_count() == 0, f"a run left groups behind: {left}"


def test_the_short_matrix_covers_every_configuration_and_fault_kind():
    assert {c.name for c, _ in PLAN} == set(chaos.CONFIG_BY_NAME)
    assert {k for _, ks in PLAN for k in ks} == set(chaos.FAULTS)


@pytest.mark.parametrize("cfg,kinds", PLAN, ids=[f"{c.name}-{'+'.join(k)}" for c, k in PLAN])
def test_exact_under_random_faults(cluster, cfg, kinds):
    j = PLAN.index((cfg, kinds))
    res = chaos.run_one(cluster, cfg, kinds, SEED * 1000 + j, batches=20)
    assert not res.problems(), (res.problems(), res.faults)
    # The faults really happened (an injector that hit nothing would prove nothing).
    assert res.injected == len(kinds), [f["skipped"] for f in res.faults]
    if cfg.shared:  # the faults hit batches the resident executors were fed
        assert res.fed > 0
    if cfg.put:  # and batches whose new data the driver sent in the frames
        assert res.fed > 0 and res.sent > 0, (res.fed, res.sent)
    # A fault aimed at a reducer brought it back from a checkpoint and a replay.
    for f in res.faults:
        if f["kind"] in chaos.REDUCER_FAULTS:
            assert f["reducer"] in res.recovered_reducers, res.faults


def test_durable_driver_sigkilled_three_times_then_resumed(cluster, tmp_path):
    res = chaos.run_durable(cluster.address, str(tmp_path), SEED * 1000 + 500, kills=3,
                            batches=24)
    assert not res.problems(), (res.problems(), res.faults)
    assert res.injected >= 2, res.faults  # at least two drivers died mid-stream


def test_resident_reducers_on_a_killed_raylet(cluster):
    """A raylet SIGKILLed under the resident path: its reducer's process outlives it for
    a while, and executors' channels still reach it after Ray restarted the reducer
    elsewhere. Found by the long matrix (a hang: the restored reducer's later calls were
    never confirmed); the restore epochs fence the old process off."""
    cfg = chaos.CONFIG_BY_NAME["default+combine"]  # resident: the default
    res = chaos.run_one(cluster, cfg, ["raylet-kill"], SEED * 1000 + 8, batches=30)
    assert not res.problems(), (res.problems(), res.faults)
    assert res.injected == 1, res.faults
