"""The single source of irfront's version.

pyproject.toml reads it (setuptools `dynamic = ["version"]`, attr
`irfront._version.__version__`, evaluated statically: keep it a plain string literal),
and `irfront.__version__` re-exports it. This module must import nothing (no Ray).
"""

__version__ = "0.1.0"
