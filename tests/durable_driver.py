"""A driver process for tests/test_durable.py: runs a durable stream of sum reducers over
a deterministic replayable source against an existing cluster, in its own process so the
test can SIGKILL it mid-stream and start another one on the same checkpoint location.

    python tests/durable_driver.py --address ADDR --dir DIR --out OUT.json [--finish]

It writes a progress file (``OUT.progress``: batches submitted so far, rewritten after
every batch) and, when the stream ends, ``OUT`` (JSON: the reducer totals, what the
driver resumed from, its report). With ``--finish`` it closes the stream as finished
(the detached reducers killed, the checkpoints deleted) after reading the totals.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (os.path.join(ROOT, "python"), ROOT, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

import numpy as np  # noqa: E402
import ray  # noqa: E402

from irfront import (REDUCER_OPTIONS, Batch, InitActors, Map,  # noqa: E402
                     MicroBatchStream, Objects, ReduceActors, SumReducerBase)

NUM_BATCHES = 40
PARTS = 3
PART_LEN = 2_000
REDUCERS = 3
STREAM = "durable-test"

SumReducer = ray.remote(**REDUCER_OPTIONS)(SumReducerBase)


def parts_of(k: int) -> list:
    """Batch k's partitions: a function of k alone (the source can restart anywhere)."""
    rng = np.random.default_rng(1000 + k)
    return [rng.integers(0, 1000, PART_LEN, dtype=np.int64) for _ in range(PARTS)]


def expected(num_batches: int = NUM_BATCHES, reducers: int = REDUCERS) -> list[int]:
    """What each reducer must hold at the end, computed without Ray."""
    totals = [0] * reducers
    for k in range(num_batches):
        for p in parts_of(k):
            for i, c in enumerate(np.array_split(p, reducers)):
                totals[i] += int(c.sum())
    return totals


@ray.remote
def split(n, part):
    return tuple(np.array_split(part, n))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--interval", type=float, default=0.25)
    ap.add_argument("--checkpoint-every", type=int, default=3)
    ap.add_argument("--finish", action="store_true")
    a = ap.parse_args()
    t_start = time.time()
    ray.init(address=a.address, log_to_driver=False)
    t_connected = time.time()
    reducers = InitActors(SumReducer, REDUCERS, [(i,) for i in range(REDUCERS)])
    progress = a.out + ".progress"
    first: list = []

    def source(start: int):
        """The replayable source: batches start, start + 1, ... NUM_BATCHES - 1."""
        for k in range(start, NUM_BATCHES):
            def submit(_t, k=k):
                sh = Map(split, Objects(parts_of(k)), [(REDUCERS,)] * PARTS,
                         num_returns=REDUCERS)
                return ReduceActors("reduce", reducers, sh)
            yield Batch(submit, label=k)

    def on_submit(rec):
        if not first:
            first.append(time.time())
        tmp = progress + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(rec.label))
        os.replace(tmp, progress)

    stream = MicroBatchStream(interval_s=a.interval, max_in_flight=3,
                              checkpoint_every=a.checkpoint_every, restart_timeout_s=90,
                              checkpoint_dir=a.dir, name=STREAM)
    resumed = dict(stream.resume())
    t_resumed = time.time()
    stream.run(source, on_submit=on_submit)
    t_done = time.time()
    handles = reducers.eval()
    totals = [int(x) for x in ray.get([h.get_total.remote() for h in handles])]
    stats = ray.get([h.reducer_stats.remote() for h in handles])
    report = stream.report()
    if a.finish:
        stream.close(finished=True)
        report = stream.report()
    out = {"totals": totals, "expected": expected(), "resumed": resumed,
           "reducer_stats": stats, "report": report, "pid": os.getpid(),
           "connect_s": t_connected - t_start, "resume_s": t_resumed - t_connected,
           "first_batch_s": (first[0] - t_start) if first else None,
           "first_batch_at": first[0] if first else None, "started_at": t_start,
           "run_s": t_done - t_resumed}
    with open(a.out + ".tmp", "w") as f:
        json.dump(out, f, default=str)
    os.replace(a.out + ".tmp", a.out)
    ray.shutdown()


if __name__ == "__main__":
    main()
