"""The corpus of plain Ray programs (tests/corpus/programs.py), run many times, plainly
and under ``irfront.infer``: does any program hang, how many of each program's task calls
run as groups, and what infer does to each program's wall time.

    python bench/corpus.py --passes 10 --repeat 2 --fault-every 4 \
        --json bench/results/corpus.json

On an embedded 4 x 2-CPU cluster, each pass runs every program ``--repeat`` times in a
row in a fresh driver process (``tests/corpus/run.py``), plain and infer in turn (the
order alternates per pass, so neither mode always runs on a warmer cluster). A program's
first run in a driver is *cold* (the job's workers may have to start, a function be
exported); the best of its runs, with ``--repeat`` 2 or more, is *warm*, as in a
long-running program. A program that runs past the
runner's per-program limit, or a driver still running after ``--pass-timeout`` s, is a
hang: it is reported with the program's name, and the run exits 1.

Every ``--fault-every``-th pass (both its plain and its infer driver) also gets a
fault: at a seeded random moment of the pass a thread SIGKILLs one of Ray's worker
processes (a task's, an actor's or an executor's, or one still starting; by pid, among
the workers the cluster's raylets started). The cluster's worker registration timeout
is 20 s (Ray's default: 60 s, the runner's hang limit): a worker killed while it starts
stalls what waits on it until then, plainly too. Programs may then raise (an actor
died), which is reported per mode but is not a hang; those passes are left out of the wall times and of the
comparison of results. A program that hangs under infer where the same fault plainly
does not is the bug this looks for.

Per program (rows of the JSON, ``scripts/doc_figures.py``'s ``rows`` kind): task calls
and how many ran as groups, median warm and cold wall times in each mode over the passes
without a fault, their ratios, hangs, and passes whose result differed from plain's.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time

import benchpath  # noqa: F401  (first: sys.path, Ray on loopback)

import common  # noqa: E402
from irfront.cluster import LocalCluster  # noqa: E402

RUNNER = os.path.join(benchpath.ROOT, "tests", "corpus", "run.py")


def one_pass(address: str, mode: str, timeout_s: float, repeat: int = 1,
             only: str = "") -> tuple[dict, str | None, str]:
    """One driver running every program (or those ``only`` names) ``repeat`` times: (its
    per-program JSON, the program that was running when the driver outlived
    ``timeout_s`` or None, the end of its stderr then: the runner's stack dump)."""
    proc = subprocess.Popen([sys.executable, RUNNER, "--address", address, "--mode", mode,
                             "--repeat", str(repeat), "--only", only],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, errs = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, errs = proc.communicate()
        started = [ln.split()[1] for ln in errs.splitlines()
                   if ln.startswith("CORPUS-START ")]
        return {}, (started[-1] if started else "<before the first program>"), errs[-6000:]
    line = next((x for x in out.splitlines() if x.startswith("CORPUS-JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"{mode} runner failed (rc {proc.returncode}):\n{errs[-3000:]}")
    return json.loads(line[len("CORPUS-JSON "):]), None, ""


class Injector(threading.Thread):
    """SIGKILLs one random worker process of ``cluster`` at a random moment in
    [0, ``within_s``) (seeded), unless stopped first."""

    def __init__(self, cluster: LocalCluster, rng: random.Random, within_s: float):
        super().__init__(daemon=True)
        self.cluster, self.delay = cluster, rng.uniform(0, within_s)
        self.rng, self.stop, self.killed = rng, threading.Event(), None

    def run(self) -> None:
        import psutil
        if self.stop.wait(self.delay):
            return
        pids = self.cluster.worker_pids()
        if pids:
            pid = self.rng.choice(pids)
            try:
                proc = psutil.Process(pid)
                title = proc.cmdline()[:1]
                proc.kill()
                self.killed = [pid] + title
            except psutil.Error:
                pass


def _same(plain: dict, infer: dict) -> bool:
    return (plain.get("result"), plain.get("raised")) == (infer.get("result"),
                                                          infer.get("raised"))


def summarise(passes: list[dict]) -> tuple[list[dict], dict]:
    """Per-program rows and the corpus's totals from every pass's records."""
    names = sorted({n for p in passes for n in p["programs"]})
    rows = []
    for name in names:
        def recs(mode, faults=None):
            return [p["programs"][name] for p in passes if p["mode"] == mode
                    and name in p["programs"]
                    and (faults is None or p["fault"] is faults)]
        plain_ok, infer_ok = recs("plain", False), recs("infer", False)
        calls = max((r.get("tasks", 0) for r in infer_ok), default=0)
        grouped = max((r.get("grouped", 0) for r in infer_ok), default=0)
        def wall(recs_: list, key: str) -> float | None:
            return common.median([r[key] for r in recs_]) * 1e3 \
                if recs_ else None
        wp, wi = wall(plain_ok, "wall_s"), wall(infer_ok, "wall_s")
        cp, ci = wall(plain_ok, "wall_first_s"), wall(infer_ok, "wall_first_s")
        ref = plain_ok[0] if plain_ok else {}
        rows.append({
            "program": name, "task_calls": calls, "grouped": grouped,
            # the runner's STAGE_SHAPED (tests/corpus/programs.py)
            "stage_shaped": any(r.get("stage_shaped") for r in plain_ok + infer_ok),
            "grouped_pct": round(100.0 * grouped / calls, 1) if calls else None,
            "wall_plain_ms": round(wp, 1) if wp is not None else None,
            "wall_infer_ms": round(wi, 1) if wi is not None else None,
            "infer_over_plain": round(wi / wp, 2) if wp and wi else None,
            "cold_plain_ms": round(cp, 1) if cp is not None else None,
            "cold_infer_ms": round(ci, 1) if ci is not None else None,
            "cold_infer_over_plain": round(ci / cp, 2) if cp and ci else None,
            # the driver outlived the pass, or the runner's own per-program limit fired
            "hangs": sum(1 for p in passes if p["hung"] == name) + sum(
                1 for r in recs("plain") + recs("infer")
                if (r.get("raised") or [None])[0] == "Hang"),
            "differs": sum(1 for r in infer_ok if not _same(ref, r)),
            "raised_fault_plain": sum(1 for r in recs("plain", True) if r.get("raised")),
            "raised_fault_infer": sum(1 for r in recs("infer", True) if r.get("raised")),
        })
    with_calls = [r for r in rows if r["task_calls"]]
    total_calls = sum(r["task_calls"] for r in rows)
    totals = {
        "passes": len(passes), "fault_passes": sum(1 for p in passes if p["fault"]),
        "hangs": sum(r["hangs"] for r in rows),
        "pooled_grouped_pct": round(100.0 * sum(r["grouped"] for r in rows) / total_calls, 1)
        if total_calls else None,
        "mean_grouped_pct": round(sum(r["grouped_pct"] for r in with_calls)
                                  / len(with_calls), 1) if with_calls else None,
        "programs_with_calls": len(with_calls),
        "programs_at_0pct": sum(1 for r in with_calls if r["grouped"] == 0),
        "over_1_05x": sorted(r["program"] for r in rows
                             if (r["infer_over_plain"] or 0) > 1.05),
        "cold_over_1_05x": sorted(r["program"] for r in rows
                                  if (r["cold_infer_over_plain"] or 0) > 1.05),
        "stage_programs_under_50pct": sorted(
            r["program"] for r in with_calls
            if r["stage_shaped"] and r["grouped_pct"] < 50),
    }
    return rows, totals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--passes", type=int, default=20, help="passes per mode")
    ap.add_argument("--fault-every", type=int, default=4,
                    help="every Nth pass gets a fault, in both modes (0: none)")
    ap.add_argument("--repeat", type=int, default=2,
                    help="runs of each program per driver: the first is cold, the best "
                         "of them warm (1: cold only)")
    ap.add_argument("--pass-timeout", type=float, default=300.0)
    ap.add_argument("--only", default="", help="comma-separated programs (default: all)")
    ap.add_argument("--fault-within", type=float, default=10.0,
                    help="a fault pass's kill comes at a random moment in its first S s")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default="bench/results/corpus.json")
    a = ap.parse_args(argv)
    if a.passes < 1:
        ap.error("--passes must be at least 1")
    if a.repeat < 1:
        ap.error("--repeat must be at least 1")
    load0 = os.getloadavg()
    rng = random.Random(a.seed)
    passes: list[dict] = []
    hangs: list[dict] = []  # each driver that outlived its pass, with its stack dump
    program_hangs: list[dict] = []  # each program the runner stopped at its own limit
    # A worker SIGKILLed while it starts (before it registers with its raylet) is noticed
    # only at Ray's registration timeout (60 s by default), and its actor or task waits
    # until then, in plain Ray and under infer alike: as long as the runner's hang limit.
    # At 20 s such a stall is told apart from a hang.
    with LocalCluster(num_nodes=4, cpus_per_node=2, object_store_mb=200,
                      system_config={"worker_register_timeout_seconds": 20}) as cluster:
        for k in range(a.passes):
            order = ("plain", "infer") if k % 2 == 0 else ("infer", "plain")
            for mode in order:
                fault = a.fault_every > 0 and (k + 1) % a.fault_every == 0
                inj = Injector(cluster, rng, a.fault_within) if fault else None
                t0 = time.monotonic()
                if inj:
                    inj.start()
                programs, hung, stack = one_pass(cluster.address, mode, a.pass_timeout,
                                                 a.repeat, a.only)
                if inj:
                    inj.stop.set()
                    inj.join()
                passes.append({"mode": mode, "fault": fault, "hung": hung,
                               "killed": inj.killed if inj else None,
                               "programs": programs})
                if hung:
                    hangs.append({"pass": k + 1, "mode": mode, "fault": fault,
                                  "program": hung, "stderr_tail": stack})
                for name, rec in programs.items():  # the runner's own limit fired
                    if (rec.get("raised") or [None])[0] == "Hang":
                        program_hangs.append({"pass": k + 1, "mode": mode, "fault": fault,
                                              "killed": inj.killed if inj else None,
                                              "program": name,
                                              "at": rec.get("hang_at")})
                print(f"pass {k + 1}/{a.passes} {mode:5s}{' +fault' if fault else '':7s} "
                      f"{time.monotonic() - t0:6.1f} s"
                      f"{'  HUNG in ' + hung if hung else ''}", flush=True)
    rows, totals = summarise(passes)
    common.print_table(rows, title="corpus: plain vs irfront.infer")
    print(json.dumps(totals, indent=1))
    common.write_rows(a.json, rows, load0, "bench/corpus.py", argv, totals=totals,
                      hung_drivers=hangs, hung_programs=program_hangs)
    return 1 if totals["hangs"] else 0


if __name__ == "__main__":
    sys.exit(main())
