"""A pytest plugin that says where a test run's time goes: per test, its wall time, the
machine's CPU seconds over it (all processes: the suite is CPU-bound, and most of its CPU
is in Ray's processes, not pytest's) and the actors the cluster created during it (and, for the whole run, by class).

    IRF_TEST_PROFILE=docs/test_profile.json PYTHONPATH=scripts \\
        PYTEST_ADDOPTS="-p pytest_profile" make test

Writes the rows, per-file and whole-run totals and the run's provenance (commit, tree,
machine, load) when the session ends. Without IRF_TEST_PROFILE it does nothing.
"""
from __future__ import annotations

import json
import os
import sys
import time

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ROWS: list[dict] = []
_START: dict = {}


def _cpu_s() -> float:
    """CPU seconds the whole machine has spent (user, nice, system) since boot."""
    with open("/proc/stat") as f:
        v = f.readline().split()[1:4]
    return sum(int(x) for x in v) / os.sysconf("SC_CLK_TCK")


def _actors() -> int | None:
    """Actors the connected cluster has created so far (dead ones included)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    try:
        return len(ray._private.state.state.actor_table(None))
    except Exception:  # the cluster is going or gone
        return None


def _actor_classes() -> dict[str, int]:
    """Actors the connected cluster has created so far, by class name (most first)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return {}
    try:
        table = ray._private.state.state.actor_table(None)
    except Exception:  # the cluster is going or gone
        return {}
    counts: dict[str, int] = {}
    for a in table.values():
        counts[a["ActorClassName"]] = counts.get(a["ActorClassName"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _on() -> str | None:
    return os.environ.get("IRF_TEST_PROFILE") or None


def pytest_sessionstart(session):
    if _on():
        _START.update(load=os.getloadavg(), cpu=_cpu_s(), t=time.monotonic())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _on():
        yield
        return
    a0, c0, t0 = _actors(), _cpu_s(), time.monotonic()
    yield
    a1, c1, t1 = _actors(), _cpu_s(), time.monotonic()
    _ROWS.append({"test": item.nodeid, "wall_s": round(t1 - t0, 2),
                  "cpu_s": round(c1 - c0, 2),
                  "actors": None if a0 is None or a1 is None else a1 - a0})


def _totals(rows: list[dict]) -> dict:
    wall = sum(r["wall_s"] for r in rows)
    cpu = sum(r["cpu_s"] for r in rows)
    return {"tests": len(rows), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "cores_busy": round(cpu / wall, 2) if wall else None,
            "actors": sum(r["actors"] or 0 for r in rows)}


def pytest_sessionfinish(session, exitstatus):
    path = _on()
    if not path or not _START:
        return
    sys.path.insert(0, os.path.join(_ROOT, "bench"))
    from common import provenance
    files: dict[str, list] = {}
    for r in _ROWS:
        files.setdefault(r["test"].split("::")[0], []).append(r)
    out = {"command": " ".join(sys.argv), "exitstatus": int(exitstatus),
           "session_wall_s": round(time.monotonic() - _START["t"], 1),
           "session_cpu_s": round(_cpu_s() - _START["cpu"], 1),
           "totals": _totals(_ROWS),
           "files": {f: _totals(rs) for f, rs in sorted(files.items())},
           "actors_by_class": _actor_classes(),
           "rows": _ROWS,
           "provenance": provenance(_START["load"], root=_ROOT)}
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
