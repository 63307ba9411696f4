"""The package as users get it: `pip wheel .` gives a wheel that installs into a fresh venv,
imports from there (not from the source tree), carries its version, py.typed markers and the
C++ extension, places a group, and runs the seed example.

The wheel is built from a copy of the source files (so stale `build/` output of this checkout
cannot leak into it, and nothing is written here) with `pip wheel --no-deps
--no-build-isolation` (compiles the extension: about 30 s on 2 cores). The fresh venv has no
system site-packages; Ray, numpy and the rest come from the running interpreter's
site-packages through a .pth file written after the wheel is installed (installing Ray
anew would take minutes). `make check-wheel` runs just this file.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"irfront": ROOT / "python" / "irfront", "ray_patch": ROOT / "ray_patch"}
IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "bazel-*", "*.egg-info",
                                "__pycache__", "*.so", "*.pyc", ".pytest_cache", ".hypothesis",
                                "results", "tmp")

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]  # ~1.5 min: `make test-slow`


def _source_version() -> str:
    """irfront._version.__version__, read the way setuptools reads it (statically)."""
    tree = ast.parse((PACKAGES["irfront"] / "_version.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("python/irfront/_version.py has no literal __version__")


def _clean_env() -> dict:
    """No source tree on the path, no Ray address inherited from this test session."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "RAY_ADDRESS", "VIRTUAL_ENV")}
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return env


def _run(cmd, cwd, timeout=300) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=str(cwd), env=_clean_env(),
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (f"{cmd} failed ({r.returncode})\n--- stdout\n{r.stdout[-4000:]}"
                               f"\n--- stderr\n{r.stderr[-4000:]}")
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    dist = base / "dist"
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
          "-q", "-w", dist], cwd=src, timeout=600)
    wheels = list(dist.glob("irfront-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv_python(wheel, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "v"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv.parent)
    py = venv / "bin" / "python"
    # This interpreter's pip installs into the new venv (--python); nothing else is on its
    # path yet, so pip sees an empty environment.
    _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps",
          "--no-index", wheel], cwd=venv.parent)
    # Then Ray and numpy from the running environment, after the venv's own site-packages.
    purelib = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=venv.parent).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "_irfront_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    return py


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for pkg, path in PACKAGES.items():
        assert f"{pkg}/py.typed" in names
        # Every module of the source packages, subpackages included, is in the wheel.
        for f in path.rglob("*.py"):
            rel = f.relative_to(path).as_posix()
            assert f"{pkg}/{rel}" in names, f"{pkg}/{rel} missing from {wheel.name}"
    assert any(n.startswith("ray_patch/_scheduler") and n.endswith(".so") for n in names)
    version = _source_version()
    assert wheel.name.startswith(f"irfront-{version}-")
    meta = zipfile.ZipFile(wheel).read(f"irfront-{version}.dist-info/METADATA").decode()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines()
                if line.startswith("Requires-Dist:")]
    assert any(r.replace(" ", "") in ("ray<2.61,>=2.60", "ray>=2.60,<2.61") for r in requires), requires
    assert "Requires-Python: >=3.10" in meta


def test_installed_wheel_imports_and_places(venv_python, tmp_path):
    version = _source_version()
    probe = textwrap.dedent(f"""
        import importlib.metadata, os, sys
        import irfront, ray_patch
        from ray_patch import _scheduler
        from ray_patch.scheduler import GroupScheduler, Input
        site = os.path.realpath(sys.prefix)
        for mod in (irfront, ray_patch, _scheduler):
            path = os.path.realpath(mod.__file__)
            assert path.startswith(site + os.sep), (mod.__name__, path, site)
            assert not path.startswith({str(ROOT)!r} + os.sep), (mod.__name__, path)
        for mod in (irfront, ray_patch):
            assert os.path.isfile(os.path.join(os.path.dirname(mod.__file__), "py.typed"))
        assert importlib.metadata.version("irfront") == {version!r}
        from irfront._version import __version__
        assert __version__ == {version!r}, __version__
        assert getattr(irfront, "__version__", None) == {version!r}, \\
            "irfront.__version__ is not re-exported from irfront._version"
        s = GroupScheduler()
        s.add_node(0, cpus=4)
        s.add_node(1, cpus=4)
        p = s.place(7, [1.0, 1.0], [[Input(size=10, nodes=(1,))], []], policy="locality")
        assert list(p.nodes) == [1, 0] and p.bytes_moved == 0, (p.nodes, p.bytes_moved)
        print("ok")
    """)
    r = _run([venv_python, "-c", probe], cwd=tmp_path, timeout=120)
    assert r.stdout.strip().endswith("ok")


def test_seed_example_from_wheel(venv_python, tmp_path):
    """examples/seed_pipeline.py, run from a copy outside the source tree (its sys.path
    insertions then find nothing) with the wheel's irfront; it starts its own local cluster."""
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "seed_pipeline.py", tmp_path / "examples")
    runner = textwrap.dedent("""
        import os, runpy, sys
        import irfront
        assert os.path.realpath(irfront.__file__).startswith(os.path.realpath(sys.prefix)), irfront.__file__
        sys.argv = ["seed_pipeline.py", "--iterations", "2"]
        runpy.run_path(os.path.join("examples", "seed_pipeline.py"), run_name="__main__")
    """)
    _run([venv_python, "-c", runner], cwd=tmp_path, timeout=300)
