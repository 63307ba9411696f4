"""irfront.MicroBatchStream: the IR-based driver's in-flight bound is an
InFlightWindow; held-back time is reported per batch and in total. IR-lowered group tasks
carry an explicit max_retries (LoweringOptions.max_retries); vanilla stays plain Ray."""
from __future__ import annotations

import time

import pytest
import ray

import irfront
from irfront import Batch, BatchRecord, InFlightWindow, LoweringOptions, MicroBatchStream
from irfront.lowering.options import DEFAULT_GROUP_RETRIES
from irfront.lowering.submitter import submitter_for

pytestmark = pytest.mark.timeout(180)


@ray.remote
def slow(start, x):
    time.sleep(0.2)
    return x


def test_stream_uses_the_window_and_reports_held_back_time(cluster):
    stream = MicroBatchStream(interval_s=0.01, max_in_flight=2)
    seen: list[int] = []
    batches = [Batch(submit=lambda start, k=k: [slow.remote(start, k)], label=k)
               for k in range(8)]
    records = stream.run(batches, on_submit=lambda rec: seen.append(stream.window.in_flight))
    assert isinstance(stream.window, InFlightWindow)
    assert [r.label for r in records] == list(range(8))
    assert all(isinstance(r, BatchRecord) and r.done is not None for r in records)
    assert max(seen) <= 2
    rep = stream.report()
    assert rep["batches"] == 8 and rep["max_in_flight"] == 2 and rep["peak_in_flight"] == 2
    # 0.2 s per batch, an interval of 0.01 s: the window, not the schedule, set the pace.
    # Two batches run side by side and often finish together, freeing both slots at once,
    # so at least every other batch after the first two waits (batches 2, 4, 6), each for
    # most of a 0.2 s batch: >= 3 waits and > 3 x 0.15 s held back.
    assert rep["held_back_batches"] >= 3 and rep["held_back_s"] > 0.45
    assert sum(r.held_back_s for r in records) == pytest.approx(rep["held_back_s"])
    assert records[0].held_back_s == 0.0 and max(r.held_back_s for r in records) > 0.1
    assert stream.window.in_flight == 0


def test_stream_without_pressure_holds_nothing_back(cluster):
    stream = MicroBatchStream(interval_s=0.05, max_in_flight=4)
    records = stream.run([Batch(submit=lambda start: [], label=k) for k in range(5)])
    assert len(records) == 5
    assert stream.report()["held_back_s"] == 0.0
    assert all(r.held_back_s == 0.0 for r in records)


def test_failing_batch_still_raises(cluster):
    @ray.remote(max_retries=0)
    def boom(start):
        raise RuntimeError("batch failed")

    stream = MicroBatchStream(interval_s=0.01, max_in_flight=2)
    with pytest.raises(ray.exceptions.RayTaskError, match="batch failed"):
        stream.run([Batch(submit=lambda start: [boom.remote(start)])])


def test_lowering_retries_are_explicit_for_groups_and_absent_under_vanilla(monkeypatch):
    assert LoweringOptions().task_retries == DEFAULT_GROUP_RETRIES == 3
    assert LoweringOptions(scheduler="pack").task_retries == 3
    assert LoweringOptions(max_retries=0).task_retries == 0
    vanilla = LoweringOptions(scheduler="vanilla")
    assert vanilla.task_retries is None
    f = slow
    assert submitter_for(vanilla)._plain(f) is f  # plain Ray: not even an .options() call
    assert submitter_for(LoweringOptions(scheduler="vanilla", max_retries=5))._plain(f) \
        is not f
    for bad in (-2, 1.5, True, "3"):
        with pytest.raises(ValueError, match="max_retries"):
            LoweringOptions(max_retries=bad)


def test_lowered_groups_pass_max_retries(cluster, scheduler_mode, monkeypatch):
    import ray_patch
    from irfront import Broadcast, Map
    from conftest import has_core
    if not has_core():
        pytest.skip("ray_patch._scheduler not built")
    seen: list = []
    real = ray_patch.submit_group

    def spy(fn, args, **kw):
        seen.append(kw.get("max_retries"))
        return real(fn, args, **kw)

    monkeypatch.setattr(ray_patch, "submit_group", spy)

    @ray.remote
    def one():
        return 1

    @ray.remote
    def inc(x):
        return x + 1

    for opts, want in ((LoweringOptions(fuse=False), 3),
                       (LoweringOptions(fuse=True, max_retries=1), 1)):
        irfront.set_options(opts)
        seen.clear()
        out = Map(inc, Map(inc, Broadcast(one, 3)))
        assert ray.get(out.eval()) == [3, 3, 3]
        assert seen and set(seen) == {want}
        out.free()
