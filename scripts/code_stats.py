"""Lines per module and the longest functions of the project's Python packages, for a
design review (issue 29 asks for them before and after a redesign).

    python scripts/code_stats.py                 # the checkout's working tree
    python scripts/code_stats.py --rev 0c51f6b   # a commit (read with git show)
    python scripts/code_stats.py --json out.json --top 15

Counts physical lines per file, and per function or method its lines from ``def`` to
its last statement (nested functions count inside their parent and on their own).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("python/irfront", "ray_patch")


def _files(rev: str | None) -> dict[str, str]:
    """path -> source of every .py file under PACKAGES (at ``rev``, or on disk)."""
    out = {}
    if rev is None:
        for pkg in PACKAGES:
            for d, _, names in os.walk(os.path.join(ROOT, pkg)):
                for n in names:
                    if n.endswith(".py"):
                        p = os.path.join(d, n)
                        with open(p) as f:
                            out[os.path.relpath(p, ROOT)] = f.read()
        return out
    listed = subprocess.run(["git", "-C", ROOT, "ls-tree", "-r", "--name-only", rev, "--",
                             *PACKAGES], capture_output=True, text=True, check=True)
    for p in listed.stdout.split():
        if p.endswith(".py"):
            out[p] = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:{p}"],
                                    capture_output=True, text=True, check=True).stdout
    return out


def stats(rev: str | None = None, top: int = 15) -> dict:
    files = _files(rev)
    funcs = []
    for path, src in files.items():
        tree = ast.parse(src, path)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                funcs.append({"function": f"{path}:{node.name}", "line": node.lineno,
                              "lines": node.end_lineno - node.lineno + 1})
    funcs.sort(key=lambda f: -f["lines"])
    modules = sorted(({"module": p, "lines": s.count("\n")} for p, s in files.items()),
                     key=lambda m: -m["lines"])
    return {"rev": rev or "working tree", "total_lines": sum(m["lines"] for m in modules),
            "modules": modules, "longest_functions": funcs[:top]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rev", default=None)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    s = stats(a.rev, a.top)
    print(f"{s['rev']}: {s['total_lines']} lines in {len(s['modules'])} modules")
    for m in s["modules"][:a.top]:
        print(f"  {m['lines']:6d}  {m['module']}")
    print("longest functions:")
    for f in s["longest_functions"]:
        print(f"  {f['lines']:6d}  {f['function']} (line {f['line']})")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(s, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
