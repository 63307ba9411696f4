"""irfront's own Ray calls: kept out of the recording, and made as plain Ray makes them.

While a thread is inside ``quiet()``:
- the hooks (``patch.route``) give that thread no recording session, so the
  ``.remote()`` calls irfront makes itself (creating a deferred actor's group, submitting
  a matched node, a plain call's submission) go to Ray as they are instead of being
  recorded as the user's (per thread: a program's other threads are not affected);
- group tasks keep Ray's own task names and actors stay unnamed
  (``ray_patch.submit.plain_names``), so errors and ``ray.util.list_named_actors()``
  read as the plain program's;
- outside a stream driver's batch, ``executors`` and ``resident`` are off in this
  thread's lowering options (a stream in another thread keeps them): a stage's tasks
  are Ray tasks (``ray.cancel`` reaches them, their errors name the user's function);
- inside a stream driver's batch (``MicroBatchStream``: its call log is set), the
  options stay as they are, so a recognised reduce takes the resident path, and each
  actor call answers on its own (``Results.answering``): the program reads one result
  per actor call, as from Ray, and the driver waits on the batch's executors.
Nested uses count.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from irfront.lowering.evaluation import EVALUATOR
from irfront.lowering.options import get_options, lowering_options
from ray_patch.submit import plain_names

_local = threading.local()


def is_quiet() -> bool:
    """Whether the calling thread is inside ``quiet()``."""
    return getattr(_local, "depth", 0) > 0


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Inside, this thread's Ray calls are irfront's own: not recorded, plainly named."""
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        with plain_names():
            opts = get_options()
            if EVALUATOR.results.call_log is not None:  # a stream driver's batch
                with EVALUATOR.results.answering():
                    yield
            elif opts.executors is False and opts.resident is False:
                yield
            else:
                with lowering_options(executors=False, resident=False):
                    yield
    finally:
        _local.depth -= 1
