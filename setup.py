"""Build and install irfront: the Python packages and the C++ scheduler extension.

`pip install --no-build-isolation -e .` for development, or
`python setup.py build_ext --inplace` to (re)build ray_patch/_scheduler*.so.
The extension is rebuilt whenever a source or a header under src/scheduler/ changes.
"""
from __future__ import annotations

import glob
import os

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

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

ext_modules = [
    Pybind11Extension(
        "ray_patch._scheduler",
        sources=_SOURCES,
        include_dirs=["."],
        depends=_HEADERS,
        cxx_std=17,
        extra_compile_args=["-O2"],
    )
]

_PACKAGES = ["irfront", "ray_patch"]

setup(
    name="irfront",
    version="0.1.0",
    description="Group scheduling of BSP stages on Ray (IR front end + C++ placement core)",
    package_dir={"irfront": "python/irfront", "ray_patch": "ray_patch"},
    packages=_PACKAGES,
    ext_modules=ext_modules,
    cmdclass={"build_ext": build_ext},
    python_requires=">=3.10",
    install_requires=["ray==2.60.0", "numpy"],
    zip_safe=False,
)
