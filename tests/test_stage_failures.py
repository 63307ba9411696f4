"""A batch whose stage raises: exactly-once reducers never skip it. A Ray failure raised
by the stage (a side actor died) is retried until every piece is good; any other error
stops the stream with the stage's own error, naming the batch, and the reducers hold an
exact prefix of the stream. Read through the user's handles, on the resident path and
without it."""
from __future__ import annotations

import operator
import os

import numpy as np
import pytest
import ray

from irfront import (Batch, InitActors, Map, MicroBatchStream, Objects, ReduceActors,
                     lowering_options, options_for)
from conftest import needs_core
from streams import SumReducer, expected_totals, split

pytestmark = needs_core
FAIL_AT = 5


@ray.remote
def _flaky(batch, kind, marker, part):
    """Raises ``kind`` once: in the first task of batch FAIL_AT to get here."""
    if batch == FAIL_AT:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return part
        os.close(fd)
        if kind == "actor":  # as a stage that calls a side actor that died
            raise ray.exceptions.RayActorError()
        raise ValueError(f"bad record in batch {batch}")
    return part


def _run(kind: str, marker: str, resident: bool, batches: int = 12):
    rng = np.random.default_rng(7)
    src = [[rng.integers(0, 100, 64) for _ in range(8)] for _ in range(batches)]
    refs = [[ray.put(p) for p in parts] for parts in src]
    reducers = InitActors(SumReducer, 4, [(i,) for i in range(4)])

    def batch(k, parts):
        def submit(start):
            x = Map(_flaky, Objects(parts), [(k, kind, marker)] * len(parts))
            sh = Map(split, x, [(4,)] * len(parts), num_returns=4)
            return ReduceActors("reduce", reducers, sh, combine=operator.add)
        return Batch(submit)

    stream = MicroBatchStream(interval_s=0.0, max_in_flight=3, checkpoint_every=3,
                              restart_timeout_s=60)
    error = None
    with lowering_options(options_for("locality" if resident else "locality-noresident")):
        try:
            stream.run(batch(k, p) for k, p in enumerate(refs))
        except Exception as e:  # noqa: BLE001 - the test reads it
            error = e
    handles = reducers.eval()
    totals = ray.get([h.get_total.remote() for h in handles])
    applied = [s for s, _ in ray.get([h.applied_status.remote() for h in handles])]
    return src, stream.stats, error, totals, applied


def test_a_stage_that_raises_a_ray_failure_once_is_retried(cluster, tmp_path):
    src, report, error, totals, applied = _run("actor", str(tmp_path / "once"), True)
    assert error is None, repr(error)
    assert totals == expected_totals(src, 4)
    assert applied == [len(src) - 1] * 4
    assert report.lost_calls == 0 and report.stage_retries >= 1
    assert report.failed_batch is None


@pytest.mark.parametrize("kind,resident", [("value", True), ("value", False),
                                           ("actor", False)])
def test_a_stage_that_raises_stops_the_stream_on_an_exact_prefix(cluster, tmp_path,
                                                                  kind, resident):
    """A ValueError, or (without the resident path, where the failed object cannot be
    computed again) a Ray failure: the stage's own error, the batch named, and the
    reducers hold exactly the batches before it."""
    src, report, error, totals, applied = _run(kind, str(tmp_path / "once"), resident)
    want = ValueError if kind == "value" else ray.exceptions.RayActorError
    assert isinstance(error, want), repr(error)
    assert f"batch {FAIL_AT}" in "".join(getattr(error, "__notes__", [])), error
    assert report.failed_batch is not None and report.failed_batch["batch"] == FAIL_AT
    assert totals == expected_totals(src[:FAIL_AT], 4), "not an exact prefix"
    assert applied == [FAIL_AT - 1] * 4
