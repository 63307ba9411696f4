"""The table of a ``bench/chaos.py`` run, from its JSON rows (no Ray needed): what the
run prints, and what ``scripts/doc_figures.py`` writes into docs/RELIABILITY.md."""
from __future__ import annotations

from typing import Any, Sequence


def _injected(r: dict) -> int:
    return r.get("injected", sum(1 for f in r["faults"] if not f["skipped"]))


def _broken(r: dict) -> bool:
    """A run that broke a promise (older JSON has no ``problems``: derived)."""
    if "problems" in r:
        return bool(r["problems"])
    return bool(r.get("error")) or not r.get("exact") or not r.get("calls_ok")


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Configuration x fault kind: faults injected, recoveries, exact, recovery times.
    Each row is a run as the JSON holds it (``injected`` and ``problems`` included)."""
    cells: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        cells.setdefault((r["config"], " + ".join(sorted(set(r["kinds"])))), []).append(r)
    lines = ["| configuration | fault | runs | faults injected | recoveries | exact "
             "(sums, calls, lost 0) | fault -> recovered p50 / max (s) |",
             "|---|---|---|---|---|---|---|"]
    for (cfg, kind), rs in cells.items():
        times = sorted(f["recovered_s"] for r in rs for f in r["faults"]
                       if f["recovered_s"] is not None)
        ok = not any(_broken(r) for r in rs)
        tm = (f"{times[len(times) // 2]:.2f} / {times[-1]:.2f}" if times
              else "no reducer recovery needed")
        lines.append(f"| {cfg} | {kind} | {len(rs)} | {sum(_injected(r) for r in rs)} | "
                     f"{sum(r['recoveries'] for r in rs)} | {'yes' if ok else '**no**'} | "
                     f"{tm} |")
    return "\n".join(lines)
