"""Streaming benchmark: the 2018 draft's micro-batch pipeline under each scheduler, side by
side with hand-written Ray baselines.

    python bench/stream.py                                   # embedded 4x2 LocalCluster
    python bench/stream.py --sizes 1,4,16 --schedulers vanilla,vanilla+fuse,locality \
        --json bench/results/stream.json --plots bench/results
    python bench/stream.py --address 127.0.0.1:6379          # nodes and CPUs from the cluster
    python bench/stream.py --demo                            # `make demo`: its series, minutes

--alone SERIES runs each of those series in a phase of its own before the rotation, one
size at a time, at the rate it sustains (its warm-up batches run back to back, one in
flight; the interval is 1.25x their median time): a saturated series (vanilla Ray on a
2-core machine) then delays no other. The summary at the end says which series ran so,
at what rate, and which series was fastest at each size.

Per micro-batch (one every --interval-ms): --maps Map(map_step) stages over the
--partitions handles of a Broadcast(generate_dependencies, data_mb), a shuffle Map into
--reducers partial sums (num_returns=reducers), ReduceActors("reduce", combine=
operator.add) accumulating them (the reducer sums its partials and says so: a grouped
shuffle may merge each node's partials per reducer first, as ray-expert-node does).

Baselines (--baselines; plain Ray in bench/baselines.py, no irfront; same pipeline, same
rotation, same in-flight bound): ray-expert (a broadcast copy per node, one fused task per
partition pinned to its copy's node, reducers pinned evenly), ray-expert-node (one fused
task per node), compiled-graph (a Ray Compiled Graph of actors holding their node's copy,
driven from its own driver process, bench/baseline_cgraph.py, one batch in flight: its
outputs are read before the next batch, as Ray 2.60 needs). A baseline that cannot run
gets a row saying why. The graph stays compiled for the whole rotation (a second compile
in one driver can hang), and its idle actors poll their channels: the share of a core its
processes used is printed; every series runs beside it.

Latency: from the batch's *scheduled* start to each reducer's reduce call (one machine,
one clock); one sample per reducer per batch. The schedule: each round of --chunk batches
of a series is a fixed grid, t0 + j * interval, t0 the start of the round's first batch;
a batch that waited for room in the in-flight window (held_back) or was submitted late
counts that wait (the reducers measure from the batch's actual start; the difference is
added). held_back_ms is reported beside it, and p50_from_start_ms (without the wait).
driver_cpu_ms: time.process_time() of the driver around each batch's submission (IR:
building and evaluating the batch; compiled-graph: execute() in its driver process).

The first fifth of each (scheduler, size) series is dropped as warm-up, after --warmup
unmeasured batches per series. Schedulers and sizes run interleaved on one cluster:
rounds of --chunk batches per (scheduler, size) series, the order rotated each round
(a seeded random order per round when sizes are interleaved; --size-order sequential: one
size after the other, schedulers interleaved per size). A floor runs in the same rotation:
the same pipeline shape with tiny data (8 bytes: empty tasks) under vanilla and under
locality (all optimisations); floor_ms is the lower p50.

Scheduler names: vanilla, pack, locality, and ablations of locality's optimisations:
locality-nofuse, locality-noshuffle, locality-nobatch, locality-noexec (one task per node
instead of a call to the node's persistent executor), locality-noplan (the core solves
every batch's placement: no cached plans), locality-nocombine (one partial per partition
reaches each reducer), locality+ahead (pre-scheduling on), locality-noresident (the
driver calls the executors and the reducers through Ray every batch, instead of feeding
each node's resident executor, which sends its merged partials straight to the reducers;
with it in --schedulers a floor-noresident runs too), locality-plain (all
off); a
"+fuse" etc. switches one on (e.g. vanilla+fuse). A suffix "@MS" sets a pre-scheduling
series' lead (submission MS ms before the batch's start; default: a
quarter of the interval), e.g. locality+ahead@50. "inferred" is the same pipeline written
in plain Ray (``stream_workload.plain_batch``) and run under ``irfront.infer``.
"locality-exactly-once" is locality with exactly-once reducers
(``stream_workload.ExactlyOnceReducer``, a ``CheckpointedReducer``).

New data every batch: a series named with the suffix "~new" (locality~new,
locality-exactly-once~new, ray-expert-node~new, ...; --new-data adds it to every series)
gets a batch of new data each time: the size's MB of float64 in --partitions arrays
(size / partitions each; 4 distinct batches per size, made before the run and used in
turn), handed to the pipeline inside the measured batch: ``Objects(parts)`` in the IR
series (irfront sends them to the executors in its frames), ``ray.put`` of each
partition in the baselines, which pin one task per node, or per partition, over their
own. The suffix "~put" instead (IR series only): the driver puts the partitions and the
batch gets their refs, ``Objects([ray.put(p) ...])``. The compiled graph has no new-data series (see
CGRAPH_NEW_DATA). Before the rotation the run measures what moving a batch's bytes costs
on this machine (``bytes_floor``): the driver's puts, and one copy of the batch over
loopback TCP to another process.

--work-ms W: each map stage computes, W ms of numpy per partition (``baselines.burn``:
passes of sqrt(x*x+1), their number calibrated on the driver per partition size), in
every series, baselines included.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import time

import benchpath  # noqa: E402,F401  (first: sys.path, Ray on loopback)

import numpy as np  # noqa: E402
import ray  # noqa: E402

import operator  # noqa: E402

import baselines as bl  # noqa: E402
import common  # noqa: E402
import stream_workload as wl  # noqa: E402
from baseline_cgraph import CompiledGraphDriver  # noqa: E402
import irfront  # noqa: E402
from irfront import Broadcast, InitActors, Objects, lowering_options  # noqa: E402

from irfront import Batch, MicroBatchStream, options_for  # noqa: E402


def describe(opts):
    return opts.describe()


def series_options(name: str):
    """The lowering options of an IR series (its name without a lead suffix)."""
    name = split_new(name)[0]
    return options_for("locality" if name == EXACTLY_ONCE else name)


NEW = "~new"  # a series suffix: new data every batch (see the module's docstring)
PUT = "~put"  # the same, the IR series' driver putting the partitions itself
POOL = 4  # distinct batches of new data per series and size, used in turn


def split_new(name: str) -> tuple[str, str]:
    """``"locality~new"`` -> ``("locality", "new")``, ``"locality~put"`` -> ``("locality",
    "put")``; no suffix: ``(name, "")`` (the same input every batch)."""
    for suffix in (NEW, PUT):
        if name.endswith(suffix):
            return name[:-len(suffix)], suffix[1:]
    return name, ""


def plain_name(name: str) -> str:
    base, new = split_new(name)
    return PLAIN_NAMES.get(base, base) + {"new": ", new data", "put": ", new data put",
                                          "": ""}[new]


# Why the compiled graph has no new-data series: its input would carry the batch's
# arrays through execute() to every node's actor.
CGRAPH_NEW_DATA = ("not run with new data: on Ray 2.60, a compiled graph fed the "
                   "partitions through execute() hit a channel timeout and then a raylet "
                   "check failure in the mutable-object provider on this cluster "
                   "(issue 27's attempt); not retried here")
FLOOR_MB = 8 / (1 << 20)  # 8 bytes: one float per partition
INFERRED = "inferred"  # the plain-Ray pipeline under irfront.infer
# locality with exactly-once reducers (a CheckpointedReducer class): checkpoints, call
# numbers and the restore fence on the path every batch takes
EXACTLY_ONCE = "locality-exactly-once"
FLOORS = {"floor-vanilla": "vanilla", "floor-locality": "locality"}
DEFAULT_BASELINES = ",".join(bl.BASELINES)
# The targets the project tracks (issue 9): series a / series b at the same size.
TARGETS = [("locality p50 <= 1.1x ray-expert-node p50", "locality", "ray-expert-node",
            "p50_ms", 1.1),
           ("locality p99 <= ray-expert p99", "locality", "ray-expert", "p99_ms", 1.0),
           ("locality p50 <= 0.8x vanilla+fuse p50", "locality", "vanilla+fuse", "p50_ms",
            0.8),
           # issue 20: the resident path against the compiled graph
           ("locality p50 <= 1.0x compiled-graph p50", "locality", "compiled-graph",
            "p50_ms", 1.0),
           ("locality p99 <= compiled-graph p99", "locality", "compiled-graph",
            "p99_ms", 1.0),
           # issue 11: plain Ray under irfront.infer, against the same pipeline in the IR
           ("inferred p50 <= 1.1x locality p50", INFERRED, "locality", "p50_ms", 1.1),
           # issue 27: new data every batch
           ("locality~new p50 <= 0.6x ray-expert-node~new p50", "locality~new",
            "ray-expert-node~new", "p50_ms", 0.6),
           ("locality~new p99 <= ray-expert-node~new p99", "locality~new",
            "ray-expert-node~new", "p99_ms", 1.0),
           (f"{EXACTLY_ONCE}~new p50 <= 0.6x ray-expert-node~new p50",
            f"{EXACTLY_ONCE}~new", "ray-expert-node~new", "p50_ms", 0.6),
           (f"{EXACTLY_ONCE}~new p99 <= ray-expert-node~new p99", f"{EXACTLY_ONCE}~new",
            "ray-expert-node~new", "p99_ms", 1.0),
           ("locality~new p50 <= 2x locality p50", "locality~new", "locality", "p50_ms",
            2.0)]
CPU_TARGET_MS = 2.0  # issue 20 (5 ms before the resident path)


# `--demo` (what `make demo` runs): the series a newcomer needs, a few minutes on a
# 2-core machine. Vanilla Ray cannot sustain one batch per 100 ms on such a machine (its
# backlog then weighs on every series beside it), so it runs in a phase of its own, at a
# rate it sustains (--alone). Options given on the command line override these.
DEMO = {"sizes": "1,4,16",
        "schedulers": f"vanilla,vanilla+fuse,locality,{EXACTLY_ONCE},locality~new,"
                      f"{INFERRED}",
        "alone": "vanilla",
        "baselines": "ray-expert-node,compiled-graph,ray-expert-node~new",
        "iterations": 20, "warmup": 3, "no_floor": True}
# What each series is, in a newcomer's words (the summary and the plots' legends).
PLAIN_NAMES = {"vanilla": "vanilla Ray", "vanilla+fuse": "fusion alone (vanilla+fuse)",
               "locality": "irfront (locality)",
               "ray-expert-node": "best hand-written Ray (ray-expert-node)",
               "ray-expert": "hand-written Ray, task per partition (ray-expert)",
               "compiled-graph": "Ray Compiled Graph", INFERRED: "plain Ray under infer",
               EXACTLY_ONCE: "irfront, exactly-once reducers"}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", action="store_true",
                    help="the demo's preset: " + ", ".join(
                        f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                        for k, v in DEMO.items()) + " (options given override it)")
    ap.add_argument("--alone", default="",
                    help="series (of --schedulers) that each run in a phase of their own, "
                         "before the rotation, at --alone-interval-ms: for a series that "
                         "cannot sustain --interval-ms, whose backlog would delay the "
                         "series beside it")
    ap.add_argument("--alone-interval-ms", type=float, default=None,
                    help="the batch interval of an --alone phase (default: measured: its "
                         "warm-up batches run back to back, one in flight, and the interval "
                         "is 1.25x their median time, per size, rounded up to 50 ms, at "
                         "least --interval-ms)")
    ap.add_argument("--nodes", type=int, default=4,
                    help="embedded cluster only (--address: taken from the cluster)")
    ap.add_argument("--cpus-per-node", type=int, default=2,
                    help="embedded cluster only (--address: taken from the cluster)")
    ap.add_argument("--object-store-mb", type=int, default=2048, help="per node")
    ap.add_argument("--maps", type=int, default=2)
    ap.add_argument("--reducers", type=int, default=None, help="default: nodes * 2")
    ap.add_argument("--partitions", type=int, default=None, help="default: nodes * 4")
    ap.add_argument("--sizes", default="1,4,8,16", help="MB per partition, comma list")
    ap.add_argument("--iterations", type=int, default=50,
                    help="measured batches per scheduler and size")
    ap.add_argument("--warmup", type=int, default=5,
                    help="unmeasured batches per scheduler and size, before measuring")
    ap.add_argument("--chunk", type=int, default=5,
                    help="batches per scheduler in each round of the rotation")
    ap.add_argument("--interval-ms", type=float, default=100.0)
    ap.add_argument("--max-in-flight", type=int, default=4)
    ap.add_argument("--lead-ms", type=float, default=None,
                    help="pre-scheduling lead: a batch is submitted this long before its "
                         "start (default: a quarter of the interval; '@MS' in a "
                         "scheduler name overrides it for that series)")
    ap.add_argument("--schedulers", default="vanilla,vanilla+fuse,locality")
    ap.add_argument("--baselines", default=DEFAULT_BASELINES,
                    help=f"hand-written Ray baselines, comma list of {DEFAULT_BASELINES} "
                         "(empty or 'none': no baseline)")
    ap.add_argument("--size-order", choices=("interleaved", "sequential"),
                    default="interleaved",
                    help="interleaved: every (scheduler, size) series in one rotation; "
                         "sequential: one size after the other (the older method)")
    ap.add_argument("--no-floor", action="store_true", help="skip the floor runs")
    ap.add_argument("--address", default=None,
                    help="an existing Ray cluster (its nodes and CPUs set the shape)")
    ap.add_argument("--json", default=None, metavar="PATH")
    ap.add_argument("--plots", default=None, metavar="DIR")
    ap.add_argument("--timeline", default=None, metavar="PATH")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--new-data", action="store_true",
                    help="new data every batch in every series (the suffix ~new on each; "
                         "the compiled graph is left out)")
    ap.add_argument("--work-ms", type=float, default=0.0,
                    help="each map stage computes this many ms of numpy per partition "
                         "(calibrated on this machine; 0: the draft's stages, which pass "
                         "data on)")
    a = ap.parse_args(argv)
    if a.demo:  # the preset as defaults: what the command line gave still wins
        ap.set_defaults(**DEMO)
        a = ap.parse_args(argv)
    import sys
    a.argv = list(sys.argv[1:] if argv is None else argv)
    a.sizes = [float(s) for s in a.sizes.split(",") if s]
    a.schedulers = [s for s in a.schedulers.split(",") if s]
    if a.new_data:
        a.schedulers = [s if split_new(s)[1] or s == INFERRED else s + NEW
                        for s in a.schedulers]
        a.alone = ",".join(s if split_new(s)[1] else s + NEW
                           for s in a.alone.split(",") if s)
        a.baselines = ",".join(s if split_new(s)[1] else s + NEW
                               for s in a.baselines.split(",")
                               if s not in ("", "none", "compiled-graph"))
    if any("-noresident" in s for s in a.schedulers):  # the ablation's own floor
        FLOORS["floor-noresident"] = "locality-noresident"
    a.alone = [s for s in a.alone.split(",") if s]
    bad = [s for s in a.alone if s not in a.schedulers]
    if bad:
        ap.error(f"--alone: {bad} not in --schedulers")
    a.baselines = [s for s in a.baselines.split(",") if s and s != "none"]
    bad = [b for b in a.baselines if split_new(b)[0] not in bl.BASELINES
           or split_new(b)[1] == "put"]
    if "compiled-graph" + NEW in a.baselines:
        ap.error(f"--baselines: compiled-graph{NEW}: {CGRAPH_NEW_DATA}")
    if bad:
        ap.error(f"--baselines: unknown {bad}; expected names from {DEFAULT_BASELINES}")
    return a


class Config:
    """One measured IR series: a scheduler (with its optimisation switches) and a data size
    (the floors use tiny data whatever the size)."""

    kind = "ir"

    def __init__(self, name: str, data_mb: float, floor: bool):
        base, self.new = split_new(FLOORS.get(name, name))
        base, self.lead_s = split_lead(base)
        self.opts = series_options(base)
        self.name, self.data_mb, self.floor = name, data_mb, floor
        self.ahead = bool(self.opts.enabled("preschedule") if hasattr(self.opts, "enabled")
                          else self.opts.preschedule)
        # one reducer set per base scheduler; the exactly-once series has its own
        self.actor_key = EXACTLY_ONCE if base == EXACTLY_ONCE else self.opts.scheduler
        self.deps = None
        self.pool, self.count = [], 0

    def prepare(self, args, ctx):
        if self.new:  # the batches' data, made before the run (not measured)
            self.pool = ctx.new_data(args, self.data_mb)
            return
        with lowering_options(self.opts):
            self.deps = Broadcast(wl.generate_dependencies, args.partitions, self.data_mb)
            ray.get(self.deps.eval()[0])

    def submit_fn(self, args, ctx, tag):
        reps = ctx.reps(args, self.data_mb, self.new)

        def submit(start):
            with lowering_options(self.opts):
                if self.new:  # a stream's source hands the batch's partitions over
                    parts = self.pool[self.count % len(self.pool)]
                    self.count += 1
                    deps = Objects(list(parts) if self.new == "new" else
                                   [ray.put(p) for p in parts])
                else:
                    deps = self.deps
                node = wl.build_batch(deps, ctx.reducers[self.actor_key], args.maps,
                                      args.reducers, start, tag, combine=operator.add,
                                      reps=reps)
                return node.eval()
        return submit

    def free(self):
        if self.deps is not None:
            self.deps.free()
        self.pool = []


class Inferred:
    """The pipeline written in plain Ray (``stream_workload.plain_batch``), each batch run
    under ``irfront.infer`` with the default options (locality). Its first batch records
    the broadcast, and the reducers if no inferred series made them yet, so they are
    matched and placed with the batch's data, as the IR's are."""

    kind, ahead, lead_s, floor = "inferred", False, None, False

    def __init__(self, name: str, data_mb: float):
        self.name, self.data_mb = name, data_mb
        self.deps = None

    def prepare(self, args, ctx):
        self.deps = None

    def submit_fn(self, args, ctx, tag):
        def submit(start):
            with irfront.infer() as block:
                if ctx.inferred_reducers is None:
                    ctx.inferred_reducers = [wl.CombiningReducer.remote(i)
                                             for i in range(args.reducers)]
                if self.deps is None:
                    self.deps = wl.generate_dependencies.remote(self.data_mb)
                out = wl.plain_batch(self.deps, ctx.inferred_reducers, args.maps,
                                     args.partitions, args.reducers, start, tag)
                out = block.finish(out)
            if tag is not None:
                ctx.infer_s[tag] = (block.session.overhead_s, block.session.inference_s)
            return out
        return submit

    def free(self):
        self.deps = None


class Baseline:
    """One measured baseline series (plain Ray, bench/baselines.py)."""

    ahead, lead_s, floor = False, None, False

    def __init__(self, name: str, data_mb: float):
        self.name, self.data_mb = name, data_mb
        self.base, self.new = split_new(name)
        self.kind = "cgraph" if name == "compiled-graph" else "plain"
        self.copies = None
        self.count = 0

    def prepare(self, args, ctx):
        if self.new:  # the batches' data, made before the run (not measured)
            self.copies = ctx.new_data(args, self.data_mb)
        elif self.kind == "plain":
            self.copies = bl.broadcast_copies(ctx.layout, self.data_mb)

    def submit_fn(self, args, ctx, tag):
        if self.kind == "cgraph":
            j = args.sizes.index(self.data_mb)

            def submit(start):
                ctx.cgraph.submit(j, start, list(tag) if tag else None)
                return []  # done at once for the window: the child bounds its own
            return submit
        reps = ctx.reps(args, self.data_mb, self.new)
        if not self.new:
            fn = bl.SUBMIT[self.base]
            return lambda start: fn(ctx.layout, self.copies, ctx.base_reducers, start, tag,
                                    reps)
        fn = bl.SUBMIT_NEW[self.base]

        def submit(start):  # puts the batch's partitions, as the IR series do
            parts = self.copies[self.count % len(self.copies)]
            self.count += 1
            return fn(ctx.layout, parts, ctx.base_reducers, start, tag, reps)
        return submit

    def free(self):
        self.copies = None


class Context:
    """What every series of a run shares: reducers, the baselines' layout, the graph, and
    per-batch measurements keyed by the batch's tag ``(name, size, k)``."""

    def __init__(self):
        self.reducers = {}  # IR reducer sets per base scheduler
        self.inferred_reducers = None  # the inferred series' (deferred actors)
        self.infer_s = {}  # tag -> irfront.infer's recording and matching time
        self.layout = None
        self.base_reducers = None
        self.cgraph = None
        self.unavailable = {}  # series name -> why it did not run
        self.cpu_s, self.start, self.held_s, self.sched = {}, {}, {}, {}
        self.raw = {}  # (name, size) -> [(k, latency from start, s)]
        self.phases = {}  # --alone series -> {"interval_ms", "wall_s"} of its own phase
        self.bytes_floor = {}  # size -> bytes_floor's figures (new-data runs)
        self._pools = {}  # size -> POOL batches of new data (lists of partitions)
        self.work = {}  # partition elements -> (burn passes, ms per pass)

    def new_data(self, args, data_mb):
        """POOL distinct batches of new data at this size, shared by the series (each
        batch is put afresh by the series that uses it)."""
        if data_mb not in self._pools:
            self._pools[data_mb] = [bl.new_partitions(data_mb, args.partitions, seed)
                                    for seed in range(POOL)]
        return self._pools[data_mb]

    def reps(self, args, data_mb, new) -> int:
        """The burn passes of one partition for --work-ms (0 without it): a new-data
        partition is data_mb / partitions, a broadcast one the whole array."""
        if args.work_ms <= 0:
            return 0
        elems = max(1, int(data_mb * (1 << 20)) // wl.FLOAT_BYTES
                    // (args.partitions if new else 1))
        if elems not in self.work:
            self.work[elems] = bl.work_reps(elems, args.work_ms / args.maps)
        return self.work[elems][0]


def split_lead(name: str) -> tuple[str, float | None]:
    """``"locality+ahead@25"`` -> ``("locality+ahead", 0.025)``; no suffix: lead None."""
    name = split_new(name)[0]
    if "@" not in name:
        return name, None
    base, ms = name.split("@", 1)
    return base, float(ms) / 1e3


def lead_s(args) -> float:
    """The pre-scheduling lead: --lead-ms, else a quarter of the interval. Half the
    interval (MicroBatchStream's default) put the next batch's submission inside the
    current batch's run whenever its latency exceeded interval/2, and lengthened its tail
    (docs/BENCHMARKS.md, "Pre-scheduling")."""
    return (args.lead_ms if args.lead_ms is not None else args.interval_ms / 4) / 1e3


def with_leads(plan, stream):
    """Yields the plan's batches, setting the stream's pre-scheduling lead per batch
    (``MicroBatchStream.run`` reads ``lead_s`` when it takes each batch)."""
    default = stream.lead_s
    for b, lead in plan:
        stream.lead_s = default if lead is None else lead
        yield b
    stream.lead_s = default


def timed(submit, ctx, tag):
    """``submit`` with the driver's CPU time around it recorded under ``tag``."""
    def run(start):
        c0 = time.process_time()
        out = submit(start)
        if tag is not None:
            ctx.cpu_s[tag] = time.process_time() - c0
        return out
    return run


def on_submit_fn(ctx, interval_s, bar):
    """Records each batch's actual start and held-back time, and its slot on its round's
    grid: t0 + j * interval, t0 the start of the round's first batch (tags carry the
    round's first index and j)."""
    def on_submit(rec):
        bar.update(1)
        tag = rec.label
        if tag is None:
            return
        name, size, k, k0 = tag
        ctx.start[tag[:3]] = rec.start
        ctx.held_s[tag[:3]] = rec.held_back_s
        if k == k0:
            ctx.sched[(name, size, k0)] = rec.start
        t0 = ctx.sched.get((name, size, k0), rec.start)
        ctx.sched[tag[:3]] = t0 + (k - k0) * interval_s
    return on_submit


def percentiles(xs_ms):
    a = np.asarray(xs_ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max()),
            "samples": int(a.size)}


def run_sizes(args, sizes, names, ctx, stream, bar, extras=True, warmup=None):
    """Runs every series of ``sizes`` (IR configs, floors, baselines), interleaved: rounds
    of --chunk batches per series, the order rotated each round. Reducer records land in
    ``ctx.raw``: {(name, size): [(k, latency from the batch's start in s)...]}.

    Interleaving the sizes too (not only the schedulers) matters on a shared machine:
    run one size after the other, a load trend over the minutes of a run reads as a size
    effect (docs/BENCHMARKS.md, "What bounds locality's latency")."""
    configs = []
    for size in sizes:
        series = [Inferred(n, size) if n == INFERRED else Config(n, size, False)
                  for n in names]
        if extras and not args.no_floor:
            series += [Config(n, FLOOR_MB, True) for n in FLOORS]
        if extras:
            series += [Baseline(n, size) for n in args.baselines
                       if n not in ctx.unavailable]
        for c in series:
            c.size = size  # the series' label (a floor's data is FLOOR_MB whatever the size)
        configs += series
    for c in configs:
        c.prepare(args, ctx)

    def batch(c, k=None, k0=None):
        tag = None if k is None else (c.name, c.size, k)
        label = None if k is None else (c.name, c.size, k, k0)
        return Batch(submit=timed(c.submit_fn(args, ctx, tag), ctx, tag), ahead=c.ahead,
                     label=label), c.lead_s

    plan = []
    for w in range(args.warmup if warmup is None else warmup):  # unmeasured: starts
        # workers, places actors
        plan += [batch(c) for c in configs]
    rounds = math.ceil(args.iterations / args.chunk)
    k = {(c.name, c.size): 0 for c in configs}
    for r in range(rounds):
        if len(sizes) == 1:  # as before: the order rotated each round
            order = configs[r % len(configs):] + configs[:r % len(configs)]
        else:  # a fixed pseudo-random order per round: no series always first or last
            order = [configs[j] for j in np.random.default_rng(r).permutation(len(configs))]
        for c in order:
            key = (c.name, c.size)
            k0 = k[key]
            for _ in range(min(args.chunk, args.iterations - k[key])):
                plan.append(batch(c, k[key], k0))
                k[key] += 1
    stream.run(with_leads(plan, stream),
               on_submit=on_submit_fn(ctx, stream.interval_s, bar))
    handles = [h for actors in ctx.reducers.values() for h in actors.eval()]
    handles += [a._resolve() for a in ctx.inferred_reducers or []]
    handles += list(ctx.base_reducers or [])
    for recs in ray.get([h.take_records.remote() for h in handles]):
        for (name, sz, i), lat in recs:
            ctx.raw.setdefault((name, sz), []).append((i, lat))
    for c in configs:
        c.free()


def sustainable_interval_ms(args, name, size, ctx, stream, bar) -> tuple[float, float]:
    """The interval of ``name``'s own phase at ``size``: its warm-up batches run back to
    back (one in flight, no wait between them); 1.25x their median time, rounded up to 50
    ms, and at least --interval-ms. Those batches are its warm-up. Returns (the interval,
    the median batch time), in ms."""
    n = max(3, args.warmup)
    c = Config(name, size, False)
    saved = stream.interval_s, stream.max_in_flight
    stream.interval_s, stream.max_in_flight = 0.0, 1
    try:
        c.prepare(args, ctx)
        recs = stream.run([Batch(submit=c.submit_fn(args, ctx, None), ahead=c.ahead)
                           for _ in range(n)], on_submit=lambda rec: bar.update(1))
        ends = [r.start for r in recs[1:]] + [time.time()]
        # one in flight: a batch ends about when the next one starts
        took = float(np.median([e - r.start for r, e in zip(recs, ends)]))
        c.free()
    finally:
        stream.interval_s, stream.max_in_flight = saved
    return max(args.interval_ms, math.ceil(1.25 * took * 1e3 / 50) * 50), took * 1e3


_RECEIVER = """
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
while True:
    head = s.recv(8, socket.MSG_WAITALL)
    if len(head) < 8:
        break
    left = struct.unpack("<Q", head)[0]
    buf = bytearray(left)
    view = memoryview(buf)
    while left:
        got = s.recv_into(view[len(buf) - left:], left)
        if not got:
            sys.exit(0)
        left -= got
    s.sendall(b"k")
"""


def bytes_floor(args, ctx, tries: int = 7) -> dict:
    """What moving one batch of new data costs on this machine, per size (ms, the best
    of ``tries``): ``put_ms``, the driver's ``ray.put`` of its partitions; ``send_ms``,
    pickling them and one copy over loopback TCP to another process, until it has read
    them all (the least any path from the driver to a worker pays)."""
    import pickle
    import socket
    import struct
    import subprocess
    import sys
    out = {}
    srv = socket.create_server(("127.0.0.1", 0))
    child = subprocess.Popen([sys.executable, "-c", _RECEIVER,
                              str(srv.getsockname()[1])])
    try:
        srv.settimeout(30)
        conn, _ = srv.accept()
        with conn:
            for size in args.sizes:
                parts = ctx.new_data(args, size)[0]
                put, send = [], []
                for _ in range(tries):
                    t = time.perf_counter()
                    refs = [ray.put(p) for p in parts]
                    put.append(time.perf_counter() - t)
                    del refs
                    t = time.perf_counter()
                    blob = pickle.dumps(parts, protocol=5)
                    conn.sendall(struct.pack("<Q", len(blob)) + blob)
                    conn.recv(1)
                    send.append(time.perf_counter() - t)
                out[size] = {"put_ms": min(put) * 1e3, "send_ms": min(send) * 1e3}
    finally:
        srv.close()
        child.wait(timeout=30)
    return out


def cluster_shape() -> tuple[int, int, list[int]]:
    """(nodes, CPUs per node, CPUs of each node) of the connected cluster: the alive nodes
    with CPUs; CPUs per node is the smallest when they differ."""
    cpus = [int(n["Resources"]["CPU"]) for n in ray.nodes()
            if n["Alive"] and n.get("Resources", {}).get("CPU", 0) > 0]
    return len(cpus), min(cpus, default=0), cpus


def main(argv=None):
    args = parse_args(argv)
    cluster = None
    if args.address:
        from irfront.cluster import connect
        connect(args.address)
        args.nodes, args.cpus_per_node, each = cluster_shape()
        print(f"cluster at {args.address}: {args.nodes} nodes with CPUs ({each} CPUs)",
              flush=True)
        if args.nodes == 0:
            raise SystemExit(f"--address {args.address}: no alive node with CPUs")
        address = args.address
    else:
        from irfront.cluster import LocalCluster
        print(f"starting a local cluster: {args.nodes} nodes x {args.cpus_per_node} CPUs "
              f"on 127.0.0.1 ...", flush=True)
        for attempt in (1, 2):  # a node's start can time out on a busy machine (Ray waits
            try:                # 30 s for a raylet to register): one more try
                cluster = LocalCluster(num_nodes=args.nodes,
                                       cpus_per_node=args.cpus_per_node,
                                       object_store_mb=args.object_store_mb)
                break
            except Exception as e:  # noqa: BLE001 - LocalCluster stopped what it started
                if attempt == 2:
                    raise
                print(f"the local cluster did not start ({type(e).__name__}: {e}); "
                      f"trying once more", flush=True)
        address = cluster.address
    args.reducers = args.reducers or args.nodes * 2
    args.partitions = args.partitions or args.nodes * 4
    ctx = Context()
    try:
        ray.cloudpickle.register_pickle_by_value(wl)
        bl.ship_by_value()
        return run(args, ctx, address)
    finally:
        if ctx.cgraph is not None:
            ctx.cgraph.finish()  # a no-op when it already finished or failed
        import irfront
        irfront.shutdown()
        if cluster is not None:
            cluster.shutdown()


def start_baselines(args, ctx, address):
    """The baselines' layout and reducers, and the compiled graph's driver process."""
    if not args.baselines:
        return
    ctx.layout = bl.Layout(bl.cpu_node_ids(), args.partitions, args.maps, args.reducers)
    if any(split_new(b)[0] in bl.PLAIN_BASELINES for b in args.baselines):
        ctx.base_reducers = bl.start_reducers(ctx.layout)
    if "compiled-graph" in args.baselines:
        print("starting the compiled graph's driver process ...", flush=True)
        ctx.cgraph = CompiledGraphDriver(address, partitions=args.partitions,
                                         maps=args.maps, reducers=args.reducers,
                                         sizes=args.sizes,
                                         max_in_flight=args.max_in_flight)
        if not ctx.cgraph.start():
            ctx.unavailable["compiled-graph"] = ctx.cgraph.error
            print(f"compiled-graph: not run: {ctx.cgraph.error}", flush=True)


def collect_cgraph(args, ctx):
    """The compiled graph's records, after every other series' (its teardown can take a
    raylet down on this Ray version, so it ends last)."""
    if ctx.cgraph is None or "compiled-graph" in ctx.unavailable:
        return
    out = ctx.cgraph.finish()
    if out is None:
        ctx.unavailable["compiled-graph"] = ctx.cgraph.error
        return
    for (name, sz, i), lat in out["records"]:
        ctx.raw.setdefault((name, sz), []).append((i, lat))
    ctx.cpu_s.update(out["cpu_s"])  # execute() in the child, not the pipe write here
    for tag, s in out["held_back_s"].items():
        ctx.held_s[tag] = ctx.held_s.get(tag, 0.0) + s


def series_stats(args, ctx, name, size):
    """Latencies (ms, from the scheduled start) of one series, warm-up dropped, and its
    per-batch figures."""
    drop = args.iterations // 5  # first fifth of the batches: warm-up
    xs, from_start = [], []
    for i, lat in ctx.raw.get((name, size), []):
        if i < drop:
            continue
        tag = (name, size, i)
        wait = max(0.0, ctx.start[tag] - ctx.sched[tag]) if tag in ctx.sched else 0.0
        xs.append((lat + wait) * 1e3)
        from_start.append(lat * 1e3)
    kept = [(name, size, i) for i in range(drop, args.iterations)]
    held = [ctx.held_s[t] * 1e3 for t in kept if t in ctx.held_s]
    cpu = [ctx.cpu_s[t] * 1e3 for t in kept if t in ctx.cpu_s]
    extra = {"p50_from_start_ms": float(np.percentile(from_start, 50)) if from_start else None,
             "held_back_ms": float(np.mean(held)) if held else None,
             "held_back_max_ms": float(np.max(held)) if held else None,
             "held_batches": int(sum(h > 0 for h in held)),
             "driver_cpu_ms": float(np.mean(cpu)) if cpu else None}
    rec = [ctx.infer_s[t] for t in kept if t in ctx.infer_s]
    if rec:  # the inferred series: what recording and matching cost of the driver's time
        extra["infer_overhead_ms"] = float(np.mean([r[0] for r in rec])) * 1e3
        extra["infer_only_ms"] = float(np.mean([r[1] for r in rec])) * 1e3
    return xs, extra


def run(args, ctx, address):
    from tqdm import tqdm
    names = args.schedulers
    for n in names:
        if n != INFERRED:
            series_options(split_lead(n)[0])  # fail early on a bad name
    bases = sorted({series_options(split_lead(FLOORS.get(n, n))[0]).scheduler
                    for n in names + ([] if args.no_floor else list(FLOORS))
                    if n != INFERRED and split_new(n)[0] != EXACTLY_ONCE})
    ctx.reducers = {b: InitActors(wl.Reducer, args.reducers,
                                  [(i,) for i in range(args.reducers)]) for b in bases}
    if any(split_new(n)[0] == EXACTLY_ONCE for n in names):
        ctx.reducers[EXACTLY_ONCE] = InitActors(wl.ExactlyOnceReducer, args.reducers,
                                                [(i,) for i in range(args.reducers)])
    stream = MicroBatchStream(interval_s=args.interval_ms / 1e3,
                              max_in_flight=args.max_in_flight,
                              lead_s=lead_s(args))
    rotation = [n for n in names if n not in args.alone]
    load0 = os.getloadavg()
    t_all = time.time()
    # Phase 1: each --alone series by itself (before the compiled graph's processes start),
    # at a rate it sustains: its backlog delays no other series.
    alone_total = len(args.sizes) * (max(3, args.warmup) + args.iterations)
    for name in args.alone:
        print(f"phase: {name} alone ...", flush=True)
        t, every, took = time.time(), {}, {}
        with tqdm(total=alone_total, unit="batch", disable=args.no_progress,
                  desc=f"{name} alone") as bar:
            for size in args.sizes:  # one size at a time, each at the rate it sustains
                if args.alone_interval_ms is not None:
                    ms = every[size] = args.alone_interval_ms
                else:
                    ms, took[size] = sustainable_interval_ms(args, name, size, ctx, stream,
                                                             bar)
                    every[size] = ms
                stream.interval_s = ms / 1e3
                try:
                    run_sizes(args, [size], [name], ctx, stream, bar, extras=False,
                              warmup=None if args.alone_interval_ms is not None else 0)
                finally:
                    stream.interval_s = args.interval_ms / 1e3
        ctx.phases[name] = {"interval_ms": every, "batch_ms": took,
                            "wall_s": time.time() - t}
    if any(split_new(n)[1] for n in names + args.baselines):
        ctx.bytes_floor = bytes_floor(args, ctx)
        for size, f in ctx.bytes_floor.items():
            print(f"moving a {size:g} MB batch of new data on this machine: put "
                  f"{f['put_ms']:.1f} ms, one copy to another process over loopback "
                  f"{f['send_ms']:.1f} ms (best of 7)", flush=True)
    start_baselines(args, ctx, address)
    baselines = [b for b in args.baselines if b not in ctx.unavailable]
    n_cfg = len(rotation) + (0 if args.no_floor else len(FLOORS)) + len(baselines)
    total = len(args.sizes) * n_cfg * (args.warmup + args.iterations)
    cg_cpu0 = ctx.cgraph.cpu_s() if ctx.cgraph and ctx.cgraph.pids else None
    t0 = time.time()
    if args.alone:
        print("phase: the rotation (" + ", ".join(rotation + baselines) + ") ...",
              flush=True)
    with tqdm(total=total, unit="batch", disable=args.no_progress,
              desc="micro-batches") as bar:
        groups = ([args.sizes] if args.size_order == "interleaved"
                  else [[size] for size in args.sizes])
        for sizes in groups:
            run_sizes(args, sizes, rotation, ctx, stream, bar)
    wall = time.time() - t0
    load1 = os.getloadavg()
    cg_cpu1 = ctx.cgraph.cpu_s() if cg_cpu0 is not None else None
    cg_share = (cg_cpu1 - cg_cpu0) / wall if cg_cpu1 is not None else None
    stream.close()
    collect_cgraph(args, ctx)
    if args.timeline:
        os.makedirs(os.path.dirname(os.path.abspath(args.timeline)), exist_ok=True)
        ray.timeline(filename=args.timeline)

    results: dict[tuple[str, float], list[float]] = {}
    extras = {}
    for key in ctx.raw:
        results[key], extras[key] = series_stats(args, ctx, *key)
    floor_rows = {n: percentiles([x for (m, _), xs in results.items() if m == n for x in xs])
                  for n in FLOORS if not args.no_floor
                  and any(xs for (m, _), xs in results.items() if m == n)}
    floor_ms = min((r["p50_ms"] for r in floor_rows.values()), default=None)
    floor_cpu = {n: np.mean([e["driver_cpu_ms"] for (m, _), e in extras.items()
                             if m == n and e["driver_cpu_ms"] is not None])
                 for n in floor_rows}
    series = names + args.baselines
    rows = []
    for name in series:
        for size in args.sizes:
            xs = results.get((name, size), [])
            if split_new(name)[0] in bl.BASELINES:
                sw = "plain Ray (bench/baselines.py)"
            elif name == INFERRED:
                sw = "plain Ray under irfront.infer: " + describe(options_for("locality"))
            else:
                base, lead = split_lead(name)
                sw = describe(series_options(base)) + (f" lead {lead * 1e3:g} ms"
                                                       if lead else "")
            if split_new(name)[1] == "new":
                sw += ("; new data every batch (" + ("put by the driver" if
                       split_new(name)[0] in bl.BASELINES else "Objects of values") + ")")
            elif split_new(name)[1] == "put":
                sw += "; new data every batch (Objects of refs the driver put)"
            if args.work_ms > 0:
                sw += f"; maps compute {args.work_ms:g} ms per partition"
            if name in ctx.phases:
                sw += f"; own phase, one batch / {ctx.phases[name]['interval_ms'][size]:g} ms"
            if not xs:
                why = ctx.unavailable.get(name, "no samples")
                rows.append({"scheduler": name, "switches": sw, "data_mb": size,
                             "note": f"not run: {why}"})
                continue
            rows.append({"scheduler": name, "switches": sw, "data_mb": size,
                         **percentiles(xs), **extras[(name, size)]})
    by = {(r["scheduler"], r["data_mb"]): r for r in rows if "p50_ms" in r}
    for r in rows:
        v = by.get(("vanilla", r["data_mb"]))
        ok = "p50_ms" in r
        r["p50_x_floor"] = r["p50_ms"] / floor_ms if ok and floor_ms else None
        r["p50_vs_vanilla"] = r["p50_ms"] / v["p50_ms"] if ok and v else None
        r["p99_vs_vanilla"] = r["p99_ms"] / v["p99_ms"] if ok and v else None
    cols = ["scheduler", "data_mb", "p50_ms", "p90_ms", "p99_ms", "max_ms", "samples",
            "p50_from_start_ms", "held_back_ms", "held_batches", "driver_cpu_ms",
            "p50_x_floor", "p50_vs_vanilla", "p99_vs_vanilla"]
    fmt = {c: ".1f" for c in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "p50_from_start_ms",
                              "held_back_ms")}
    fmt.update({c: ".2f" for c in ("p50_x_floor", "p50_vs_vanilla", "p99_vs_vanilla",
                                   "driver_cpu_ms")})
    fmt["data_mb"] = "g"
    shape = {"nodes": args.nodes, "cpus_per_node": args.cpus_per_node,
             "partitions": args.partitions, "maps": args.maps, "reducers": args.reducers,
             "interval_ms": args.interval_ms, "max_in_flight": args.max_in_flight,
             "lead_ms": lead_s(args) * 1e3,
             "iterations": args.iterations, "warmup": args.warmup, "chunk": args.chunk,
             "size_order": args.size_order,
             "object_store_mb": args.object_store_mb,
             "address": args.address or "embedded LocalCluster"}
    print()
    common.print_table([r for r in rows if "p50_ms" in r], cols, fmt, title=(
        f"stream latency, scheduled batch start -> reducer ({args.nodes} nodes x "
        f"{args.cpus_per_node} CPUs, {args.partitions} partitions, {args.maps} maps, "
        f"{args.reducers} reducers, one batch / {args.interval_ms:g} ms; {wall:.0f} s; "
        f"load average {load0[0]:.1f} at start, {load1[0]:.1f} at end)"))
    for r in rows:
        if "note" in r:
            print(f"{r['scheduler']} at {r['data_mb']:g} MB: {r['note']}")
    for n, r in floor_rows.items():
        print(f"{n}: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, driver CPU "
              f"{floor_cpu[n]:.2f} ms/batch ({r['samples']} samples, 8-byte data)")
    print(f"floor_ms (lower floor p50): {floor_ms:.1f}" if floor_ms else "no floor run")
    if cg_share is not None:
        print(f"compiled graph's processes (its driver and {len(ctx.cgraph.pids) - 1} "
              f"actors) used {cg_share:.2f} of a core over the rotation, its own batches "
              f"included: every series ran beside it (an idle graph polls its channels)")
    for name, ph in ctx.phases.items():
        print(f"{name}: ran alone before the rotation, one batch every "
              f"{every_text(ph['interval_ms'])} ({ph['wall_s']:.0f} s)")
    print()
    print_summary(series, args.sizes, rows, ctx.phases)
    targets = check_targets(args.sizes, by)
    for t in targets:
        print(t["text"])
    print_story(args, series, by, targets, ctx, cg_share, time.time() - t_all)
    if args.json:
        keys = ("scheduler", "data_mb", "p50_ms", "p90_ms", "p99_ms", "max_ms", "samples",
                "p50_from_start_ms", "held_back_ms", "held_back_max_ms", "held_batches",
                "driver_cpu_ms", "switches", "note")
        payload = {"runs": [{k: r[k] for k in keys if k in r} for r in rows],
                   "unavailable": ctx.unavailable, "targets": targets,
                   "floor_ms": floor_ms, "floors": floor_rows, "cluster": shape,
                   "machine": common.machine_info() | {
                       "node": platform.node(), "loadavg_start": load0,
                       "loadavg_end": load1},
                   "provenance": common.provenance(load0),
                   "labels": {n: plain_name(n) for n in series},
                   "command": "bench/stream.py " + " ".join(args.argv),
                   "wall_s": wall, "cgraph_cores_used": cg_share,
                   "own_phases": ctx.phases,
                   "bytes_floor": {f"{k:g}": v for k, v in ctx.bytes_floor.items()},
                   "work": {"work_ms": args.work_ms,
                            "passes": {str(k): v for k, v in ctx.work.items()}},
                   "latencies_ms": {f"{n}@{s:g}": xs for (n, s), xs in results.items()}}
        write_payload(args.json, payload)
        print(f"wrote {args.json}")
    if args.plots:
        paths = plot(args.plots, [n for n in series if any(results.get((n, s))
                                                           for s in args.sizes)],
                     args.sizes, results, floor_ms, ctx.phases)
        print("plots: " + ", ".join(paths))
    return rows


def print_summary(series, sizes, rows, phases=None):
    """p50 / p99 (ms) per series per size, one line per series."""
    by = {(r["scheduler"], r["data_mb"]): r for r in rows}
    table = []
    for name in series:
        line = {"series": name + (" (own phase)" if name in (phases or {}) else "")}
        for s in sizes:
            r = by.get((name, s), {})
            line[f"{s:g} MB p50/p99"] = (f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f}"
                                         if "p50_ms" in r else "not run")
        cpu = [r["driver_cpu_ms"] for s in sizes
               if (r := by.get((name, s), {})).get("driver_cpu_ms") is not None]
        line["driver_cpu_ms"] = f"{np.mean(cpu):.2f}" if cpu else "-"
        table.append(line)
    common.print_table(table, title="p50 / p99 ms from the scheduled start, per size")


# p50s within this factor of the fastest are named beside it (print_story).
TIE = 1.15
# What irfront's ratio to each series tells (print_story).
MEANS = {
    "vanilla": "what a Ray user gets today, with no change to the program",
    "vanilla+fuse": "irfront's task fusion alone, without its placement: the rest of "
                    "the gap is what placing whole stages together buys",
    "ray-expert": "a Ray expert's hand-pinned program, one fused task per partition",
    "ray-expert-node": "the fastest plain-Ray program written by hand (one pinned task "
                       "per node, partials combined per node): irfront gets there from "
                       "the IR, without hand placement",
    "compiled-graph": "Ray's static graph of actors exchanging data through shared-"
                      "memory channels, with no task submitted per batch: the floor "
                      "irfront is measured against",
    INFERRED: "the same program in plain Ray under @irfront.infer",
}


def _sizes_text(sizes, pred) -> str:
    return ", ".join(f"{s:g}" for s in sizes if pred(s)) + " MB"


def print_story(args, series, by, targets, ctx, cg_share, wall_s):
    """The summary a newcomer reads: p50 per series and size in plain words, the fastest
    series at each size, irfront's ratio to each other series with the tracked target and
    what the ratio means, and how the run was arranged."""
    sizes = args.sizes
    if not any(("locality", s) in by for s in sizes):
        return
    width = max(len(plain_name(n)) for n in series) + 2
    head = "".join(f"{f'{s:g} MB':>8}" for s in sizes)
    print()
    print("=" * 72)
    print(f"What this run shows ({wall_s:.0f} s of benchmark; load average now "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print("=" * 72)
    print(f"Each batch: a {'/'.join(f'{s:g}' for s in sizes)} MB array read by "
          f"{args.partitions} partitions, {args.maps} map stages, a shuffle into "
          f"{args.reducers} reducer actors; {args.nodes} Ray nodes x {args.cpus_per_node} "
          f"CPUs on 127.0.0.1.")
    drop = args.iterations // 5
    print(f"Latency: from each batch's scheduled start to its arrival at each reducer; "
          f"{args.iterations} batches per series and size, the first {drop} dropped as "
          f"warm-up ({(args.iterations - drop) * args.reducers} samples each).")
    print()
    print(f"{'p50 latency, ms (lower is better)':<{width}}{head}")
    shown = [n for n in series if any((n, s) in by for s in sizes)]
    for n in shown:
        mark = " *" if n in ctx.phases else ""
        cells = "".join(f"{by[(n, s)]['p50_ms']:>8.0f}" if (n, s) in by else f"{'-':>8}"
                        for s in sizes)
        print(f"{plain_name(n) + mark:<{width}}{cells}")
    fastest = {s: min((n for n in shown if (n, s) in by), key=lambda n: by[(n, s)]["p50_ms"])
               for s in sizes}
    print("fastest at each size (p50):")
    for s in sizes:
        best = by[(fastest[s], s)]["p50_ms"]
        close = [n for n in shown if n != fastest[s] and (n, s) in by
                 and by[(n, s)]["p50_ms"] <= TIE * best]
        print(f"  {s:g} MB: {plain_name(fastest[s])}" + (
            f" (within {TIE - 1:.0%}: " + ", ".join(plain_name(n) for n in close) +
            "; a difference that small can flip between runs on a busy machine)"
            if close else ""))
    for n, ph in ctx.phases.items():
        took = ph.get("batch_ms") or {}
        print(f"* {plain_name(n)} ran alone, before the others (a series that cannot "
              f"keep up would delay every series beside it), at one batch every "
              f"{every_text(ph['interval_ms'])}" + (
                  f": its batches took {' / '.join(f'{v:.0f}' for v in took.values())} ms "
                  f"back to back at the start of its phase (interval: 1.25x, rounded up)"
                  if took else "") +
              (f"; a lighter load than the others' one batch every {args.interval_ms:g} ms."
               if any(v > args.interval_ms for v in ph["interval_ms"].values()) else "."))
        behind = [s for s in sizes if (n, s) in by
                  and by[(n, s)]["p50_ms"] > ph["interval_ms"].get(s, math.inf)]
        if behind:
            print(f"  It fell behind even that rate at {_sizes_text(sizes, lambda s: s in behind)}"
                  f" (its p50 exceeds its interval there): the machine got busier during "
                  f"its phase, and those figures include its own backlog.")
    rest = [n for n in shown if n not in ctx.phases]
    print(f"The others ({', '.join(rest)}) ran interleaved, {args.chunk} batches at a "
          f"time, one batch every {args.interval_ms:g} ms"
          + (f", beside the compiled graph's processes ({cg_share:.2f} of a core)"
             if cg_share is not None else "") + ".")
    print()
    print("irfront (locality) against each: its p50 / theirs at " +
          " / ".join(f"{s:g}" for s in sizes) + " MB")
    bounds = {b: (bound, text) for text, a, b, col, bound in TARGETS
              if a == "locality" and col == "p50_ms"}
    for n in shown:
        if n == "locality":
            continue
        ratios = [by[("locality", s)]["p50_ms"] / by[(n, s)]["p50_ms"]
                  if ("locality", s) in by and (n, s) in by else None for s in sizes]
        figs = " / ".join("-" if r is None else f"{r:.2f}" for r in ratios)
        line = f"  vs {plain_name(n)}: {figs}x"
        if n in bounds:
            bound = bounds[n][0]
            met = [s for s, r in zip(sizes, ratios) if r is not None and r <= bound]
            missed = [s for s, r in zip(sizes, ratios) if r is not None and r > bound]
            verdict = ("met at every size" if not missed else
                       "missed at every size" if not met else
                       f"met at {_sizes_text(sizes, lambda s: s in met)}, missed at "
                       f"{_sizes_text(sizes, lambda s: s in missed)}")
            line += f"  (target <= {bound:g}x: {verdict})"
        print(line)
        print(f"      {MEANS.get(n, '')}")
    cpu = [by[("locality", s)].get("driver_cpu_ms") for s in sizes
           if ("locality", s) in by]
    cpu = [c for c in cpu if c is not None]
    if cpu:
        print(f"  irfront's driver CPU per batch: {min(cpu):.1f}-{max(cpu):.1f} ms "
              f"(target <= {CPU_TARGET_MS:g} ms: "
              f"{'met' if max(cpu) <= CPU_TARGET_MS else 'missed'}); the best hand-written "
              f"program's: " + (
                  "{:.1f}-{:.1f} ms".format(*minmax(
                      by[("ray-expert-node", s)].get("driver_cpu_ms") for s in sizes
                      if ("ray-expert-node", s) in by))
                  if any(("ray-expert-node", s) in by for s in sizes) else "not run"))
    print("=" * 72)


def every_text(interval_ms: dict) -> str:
    """{1.0: 300, 4.0: 450} -> '300 / 450 ms at 1 / 4 MB'."""
    return (" / ".join(f"{v:g}" for v in interval_ms.values()) + " ms at " +
            " / ".join(f"{k:g}" for k in interval_ms) + " MB")


def minmax(xs):
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else (float("nan"), float("nan"))


def check_targets(sizes, by):
    """The tracked targets where both series ran: [{target, size, ratio, met, text}]."""
    out = []
    for text, a, b, col, bound in TARGETS:
        for s in sizes:
            ra, rb = by.get((a, s)), by.get((b, s))
            if not ra or not rb:
                continue
            ratio = ra[col] / rb[col]
            out.append({"target": text, "data_mb": s, "ratio": ratio,
                        "met": ratio <= bound,
                        "text": f"{text} at {s:g} MB: {ratio:.2f}x "
                                f"({'met' if ratio <= bound else 'missed'})"})
    for s in sizes:
        r = by.get(("locality", s))
        if r and r.get("driver_cpu_ms") is not None:
            ok = r["driver_cpu_ms"] <= CPU_TARGET_MS
            out.append({"target": f"locality driver CPU <= {CPU_TARGET_MS:g} ms/batch",
                        "data_mb": s, "ratio": r["driver_cpu_ms"] / CPU_TARGET_MS,
                        "met": ok,
                        "text": f"locality driver CPU <= {CPU_TARGET_MS:g} ms/batch at "
                                f"{s:g} MB: {r['driver_cpu_ms']:.2f} ms "
                                f"({'met' if ok else 'missed'})"})
        r = by.get((INFERRED, s))
        if r and r.get("infer_overhead_ms") is not None and r.get("driver_cpu_ms"):
            share = r["infer_overhead_ms"] / r["driver_cpu_ms"]
            only = r["infer_only_ms"] / r["driver_cpu_ms"]
            out.append({"target": "inferred recording <= 10% of driver CPU", "data_mb": s,
                        "ratio": share / 0.10, "met": share <= 0.10,
                        "text": f"inferred recording and matching <= 10% of driver CPU at "
                                f"{s:g} MB: {r['infer_overhead_ms']:.2f} of "
                                f"{r['driver_cpu_ms']:.2f} ms = {share:.0%} "
                                f"({'met' if share <= 0.10 else 'missed'}); without "
                                f"building the IR nodes (an IR program builds them too): "
                                f"{r['infer_only_ms']:.2f} ms = {only:.0%}"})
    return out


def write_payload(path, payload):
    import json
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")


def _log_axis(axis):
    """A log axis with clean labels: majors at 1, 2, 5 x 10^k, as plain numbers; minor
    ticks unlabelled (matplotlib's default labels minors too when a panel spans less
    than a decade, and they overlap)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=30))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10)), numticks=30))
    axis.set_minor_formatter(NullFormatter())


def series_groups(names, per_panel=5, ref="locality"):
    """The series split into CDF panels of at most ``per_panel``; with more, every panel
    holds ``ref`` (irfront's default) as the common reference."""
    if len(names) <= per_panel:
        return [list(names)]
    others = [n for n in names if n != ref]
    k = per_panel - 1 if ref in names else per_panel
    rows = math.ceil(len(others) / k)  # balanced: no near-empty last panel
    return [([ref] if ref in names else []) + list(part)
            for part in np.array_split(np.array(others, dtype=object), rows)]


def _label(name, phases):
    label = plain_name(name)
    if name in (phases or {}):
        label += " (alone, at the rate it sustains)"
    return label


def plot(directory, names, sizes, results, floor_ms, phases=None):
    """Two figures: the latency CDF, one panel per size and at most 5 series per panel
    (more series: more rows, irfront's default in each); p50 against size in one panel,
    p99 drawn lighter in the same colour."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(directory, exist_ok=True)
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20").colors
    color = {n: palette[i % len(palette)] for i, n in enumerate(names)}
    paths = []
    groups = series_groups(names)
    fig, axes = plt.subplots(len(groups), len(sizes),
                             figsize=(max(5.0, 3.4 * len(sizes)) + 3.2, 3.2 * len(groups)),
                             sharey=True, sharex="col", squeeze=False)
    for row, group in zip(axes, groups):
        for ax, size in zip(row, sizes):
            for name in group:
                xs = np.sort(results.get((name, size), []))
                if xs.size:
                    ax.plot(xs, np.arange(1, xs.size + 1) / xs.size, color=color[name],
                            lw=1.6, label=_label(name, phases))
            if floor_ms:
                ax.axvline(floor_ms, color="grey", ls=":", lw=1, label="floor p50")
            ax.set_xscale("log")
            _log_axis(ax.xaxis)
            ax.tick_params(axis="x", labelrotation=45, labelsize=8)
            ax.grid(alpha=0.3, which="major")
        row[0].set_ylabel("fraction of samples")
        row[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                       frameon=False)
    for ax, size in zip(axes[0], sizes):
        ax.set_title(f"{size:g} MB per partition", fontsize=10)
    for ax in axes[-1]:
        ax.set_xlabel("latency from scheduled start (ms, log)")
    fig.suptitle("latency CDF (further left is faster)", fontsize=10)
    fig.tight_layout()
    p = os.path.join(directory, "stream_cdf.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    for name in names:
        have = [s for s in sizes if results.get((name, s))]
        p50 = [np.percentile(results[(name, s)], 50) for s in have]
        p99 = [np.percentile(results[(name, s)], 99) for s in have]
        ax.plot(have, p50, marker="o", lw=2, color=color[name], label=_label(name, phases))
        ax.plot(have, p99, marker=".", ls="--", lw=1, alpha=0.35, color=color[name])
    if floor_ms:
        ax.axhline(floor_ms, color="grey", ls=":", lw=1, label="floor p50")
    ax.plot([], [], color="black", lw=2, marker="o", label="p50 (solid)")
    ax.plot([], [], color="black", lw=1, ls="--", alpha=0.35, label="p99 (light, dashed)")
    ax.set_yscale("log")
    _log_axis(ax.yaxis)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels([f"{s:g}" for s in sizes])
    ax.set_xlabel("data per partition (MB)")
    ax.set_ylabel("latency from scheduled start (ms, log)")
    ax.set_title("p50 latency against data size (lower is faster)", fontsize=10)
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    p = os.path.join(directory, "stream_latency_vs_size.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


if __name__ == "__main__":
    main()
