"""The figures in README.md and docs/*.md, written from the JSON of the run that
measured them.

A block in a Markdown file

    <!-- figures: KIND PATH.json -->
    ...                         (written by this script)
    <!-- /figures -->

is (re)written from PATH (relative to the repository). KIND:

- ``stream``: a ``bench/stream.py`` run: p50 / p99 per series and size, the driver's CPU
  per batch, the targets it checked, and where it ran (commit, tree, machine, load);
- ``runs``: a list of ``scripts/record_run.py`` records (a command, how long it took, its
  result, where it ran);
- ``chaos``: a ``bench/chaos.py`` run: runs, faults injected, broken promises, per
  configuration;
- ``overhead``: a ``bench/submit_overhead.py`` run;
- ``datamove``: a ``bench/datamove.py`` run (latency, bytes placed and moved, where the
  tasks ran);
- ``rows``: any run that writes ``{"rows": [...], "provenance": ..., "command": ...}``
  (``bench/lifecycle.py``, ``bench/corpus.py``): its rows' scalar columns as a table, and its
  ``totals`` (a dict) as a second one when it has them.

    python scripts/doc_figures.py            # rewrites every block
    python scripts/doc_figures.py --check    # exit 1 if a block differs from its JSON

``tests/test_doc_figures.py`` runs the check: a figure in the docs that its JSON does
not say fails ``make test``.
"""
from __future__ import annotations

import argparse
import difflib
import glob
import json
import os
import re
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
BLOCK = re.compile(r"(<!-- figures: (\w[\w-]*) (\S+) -->\n)(.*?)(<!-- /figures -->)",
                   re.S)


def _ms(v: Any) -> str:
    return "-" if v is None else (f"{v:.0f}" if v >= 20 else f"{v:.1f}")


def _where(p: dict | None) -> str:
    if not p:
        return "No provenance was recorded with this run."
    m = p.get("machine") or {}
    files = p.get("dirty_files") or []
    tree = "a clean tree" if p.get("dirty") is False else (
        ("uncommitted changes in " + ", ".join(f"`{f}`" for f in files[:8]) +
         (" and more" if len(files) > 8 else "")) if files else
        "a tree with uncommitted changes" if p.get("dirty") else "an unknown tree")
    ls, le = p.get("loadavg_start"), p.get("loadavg_end")
    load = (f"; load average {ls[0]:.1f} at the start, {le[0]:.1f} at the end"
            if ls and le else "")
    return (f"Measured at commit `{(p.get('commit') or '?')[:10]}` ({tree}) on "
            f"{m.get('node', '?')}, {m.get('cpus', '?')} cores{load}, finished "
            f"{p.get('finished_at', '?')}.")


def _source(data: dict, path: str) -> str:
    """Where a run's figures come from: its provenance, its command, its JSON."""
    cmd = data.get("command")
    return _where(data.get("provenance")) + (f" Command: `{cmd}`." if cmd else "") + \
        f" Data: `{path}`."


def stream_block(data: dict, path: str) -> str:
    runs = data["runs"]
    labels = data.get("labels") or {}
    sizes = sorted({r["data_mb"] for r in runs})
    order: list[str] = []
    for r in runs:
        if r["scheduler"] not in order and not r["scheduler"].startswith("floor"):
            order.append(r["scheduler"])
    by = {(r["scheduler"], r["data_mb"]): r for r in runs}
    head = "| p50 / p99 ms | " + " | ".join(f"{s:g} MB" for s in sizes) + \
        " | driver CPU ms / batch |"
    lines = [head, "|---" * (len(sizes) + 2) + "|"]
    for name in order:
        cells = []
        for s in sizes:
            r = by.get((name, s))
            cells.append(f"{_ms(r['p50_ms'])} / {_ms(r['p99_ms'])}"
                         if r and r.get("p50_ms") is not None else "not run")
        cpu = [by[(name, s)]["driver_cpu_ms"] for s in sizes
               if by.get((name, s), {}).get("driver_cpu_ms") is not None]
        label = labels.get(name, name)
        lines.append(f"| {label} | " + " | ".join(cells) + " | " +
                     (f"{min(cpu):.1f}-{max(cpu):.1f}" if cpu else "-") + " |")
    out = ["\n".join(lines), ""]
    targets = data.get("targets") or []
    if targets:
        out.append("Targets checked by the run:")
        out.append("")
        out += [f"- {t['text']}" for t in targets]
        out.append("")
    out.append(_source(data, path))
    return "\n".join(out) + "\n"


def runs_block(data: list, path: str) -> str:
    lines = ["| command | result | took | commit | load start / end |",
             "|---|---|---|---|---|"]
    for r in data:
        p = r.get("provenance") or {}
        ls, le = p.get("loadavg_start"), p.get("loadavg_end")
        took = r["seconds"]
        load = f"{ls[0]:.0f} / {le[0]:.0f}" if ls and le else "-"
        note = f" ({r['note']})" if r.get("note") else ""
        lines.append(
            f"| `{r['command']}`{note} | {r['result']} | {int(took // 60)} min "
            f"{int(took % 60)} s | `{(p.get('commit') or '?')[:10]}`"
            f"{' (dirty)' if p.get('dirty') else ''} | {load} |")
    return "\n".join(lines) + f"\n\nData: `{path}`.\n"


def chaos_block(data: dict, path: str) -> str:
    from chaos_report import table  # bench/: the table the run itself prints
    from chaos_report import _broken
    broken = sum(_broken(r) for r in data["runs"])
    took = f", in {data['wall_s'] / 60:.0f} min" if data.get("wall_s") else ""
    total = (f"{len(data['runs'])} runs, {data.get('injected', 0)} faults injected at "
             f"random moments, {broken} runs with a broken promise{took}.")
    return table(data["runs"]) + "\n\n" + total + " " + _source(data, path) + "\n"


def overhead_block(data: list, path: str) -> str:
    r = data[-1]
    return (f"Group submission: {r['group_ms_per_task']:.3f} ms of driver time per task "
            f"against {r['plain_ms_per_task']:.3f} ms for plain `.remote()` "
            f"({r['overhead_ms_per_task']:.3f} ms more; the target is under "
            f"{r['target_ms']:g} ms), the median of {r['rounds']} interleaved rounds of "
            f"{r['tasks']} tasks. " + _where(r.get("provenance")) +
            f" Data: `{path}`.\n")


def _cell(v: Any) -> str:
    """A table cell: a float to two decimals, anything else as it is."""
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def rows_block(data: dict, path: str) -> str:
    rows = data["rows"]
    # scalar columns only: lists and dicts (per-batch samples) stay in the JSON
    cols = [c for c in rows[0] if not isinstance(rows[0][c], (list, dict))]
    lines = ["| " + " | ".join(c.replace("_", " ") for c in cols) + " |",
             "|---" * len(cols) + "|"]
    lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    totals = data.get("totals")
    if totals:  # the run's own summary over its rows
        lines += ["", "| total | value |", "|---|---|"]
        lines += [f"| {k.replace('_', ' ')} | "
                  f"{', '.join(map(str, v)) if isinstance(v, list) else _cell(v)} |"
                  for k, v in totals.items()]
    return "\n".join(lines) + "\n\n" + _source(data, path) + "\n"


def datamove_block(data: dict, path: str) -> str:
    """bench/datamove.py's rows: latency, bytes placed and moved, where tasks ran."""
    def mb(v: Any) -> str:
        return "-" if v is None else f"{v:.2f}"
    lines = ["| series | MB/part | p50 ms | p99 ms | p50 / vanilla+fuse | placed MB | "
             "join / opt / core MB | net MB | net / placed | join tasks per host | "
             "reducers per host |", "|---" * 11 + "|"]
    for r in data["rows"]:
        name = f"**{r['series']}**" if r["series"] == "locality" else r["series"]
        lines.append(
            f"| {name} | {r['size_mb']:g} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | "
            f"{mb(r.get('p50_vs_vfuse'))} | {mb(r['placed_mb'])} | "
            f"{mb(r['join_mb'])} / {mb(r['opt_join_mb'])} / {mb(r.get('core_mb'))} | "
            f"{mb(r.get('net_mb'))} | {mb(r.get('net_vs_placed'))} | {r['join_tasks']} | "
            f"{r['reducers']} |")
    return "\n".join(lines) + "\n\n" + _source(data, path) + "\n"


KINDS = {"stream": stream_block, "datamove": datamove_block, "runs": runs_block,
         "chaos": chaos_block, "overhead": overhead_block, "rows": rows_block}


def render(text: str) -> str:
    def one(m: re.Match) -> str:
        kind, path = m.group(2), m.group(3)
        if kind not in KINDS:
            raise SystemExit(f"unknown figures kind {kind!r} (expected {sorted(KINDS)})")
        with open(os.path.join(ROOT, path)) as f:
            data = json.load(f)
        return m.group(1) + KINDS[kind](data, path) + m.group(5)
    return BLOCK.sub(one, text)


def documents() -> list[str]:
    return [os.path.join(ROOT, "README.md")] + sorted(
        glob.glob(os.path.join(ROOT, "docs", "*.md")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="change nothing; exit 1 if a block differs from its JSON")
    a = ap.parse_args(argv)
    stale = []
    for doc in documents():
        with open(doc) as f:
            text = f.read()
        new = render(text)
        if new == text:
            continue
        if a.check:
            stale.append(doc)
            sys.stdout.writelines(difflib.unified_diff(
                text.splitlines(True), new.splitlines(True), doc, doc + " (from JSON)"))
        else:
            with open(doc, "w") as f:
                f.write(new)
            print(f"rewrote {os.path.relpath(doc, ROOT)}")
    if stale:
        print(f"\n{len(stale)} document(s) differ from their JSON: run "
              "python scripts/doc_figures.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
