"""Helpers shared by the benchmarks in bench/: aligned tables, JSON results, timing.

A benchmark produces a list of rows (dicts with the same keys), prints them with
`print_table` and, when asked, writes them with `write_json`.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Optional


def format_value(value: Any, spec: Optional[str] = None) -> str:
    """One cell: None -> '-', floats with `spec` (default: 3 significant digits)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if spec is not None:
        return format(value, spec)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def format_table(
    rows: Sequence[dict[str, Any]],
    columns: Optional[Sequence[str]] = None,
    formats: Optional[dict[str, str]] = None,
) -> str:
    """An aligned text table: a header line, a rule, one line per row.

    columns: keys to show, in order (default: the first row's keys).
    formats: per-column format specs, e.g. {"median_ms": ".2f"}.
    Numbers are right-aligned, text left-aligned.
    """
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    formats = formats or {}
    cells = [[format_value(r.get(c), formats.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows)
        for c in columns
    ]

    def line(values: Iterable[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)
        ).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out.extend(line(c) for c in cells)
    return "\n".join(out)


def print_table(
    rows: Sequence[dict[str, Any]],
    columns: Optional[Sequence[str]] = None,
    formats: Optional[dict[str, str]] = None,
    title: Optional[str] = None,
) -> None:
    if title:
        print(title)
    print(format_table(rows, columns, formats), flush=True)


def machine_info() -> dict[str, Any]:
    """What ran the benchmark (kept with the results)."""
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git(*args: str, root: str = ROOT) -> str | None:
    import subprocess
    try:
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                              timeout=30, check=True).stdout.rstrip("\n")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(load_start: Sequence[float] | None = None,
               root: str = ROOT) -> dict[str, Any]:
    """Where a figure comes from, kept with it: the commit of the checkout ``root``,
    whether it had changes beside it (``dirty``), the machine, and the load average at
    the start and now (the end). Call ``os.getloadavg()`` at the start and pass it here
    at the end."""
    status = _git("status", "--porcelain", "--untracked-files=no", root=root)
    changed = [line[3:] for line in (status or "").splitlines()]
    return {"commit": _git("rev-parse", "HEAD", root=root),
            "dirty": None if status is None else bool(status),
            "dirty_files": changed[:50],
            "machine": machine_info() | {"node": platform.node()},
            "loadavg_start": list(load_start) if load_start is not None else None,
            "loadavg_end": list(os.getloadavg()),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_json(path: str, rows: Sequence[dict[str, Any]]) -> None:
    """Writes the rows as a JSON list (creating the directory); NaN/inf become null."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if hasattr(v, "item"):  # numpy scalar
            return clean(v.item())
        return v

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        json.dump([{k: clean(v) for k, v in r.items()} for r in rows], f, indent=1)
        f.write("\n")


def _plain(v: Any) -> Any:
    """JSON for what ``json`` cannot write itself: numpy scalars and arrays as numbers."""
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)


def write_rows(path: str, rows: Sequence[dict[str, Any]], load_start: Sequence[float],
               script: str, argv: Sequence[str] | None = None, **extra: Any) -> None:
    """A run as ``{"rows", "provenance", "command", **extra}`` (what
    ``scripts/doc_figures.py``'s ``rows`` blocks read): ``script`` run with ``argv``
    (default: this process's)."""
    import sys
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"rows": list(rows), "provenance": provenance(load_start),
                   "command": f"{script} " + " ".join(
                       sys.argv[1:] if argv is None else argv), **extra}, f, indent=1,
                  default=_plain)
    print(f"wrote {path}")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def time_ms(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Runs fn once; returns (wall milliseconds, its result)."""
    start = time.perf_counter()
    result = fn()
    return (time.perf_counter() - start) * 1e3, result
