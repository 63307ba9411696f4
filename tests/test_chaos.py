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
# A node fault adds a node and removes one (about 5 s more per run on 2 cores). `make
# test` runs the plan's first NODE_FAULT_RUNS runs of each node-fault kind as planned;
# in its other runs the node fault gives way to a fault of a process
# (CHEAP_FAULTS, the first that applies), and `make test-slow` runs them as planned.
NODE_FAULT_RUNS = 1
CHEAP_FAULTS = ("executor-kill", "worker-sigkill")


def _split(plan: list) -> tuple[list, list]:
    """(what `make test` runs, what `make test-slow` runs)."""
    seen: dict[str, int] = {}
    fast, slow = [], []
    for cfg, kinds in plan:
        node = [k for k in kinds if k in chaos.NODE_FAULTS]
        for k in node:
            seen[k] = seen.get(k, 0) + 1
        if all(seen[k] <= NODE_FAULT_RUNS for k in node):
            fast.append((cfg, kinds))
            continue
        slow.append((cfg, kinds))
        cheap = next(k for k in CHEAP_FAULTS if chaos.applicable(cfg, k))
        fast.append((cfg, [cheap if k in chaos.NODE_FAULTS else k for k in kinds]))
    return fast, slow


FAST, SLOW = _split(PLAN)


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
        time.sleep(0.2)
    rt = ray_patch.current_runtime()
    left = [(r.group_id, r.name, r.policy) for r in rt.groups.values()] if rt else []
    assert ray_patch.group_count() == 0, f"a run left groups behind: {left}"


def test_the_short_matrix_covers_every_configuration_and_fault_kind():
    assert {c.name for c, _ in PLAN} == set(chaos.CONFIG_BY_NAME)
    assert {k for _, ks in PLAN for k in ks} == set(chaos.FAULTS)
    # and so does the part of it that `make test` runs; `make test-slow` runs the rest
    assert {c.name for c, _ in FAST} == set(chaos.CONFIG_BY_NAME)
    assert {k for _, ks in FAST for k in ks} == set(chaos.FAULTS)
    assert all(p in FAST or p in SLOW for p in PLAN)


RUNS = [(c, k, False) for c, k in FAST] + [(c, k, True) for c, k in SLOW]


@pytest.mark.parametrize("cfg,kinds,slow", [
    pytest.param(c, k, s, marks=pytest.mark.slow if s else (),
                 id=f"{c.name}-{'+'.join(k)}") for c, k, s in RUNS])
def test_exact_under_random_faults(cluster, cfg, kinds, slow):
    j = RUNS.index((cfg, kinds, slow))
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
