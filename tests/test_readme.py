"""The README's first programs: it quotes examples/first_ir.py and first_infer.py as they
are, and both run on the session cluster with the totals the examples assert."""
from __future__ import annotations

import os
import re
import sys

import ray

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def _read(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def test_readme_quotes_the_examples():
    blocks = re.findall(r"```python\n(.*?)```", _read("README.md"), re.S)
    sources = _read("examples", "first_ir.py") + _read("examples", "first_infer.py")
    assert len(blocks) == 2
    for b in blocks:
        assert b in sources, f"README block not in examples/first_*.py:\n{b}"


def test_first_programs_run(cluster):
    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)
    import first_infer
    import first_ir
    for m in (first_ir, first_infer):  # the workers do not have examples/ on their path
        ray.cloudpickle.register_pickle_by_value(m)
    assert first_ir.main() == [12000.0] * 4
    assert first_infer.pipeline() == [12000.0] * 4
    assert "ReduceActors[add]" in first_infer.pipeline.explain()
