"""The one source of group ids in the process: a counter that never hands an id out
twice, even to the runtime of a later Ray job, for grouped and plain submission alike;
and ``NO_NODE``, the int node id of a task whose node is not known."""
from __future__ import annotations

import itertools
import threading

NO_NODE = -1
_COUNTER = itertools.count(1)
_LOCK = threading.Lock()


def next_group_id() -> int:
    with _LOCK:
        return next(_COUNTER)
