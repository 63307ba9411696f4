"""The differential corpus (tests/corpus/programs.py): every program run plainly and
under ``irfront.infer``, each mode in its own driver process connected to the session's
cluster, gives the same results, errors, ref types and named actors; and most of its
task calls run group-scheduled."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import TESTS, needs_core
from corpus.programs import HEAVY, PROGRAMS, STAGE_SHAPED

pytestmark = [needs_core, pytest.mark.timeout(600)]

RUNNER = os.path.join(TESTS, "corpus", "run.py")
MIN_PROGRAMS = 20
# The share of the corpus's task calls that must run as groups (issue 19's goal: 60%).
MIN_GROUPED = 0.6
# Per program with a stage shape (issue 28): at least half its task calls as groups.
MIN_GROUPED_PER_STAGE_PROGRAM = 0.5
# ... except param_server_async: its 4 first gradients are a stage (grouped), its other 8
# are single tasks, each submitted after a ray.wait and read at once (4 of 12: the
# target is missed there, docs/INFER.md).
BELOW_HALF = frozenset({"param_server_async"})


def run_corpus(address: str, names: list[str], *modes: str) -> list[dict]:
    """Each mode in a driver process of its own, one after the other, over the programs
    ``names``. Not at once: Ray's worker processes belong to one job, so two drivers
    side by side on 2-CPU nodes keep ending each other's idle workers and starting their
    own (the corpus took 31-41 s that way, against 15 s in turn)."""
    out = []
    for mode in modes:
        proc = subprocess.run([sys.executable, RUNNER, "--address", address, "--mode", mode,
                               "--only", ",".join(names)],
                              capture_output=True, text=True, timeout=280)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("CORPUS-JSON ")),
                    None)
        assert proc.returncode == 0 and line is not None, \
            f"{mode} runner failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
        out.append(json.loads(line[len("CORPUS-JSON "):]))
    return out


# `make test` runs the corpus without its actor-heavy programs (HEAVY: a few task calls,
# most of a cold run's time), `make test-slow` those: every program runs in one of them.
PARTS = {"main": sorted(set(PROGRAMS) - HEAVY), "heavy": sorted(HEAVY)}


@pytest.fixture(scope="module", params=[
    "main", pytest.param("heavy", marks=pytest.mark.slow)])
def corpus(request, cluster):
    names = PARTS[request.param]
    return (*run_corpus(cluster.address, names, "plain", "infer"), names)


def test_corpus_is_large_enough(corpus):
    plain, infer, names = corpus
    assert len(PROGRAMS) >= MIN_PROGRAMS and HEAVY < set(PROGRAMS)
    assert set(plain) == set(infer) == set(names)


def test_every_program_reads_the_same_under_infer(corpus):
    plain, infer, _ = corpus
    diffs = {}
    for name, want in plain.items():
        got = infer[name]
        for what in ("result", "raised", "named"):
            if got.get(what) != want.get(what):
                diffs[f"{name}.{what}"] = (want.get(what), got.get(what))
    assert not diffs, json.dumps(diffs, indent=1)[:6000]
    assert all("raised" not in r for r in plain.values())  # the programs catch their own


def test_most_task_calls_run_as_groups(corpus):
    _, infer, names = corpus
    if names == PARTS["heavy"]:
        pytest.skip("the actor-heavy programs make few task calls: the share is the "
                    "main part's")
    tasks = sum(r["tasks"] for r in infer.values())
    grouped = sum(r["grouped"] for r in infer.values())
    assert tasks > 100
    assert grouped / tasks >= MIN_GROUPED, {n: (r["grouped"], r["tasks"], r["plain"])
                                             for n, r in infer.items()}


def test_each_program_with_a_stage_runs_most_of_its_tasks_as_groups(corpus):
    _, infer, names = corpus
    low = {n: (r["grouped"], r["tasks"], r["plain"]) for n, r in infer.items()
           if n in STAGE_SHAPED - BELOW_HALF
           and r["grouped"] < MIN_GROUPED_PER_STAGE_PROGRAM * r["tasks"]}
    assert not low, low
    # the exception stays one: its stage is grouped, its single tasks are not
    for n in BELOW_HALF & set(names):
        assert 0 < infer[n]["grouped"] < infer[n]["tasks"], infer[n]
