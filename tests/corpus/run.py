"""Runs every corpus program in turn in one driver process and prints one JSON object.

    python tests/corpus/run.py --address ADDR --mode plain|infer [--only a,b] [--repeat N]

Per program: ``result`` (what it returned, described: values, and ref types by name),
``raised`` (an error that escaped it), ``named`` (named actors it left), ``wall_first_s``
(its first run in this driver: workers may have to start), ``wall_s`` (the best of
``--repeat`` runs: with ``--repeat`` 2 or more, a warm run) and, under infer, the
session's figures (task calls, grouped, recording CPU, the block's driver CPU).
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import math
import os
import signal
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for p in (os.path.join(ROOT, "python"), ROOT, os.path.dirname(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback, as the cluster

import numpy as np  # noqa: E402
import ray  # noqa: E402


def describe(x, depth=0):
    """JSON for a result: numbers rounded, Ray objects by type name."""
    if depth > 8:
        return "<deep>"
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, float):
        return round(x, 9) if math.isfinite(x) else str(x)
    if isinstance(x, np.generic):
        return describe(x.item(), depth)
    if isinstance(x, np.ndarray):
        return describe(x.tolist(), depth)
    if isinstance(x, (list, tuple)):
        return [describe(v, depth + 1) for v in x]
    if isinstance(x, dict):
        return {str(k): describe(v, depth + 1) for k, v in x.items()}
    return f"<{type(x).__name__}>"


HANG_S = 60  # per program: corpus programs take seconds


class Hang(BaseException):
    """Raised in the runner's main thread when a program outlives HANG_S."""


def _hang(signum, frame):
    raise Hang()


def main() -> None:
    signal.signal(signal.SIGALRM, _hang)
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    ap.add_argument("--mode", choices=("plain", "infer"), required=True)
    ap.add_argument("--only", default="")
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    ray.init(address=a.address, logging_level="ERROR", log_to_driver=False)
    import irfront
    from corpus.programs import PROGRAMS, STAGE_SHAPED, err
    names = [n for n in PROGRAMS if not a.only or n in a.only.split(",")]
    out = {}
    for name in names:
        prog = PROGRAMS[name]
        rec = {"wall_s": math.inf, "stage_shaped": name in STAGE_SHAPED}
        # which program is running, for a caller that must name the one that hung
        print(f"CORPUS-START {name}", file=sys.stderr, flush=True)
        for _ in range(max(1, a.repeat)):
            run = irfront.infer(prog) if a.mode == "infer" else prog
            before = set(map(str, ray.util.list_named_actors()))
            t0 = time.perf_counter()
            signal.alarm(HANG_S)  # a program that hangs is a failure, not a stuck run
            # and if the alarm cannot interrupt it (blocked in Ray's C++), every
            # thread's stack, for the caller that ends this driver
            faulthandler.dump_traceback_later(HANG_S + 5)
            try:
                rec["result"] = describe(run())
            except Hang as e:  # where the program was: the frames below this one
                rec["raised"] = ["Hang", f"still running after {HANG_S} s"]
                rec["hang_at"] = [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} {f.name}"
                                  for f in traceback.extract_tb(e.__traceback__)[-8:]]
            except Exception as e:  # an error the program let escape
                rec["raised"] = err(e)
            finally:
                signal.alarm(0)
                faulthandler.cancel_dump_traceback_later()
            wall = time.perf_counter() - t0
            rec.setdefault("wall_first_s", wall)
            rec["wall_s"] = min(rec["wall_s"], wall)
            rec["named"] = sorted(set(map(str, ray.util.list_named_actors())) - before)
            if a.mode == "infer" and run.session is not None:
                s = run.session
                rec.update(tasks=s.tasks, grouped=s.tasks_grouped, calls=s.recognised +
                           s._plain_now, record_s=s.overhead_s, cpu_s=s.cpu_s,
                           plain=[f"{k[0]}: {k[1]}" for k in s.plain_totals])
        out[name] = rec
    print("CORPUS-JSON " + json.dumps(out))
    ray.shutdown()


if __name__ == "__main__":
    main()
