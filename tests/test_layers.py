"""The layers, bottom up, with no import upward and no cycle (a small AST check):

    0  ray_patch.scheduler, ray_patch._scheduler, ray_patch.ids   the C++ core's face
    1  ray_patch (validate, runtime, submit)                      group submission on Ray
    2  irfront.errors, irfront._version
    3  irfront.ir          plain-data IR nodes
    4  irfront.passes      IR -> IR
    5  irfront.lowering    IR -> Ray tasks
    6  irfront.drivers     the micro-batch stream
    7  irfront.inference   plain Ray code -> IR (recorded at run time, or read from the AST)
    8  irfront.api, irfront.cluster, irfront                     the public API

A module may import its own layer or lower ones (ray_patch never imports irfront), the
core's face imports neither Ray nor anything of the project, module imports form no
cycle, and no project import sits inside a function."""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = {"irfront": os.path.join(ROOT, "python", "irfront"),
            "ray_patch": os.path.join(ROOT, "ray_patch")}

LAYERS = [
    ("ray_patch.scheduler", "ray_patch._scheduler", "ray_patch.ids"),
    ("ray_patch",),
    ("irfront.errors", "irfront._version"),
    ("irfront.ir",),
    ("irfront.passes",),
    ("irfront.lowering",),
    ("irfront.drivers",),
    ("irfront.inference",),
    ("irfront.api", "irfront.cluster", "irfront"),
]
FACE = LAYERS[0]


def layer_of(module: str) -> int:
    """The highest layer whose prefix matches most specifically."""
    best, best_len = None, -1
    for rank, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = rank, len(p)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def modules() -> dict[str, str]:
    out = {}
    for pkg, path in PACKAGES.items():
        for dirpath, _, files in os.walk(path):
            for f in files:
                if not f.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, f), path)[:-3].replace(os.sep, ".")
                name = pkg if rel == "__init__" else f"{pkg}.{rel.removesuffix('.__init__')}"
                out[name] = os.path.join(dirpath, f)
    return out


def imports(path: str) -> tuple[list[str], list[tuple[str, int]]]:
    """(module-level imports, imports inside functions with their line)."""
    tree = ast.parse(open(path).read(), path)
    top, inner = [], []

    def names(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from X import a": the module X.a if there is one, else X (project() finds
            # the longest known prefix).
            return [f"{node.module}.{a.name}" for a in node.names]
        return []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            fn = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in names(child):
                (inner.append((n, child.lineno)) if in_function else top.append(n))
            visit(child, fn)

    visit(tree, False)
    return top, inner


def project(name: str, known: dict[str, str]) -> str | None:
    """The project module an import name refers to (longest known prefix), if any."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        cand = ".".join(parts[:k])
        if cand in known or cand in ("ray_patch._scheduler",):
            return cand
    return None


MODULES = modules()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_import_and_none_inside_functions(module):
    top, inner = imports(MODULES[module])
    mine = layer_of(module)
    for name in top:
        target = project(name, MODULES)
        if target is None:
            continue
        assert layer_of(target) <= mine, (f"{module} (layer {mine}) imports {target} "
                                          f"(layer {layer_of(target)}): an upward import")
    bad = [(n, line) for n, line in inner if project(n, MODULES) is not None]
    assert not bad, f"{module}: project imports inside functions at {bad}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer_of(m) == 0))
def test_the_core_face_imports_neither_ray_nor_the_project(module):
    top, inner = imports(MODULES[module])
    for name, _ in [(n, 0) for n in top] + inner:
        root = name.split(".")[0]
        assert root != "ray", f"{module} imports Ray ({name})"
        target = project(name, MODULES)
        assert target is None or target in FACE, f"{module} imports {target}"


def test_no_import_cycle():
    graph = {m: set() for m in MODULES}
    for m, path in MODULES.items():
        top, _ = imports(path)
        for name in top:
            t = project(name, MODULES)
            if t is not None and t != m and t in MODULES:
                graph[m].add(t)
    # Importing a submodule runs its package's __init__ first; a package importing its own
    # submodules is the usual re-export, not a cycle.
    for m in graph:
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if t not in state:
                dfs(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)


def test_the_check_sees_an_upward_import(tmp_path):
    """The check itself can fail: an IR module importing lowering is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from irfront.lowering import evaluation\n"
                   "def f():\n    import ray_patch\n")
    top, inner = imports(str(bad))
    assert layer_of(project(top[0], MODULES)) > layer_of("irfront.ir.nodes")
    assert [n for n, _ in inner] == ["ray_patch"]
