"""Import first in every benchmark script: makes ``python bench/<script>.py`` work from a
checkout (puts ``python/`` and the repository root on ``sys.path``, for runs without
``pip install -e .``) and keeps Ray on loopback (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
must be set before ``ray`` is imported; see docs ENVIRONMENT notes)."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (os.path.join(ROOT, "python"), ROOT, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
