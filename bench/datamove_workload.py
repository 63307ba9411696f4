"""The data-moving workload's tasks and reducer actor (bench/datamove.py drives them).

Per micro-batch, on H hosts:

    ingest   one task per host, pinned there (the data arrives on that host), with skew:
             host h makes ``skew[h]`` partitions of records (key, 7 int64 payload
             columns: 64 bytes a record)
    join     Map: partition p joined with table partition p (same key range), which
             lives on the NEXT host: two large inputs on different hosts
    enrich, project                                 Map chain (one-to-one)
    shuffle  Map, num_returns=R: records repartitioned by a payload hash; the pieces
             are records (megabytes), not partial sums
    reduce   ReduceActors: reducer r gets the r-th piece of every partition and
             aggregates it (a running sum per key bucket)

The table changes slowly: a new version every few batches, made by one pinned task per
table partition (so it lives where it is made).

Accounting travels with the data, so it is exact whatever the scheduler did: every
object records the Ray node that made it; every task adds to its output's ``moved``
(per stage) the bytes of its inputs made on another node, and appends ``(stage, node)``
to ``trace``. A shuffle passes its input's account on in piece 0 only, so each byte is
counted once. The reducers return the batch's account with their own input bytes.

The calling convention does not matter here: ``join`` finds which argument is the table,
stages take one object, and ``Reducer.reduce`` accepts its pieces as separate arguments
or as one list (the IR's 2018 convention or the older one).

This module is pickled by value (``ray.cloudpickle.register_pickle_by_value``).
"""
from __future__ import annotations

import time

import numpy as np
import ray

RECORD_BYTES = 64  # int64 key + 7 int64 payload columns
TABLE_ROW_BYTES = 32  # int64 key + 3 int64 values
PAY = 7
KEY_BUCKETS = 1024


def _node() -> str:
    return ray.get_runtime_context().get_node_id()


def nbytes(x: dict) -> int:
    return sum(v.nbytes for k, v in x.items() if isinstance(v, np.ndarray))


def _charge(moved: dict, stage: str, inputs, me: str) -> dict:
    out = dict(moved)
    b = sum(nbytes(x) for x in inputs if x["node"] != me)
    out[stage] = out.get(stage, 0) + b
    return out


@ray.remote
def ingest(bid: int, host: int, parts: list, rows: int, key_range: int, seed: int):
    """The host's share of batch ``bid``: one record partition per entry of ``parts``
    (partition p holds keys in [p * key_range, (p + 1) * key_range))."""
    me = _node()
    out = []
    for p in parts:
        rng = np.random.default_rng((seed, bid, p))
        keys = rng.integers(p * key_range, (p + 1) * key_range, rows, dtype=np.int64)
        pay = rng.integers(0, 1 << 20, (rows, PAY), dtype=np.int64)
        out.append({"kind": "batch", "bid": bid, "part": p, "node": me, "keys": keys,
                    "pay": pay, "moved": {}, "trace": [("ingest", me)]})
    return out[0] if len(out) == 1 else tuple(out)


@ray.remote
def make_table(version: int, part: int, key_range: int, seed: int):
    """Table partition ``part`` (version ``version``): every key of the partition's range
    once, sorted, with 3 int64 values."""
    rng = np.random.default_rng((seed, 7919, version, part))
    keys = np.arange(part * key_range, (part + 1) * key_range, dtype=np.int64)
    vals = rng.integers(0, 1 << 20, (key_range, 3), dtype=np.int64)
    return {"kind": "table", "version": version, "part": part, "node": _node(),
            "keys": keys, "vals": vals}


@ray.remote
def join(a: dict, b: dict) -> dict:
    """Enriches each record with its key's table row (searchsorted lookup)."""
    batch, table = (a, b) if a["kind"] == "batch" else (b, a)
    me = _node()
    idx = np.searchsorted(table["keys"], batch["keys"])
    idx = np.minimum(idx, table["keys"].size - 1)
    pay = batch["pay"].copy()
    pay[:, 1:4] = table["vals"][idx]
    return {**batch, "node": me, "pay": pay, "keys": batch["keys"].copy(),
            "moved": _charge(batch["moved"], "join", (batch, table), me),
            "trace": batch["trace"] + [("join", me, batch["part"])]}


@ray.remote
def enrich(x: dict) -> dict:
    """A derived column: a multiplicative hash of two payload columns."""
    me = _node()
    pay = x["pay"].copy()
    pay[:, 4] = (pay[:, 0] * 2654435761 + pay[:, 1] * 40503) % 1000003
    pay[:, 5] = pay[:, 2] ^ pay[:, 3]
    return {**x, "node": me, "pay": pay, "moved": _charge(x["moved"], "enrich", (x,), me),
            "trace": x["trace"] + [("enrich", me)]}


@ray.remote
def project(x: dict) -> dict:
    """Re-keys every record (the repartition key) and sorts by it."""
    me = _node()
    pay = x["pay"].copy()
    pay[:, 6] = (pay[:, 4] * 31 + pay[:, 5]) & 0x7FFFFFFF
    order = np.argsort(pay[:, 6], kind="stable")
    return {**x, "node": me, "pay": pay[order], "keys": x["keys"][order],
            "moved": _charge(x["moved"], "project", (x,), me),
            "trace": x["trace"] + [("project", me)]}


def _shuffle(x: dict, r: int):
    me = _node()
    dest = x["pay"][:, 6] % r
    order = np.argsort(dest, kind="stable")
    bounds = np.searchsorted(dest[order], np.arange(r + 1))
    moved = _charge(x["moved"], "shuffle", (x,), me)
    out = []
    for j in range(r):
        sel = order[bounds[j]:bounds[j + 1]]
        out.append({"kind": "piece", "bid": x["bid"], "part": x["part"], "node": me,
                    "keys": x["keys"][sel], "pay": x["pay"][sel],
                    "moved": moved if j == 0 else {},
                    "trace": x["trace"] + [("shuffle", me)] if j == 0 else []})
    return tuple(out)


def shuffle_fn(r: int):
    """The shuffle stage for ``r`` reducers (``num_returns=r``): records by hash % r."""
    @ray.remote(num_returns=r)
    def shuffle(x: dict):
        return _shuffle(x, r)
    return shuffle


@ray.remote(num_cpus=0)
class Reducer:
    """Aggregates its pieces (a running sum of payload column 0 per key bucket) and
    returns the batch's account: its arrival time (``time.time()``; the driver subtracts
    the batch's start, same machine clock), bytes moved per stage, where each stage ran."""

    def __init__(self, index: int):
        self.index = index
        self.sums = np.zeros(KEY_BUCKETS, dtype=np.int64)
        self.records = 0

    def reduce(self, *pieces):
        now = time.time()
        if len(pieces) == 1 and isinstance(pieces[0], list):
            pieces = pieces[0]
        me = _node()
        moved: dict = {}
        trace: list = []
        for pc in pieces:
            np.add.at(self.sums, pc["keys"] % KEY_BUCKETS, pc["pay"][:, 0])
            self.records += int(pc["keys"].size)
            for k, v in pc["moved"].items():
                moved[k] = moved.get(k, 0) + v
            trace += pc["trace"]
        moved["reduce"] = sum(nbytes(pc) for pc in pieces if pc["node"] != me)
        trace.append(("reduce", me))
        return {"index": self.index, "bid": pieces[0]["bid"], "node": me,
                "t": now,
                "moved": moved, "trace": trace,
                "in_bytes": sum(nbytes(pc) for pc in pieces)}

    def total(self):
        return int(self.sums.sum()), self.records
