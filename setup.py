"""Build irfront's C++ scheduler extension (pybind11) and map the packages' directories.

Everything else (name, version, dependencies, package data) is PEP 621 metadata in
pyproject.toml. `pip install .` / `pip wheel .` build a wheel; `pip install
--no-build-isolation -e .` for development, or `python setup.py build_ext --inplace` to
(re)build ray_patch/_scheduler*.so in the source tree. The extension is rebuilt whenever
a source or a header under src/scheduler/ changes.
"""
from __future__ import annotations

import glob
import os

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import find_namespace_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _rel(paths: list[str]) -> list[str]:
    return sorted(os.path.relpath(p, HERE) for p in paths)


# Core sources (tests excluded) plus the binding; every header is a dependency.
_CORE = [
    p
    for p in glob.glob(os.path.join(HERE, "src", "scheduler", "*.cc"))
    if not os.path.basename(p).endswith("_test.cc")
]
_SOURCES = _rel(_CORE) + _rel(glob.glob(os.path.join(HERE, "src", "scheduler", "bindings", "*.cc")))
_HEADERS = _rel(
    glob.glob(os.path.join(HERE, "src", "scheduler", "*.h"))
    + glob.glob(os.path.join(HERE, "src", "scheduler", "bindings", "*.h"))
)

# Compile the translation units in parallel (2 cores here); IRFRONT_BUILD_JOBS overrides.
ParallelCompile("IRFRONT_BUILD_JOBS", default=0).install()

# The Makefile's editable installs set IRFRONT_SKIP_EXTENSION=1: `make build` compiles the
# extension in place right after (`build_ext --inplace`), where the editable install
# finds it, so the install need not compile it a second time (about 15 s on 2 cores).
ext_modules = [] if os.environ.get("IRFRONT_SKIP_EXTENSION") == "1" else [
    Pybind11Extension(
        "ray_patch._scheduler",
        sources=_SOURCES,
        include_dirs=["."],
        depends=_HEADERS,
        cxx_std=17,
        extra_compile_args=["-O2"],
    )
]



def _packages(name: str, path: str) -> list[str]:
    """`name` and every package below it (subpackages with or without __init__.py)."""
    subs = find_namespace_packages(where=os.path.join(HERE, path), exclude=["*__pycache__*"])
    return [name] + [f"{name}.{sub}" for sub in subs if "__pycache__" not in sub]


setup(
    # Source layout -> import names; subpackages follow (python/irfront/ir -> irfront.ir).
    package_dir={"irfront": "python/irfront", "ray_patch": "ray_patch"},
    packages=_packages("irfront", "python/irfront") + _packages("ray_patch", "ray_patch"),
    ext_modules=ext_modules,
    cmdclass={"build_ext": build_ext},
)
