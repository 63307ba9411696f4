"""Runs a command and appends what happened to a JSON list: how long it took, its
result, and where it ran (the commit of the checkout it runs in, the tree, the machine,
the load at the start and at the end).

    python scripts/record_run.py --json docs/make_test_runs.json --note "fresh clone" \
        -- make test

The last lines of pytest's summary (``N passed``) are kept as the result when there are
any; otherwise ``exit 0`` / ``exit N``. The command's output goes through unchanged.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "bench"))
from common import provenance  # noqa: E402

SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed|errors?)\b.*?) in [\d.]+s")
# A line that starts a phase of `make test`: the seconds from the start at which each first
# appears are kept ("phases_start_s"), so a run's set-up and its tests can be told apart.
PHASES = {"bazel": re.compile(r"^bazel test\b"), "pytest": re.compile(r"-m pytest\b")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--note", default="")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("give the command after --")
    load0 = os.getloadavg()
    t0 = time.monotonic()
    summary = None
    phases: dict[str, float] = {}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as p:
        for line in p.stdout:
            sys.stdout.write(line)
            for phase, pattern in PHASES.items():
                if phase not in phases and pattern.search(line):
                    phases[phase] = round(time.monotonic() - t0, 1)
            m = SUMMARY.search(line)
            if m:
                summary = m.group(1)
        rc = p.wait()
    rec = {"command": " ".join(cmd), "note": a.note, "rc": rc,
           "result": summary or f"exit {rc}", "seconds": round(time.monotonic() - t0, 1),
           "phases_start_s": phases,
           "provenance": provenance(load0, root=os.getcwd())}
    old = []
    if os.path.exists(a.json):
        with open(a.json) as f:
            old = json.load(f)
    with open(a.json, "w") as f:
        json.dump(old + [rec], f, indent=1)
        f.write("\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
