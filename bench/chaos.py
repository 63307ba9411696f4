"""Faults at random moments, from another thread, into exactly-once streams, on every
lowering path; the sums are then read through the program's own reducer handles.

    python bench/chaos.py --seed 1 --runs 2 --faults-per-run 4     # the long matrix
    python bench/chaos.py --seed 1 --short                          # what make test runs

Each run streams ``batches`` micro-batches (``Objects -> Map(triple) -> Map(split,
num_returns=n) -> ReduceActors("reduce")`` on ``n`` exactly-once reducers, one per
node) under one lowering configuration (``CONFIGS``), while an injector thread brings
``faults`` faults of the given kinds (``FAULTS``) at random moments: a random batch
position, then a random delay. Everything random comes from the run's seed, so a
failing run is replayed with the seed, configuration and fault kinds its row names
(the thread timing itself is the machine's).

After each run it checks, through ``InitActors.eval()`` (the user's handles):
- every reducer's sum equals plain Python's on the same input;
- every reducer applied exactly one call per batch (its own ``calls`` counter, part of
  its checkpointed state);
- ``run()`` returned (no ``RecoveryError``) and said ``lost 0``;
- recoveries: at most ``RECOVERY_BOUND`` per fault, and a fault aimed at one reducer
  brings back only that reducer (no cascade over the others).
It reports, per fault, the time from the fault to the reducer's recovery.

Durable streams (``driver-sigkill``): a driver process (this file with ``driver``) runs a
durable stream and is SIGKILLed at a random moment, several times in a row, each new
driver resuming from the checkpoints; the last one runs to the end and the sums are
checked the same way.

The long matrix writes its table into docs/RELIABILITY.md (``--doc``) between the
markers ``<!-- chaos:begin -->`` and ``<!-- chaos:end -->``.
"""
from __future__ import annotations

import argparse
import json
import operator
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import benchpath  # noqa: F401  (first: sys.path, Ray on loopback)
import common
from chaos_report import table
import numpy as np
import psutil
import ray

import irfront
import ray_patch
from irfront import (REDUCER_OPTIONS, Batch, InitActors, Map, MicroBatchStream, Objects,
                     ReduceActors, SumReducerBase)
from irfront.lowering.options import lowering_options, options_for
from ray_patch import executors as executors_

PART_LEN = 40_000  # int64 per partition: > 100 KB, so objects live in the object stores
PARTS = 6
RECOVERY_BOUND = 3  # recoveries of reducers per injected fault, at most
EFFECT_TIMEOUT_S = 20.0  # a fault must have taken effect by then (its process gone)
INJECTOR_JOIN_S = 180.0  # the run waits this long for a fault being injected


# ---- the pipeline ----------------------------------------------------------------------------
def _build_remote() -> tuple[Any, Any, Any]:
    # Built in a function so that cloudpickle ships them by value: workers need not
    # import this file.
    @ray.remote
    def triple(part):
        return part * 3

    @ray.remote
    def scale(k, part):
        return part * k

    @ray.remote
    def split(n, part):
        return tuple(np.array_split(part, n))

    class ChaosReducer(SumReducerBase):
        """A sum reducer that also counts the calls it applied (checkpointed state)."""

        def __init__(self, index):
            super().__init__(index)
            self.calls = 0

        def reduce(self, *pieces):
            self.calls += 1
            return super().reduce(*pieces)

        def totals(self):
            return int(self.total), int(self.calls)

        def pid(self):
            return os.getpid()

    # Its name as a top-level class: what Ray shows (ray::ChaosReducer.reduce) and the
    # durable stream's actor names are built from it.
    ChaosReducer.__qualname__ = "ChaosReducer"
    return triple, scale, split, ray.remote(**REDUCER_OPTIONS)(ChaosReducer)


triple, scale, split, ChaosReducer = _build_remote()
# Processes under a raylet that a task-worker fault must spare (it aims at tasks): the
# actors' workers, and the node's agents and I/O workers (a raylet dies with its agent).
SPARED_TITLES = ("ray::ChaosReducer", "ray::StageExecutor", "ray::Gate",
                 "ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::IDLE_SpillWorker",
                 "ray::IDLE_RestoreWorker", "ray::IDLE_DeleteWorker")


def source(seed: int, batches: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.integers(0, 1000, PART_LEN, dtype=np.int64) for _ in range(PARTS)]
            for _ in range(batches)]


def expected(data: list[list[np.ndarray]], n: int,
             factors: Optional[list[int]] = None) -> list[int]:
    """What each reducer must hold, computed without Ray (batch k's parts times
    ``factors[k]``; ``triple``'s 3 by default)."""
    totals = [0] * n
    for k, parts in enumerate(data):
        for p in parts:
            for i, c in enumerate(np.array_split(p * (3 if factors is None else
                                                      factors[k]), n)):
                totals[i] += int(c.sum())
    return totals


def make_batch(parts: list, reducers: InitActors, combine: Any, ahead: bool,
               label: int, factor: Optional[int] = None, put: bool = False) -> Batch:
    """One batch: its parts tripled, or (``factor``: the same parts in every batch, the
    resident feed's case) scaled by the batch's own factor. ``put``: the driver puts
    the parts itself and the batch gets their refs."""
    n = reducers.n

    def submit(_start):
        src = Objects([ray.put(p) for p in parts] if put else list(parts))
        x = Map(triple, src) if factor is None else \
            Map(scale, src, [(factor,)] * len(parts))
        sh = Map(split, x, [(n,)] * len(parts), num_returns=n)
        return ReduceActors("reduce", reducers, sh, combine=combine)

    return Batch(submit, ahead=ahead, label=label)


# ---- the configurations ----------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    name: str
    options: str  # a series name for irfront.lowering.options_for
    combine: bool = False  # the reduce declares combine=operator.add
    ahead: bool = False  # batches submitted ahead of their start (pre-scheduling)
    shared: bool = False  # every batch reads the same inputs (refs), scaled per batch
    # new data every batch (every configuration but "shared") as refs the driver put,
    # not as values
    put: bool = False


CONFIGS = [
    Config("default", "locality"),
    Config("default+combine", "locality", combine=True),
    Config("nofuse", "locality-nofuse", combine=True),
    Config("noshuffle", "locality-noshuffle", combine=True),
    Config("nobatch", "locality-nobatch", combine=True),
    Config("noexec", "locality-noexec", combine=True),
    Config("noplan", "locality-noplan", combine=True),
    Config("nocombine", "locality-nocombine", combine=True),
    Config("vanilla", "vanilla", combine=True),
    Config("pack", "pack", combine=True),
    Config("spread", "spread", combine=True),
    Config("ahead", "locality+ahead", combine=True, ahead=True),
    Config("noresident", "locality-noresident", combine=True),
    Config("resident-fed", "locality+resident", combine=True, shared=True),
    # new data every batch on the resident path: values ("default+combine"), and refs
    # the driver put; both reach the executors inside their feeds' frames
    Config("resident-new-put", "locality+resident", combine=True, put=True),
]
CONFIG_BY_NAME = {c.name: c for c in CONFIGS}


# ---- the faults ------------------------------------------------------------------------------
@dataclass
class Fault:
    kind: str
    at_batch: int  # the stream had submitted this many batches
    t: float = 0.0  # time.time() of the injection
    target: str = ""
    reducer: Optional[int] = None  # the reducer it aimed at, if any
    effect_s: Optional[float] = None  # until the process was gone
    recovered_s: Optional[float] = None  # from the fault to the reducer's recovery
    skipped: str = ""  # why it could not be injected (nothing of its kind to hit)


class Target:
    """What the injector may hit during one run."""

    def __init__(self, cluster: Any, reducers: InitActors, extra_node: Any):
        self.cluster = cluster
        self.reducers = reducers
        self.extra_node = extra_node  # a node added for this run: node faults hit it

    def raylet_pids(self) -> list[int]:
        nodes = [self.cluster.head_node] + list(self.cluster.worker_nodes)
        pids = []
        for nd in nodes:
            for info in nd.all_processes.get("raylet", []):
                if info.process is not None and info.process.poll() is None:
                    pids.append(info.process.pid)
        return pids


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pid: int) -> float:
    t0 = time.monotonic()
    while _alive(pid):
        if time.monotonic() - t0 > EFFECT_TIMEOUT_S:
            raise RuntimeError(f"process {pid} still alive {EFFECT_TIMEOUT_S} s after its "
                               "fault")
        time.sleep(0.01)
    return time.monotonic() - t0


def _reducer_pid(h: Any) -> int:
    """The reducer's pid; a reducer still coming back from an earlier fault is asked
    again until it answers (the fault then lands right after its restart)."""
    deadline = time.monotonic() + EFFECT_TIMEOUT_S
    while True:
        try:
            return ray.get(h.pid.remote(), timeout=EFFECT_TIMEOUT_S)
        except ray.exceptions.RayActorError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def fault_reducer_kill(tg: Target, f: Fault, rng: random.Random) -> None:
    """``ray.kill(handle, no_restart=False)`` through the user's handle."""
    hs = tg.reducers.eval()
    i = rng.randrange(len(hs))
    pid = _reducer_pid(hs[i])
    f.reducer, f.target, f.t = i, f"reducer {i} (pid {pid})", time.time()
    ray.kill(hs[i], no_restart=False)
    f.effect_s = _wait_gone(pid)


def fault_reducer_sigkill(tg: Target, f: Fault, rng: random.Random) -> None:
    """The reducer's process SIGKILLed."""
    hs = tg.reducers.eval()
    i = rng.randrange(len(hs))
    pid = _reducer_pid(hs[i])
    f.reducer, f.target, f.t = i, f"reducer {i} (pid {pid})", time.time()
    os.kill(pid, signal.SIGKILL)
    f.effect_s = _wait_gone(pid)


def _task_workers(tg: Target) -> list[psutil.Process]:
    out = []
    for rp in tg.raylet_pids():
        try:
            kids = psutil.Process(rp).children(recursive=False)
        except psutil.NoSuchProcess:
            continue
        for p in kids:
            try:
                title = " ".join(p.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if title.startswith("ray::") and not title.startswith(SPARED_TITLES) \
                    and "Agent" not in title.split()[0]:
                out.append(p)
    return out


def fault_worker_sigkill(tg: Target, f: Fault, rng: random.Random) -> None:
    """A task worker SIGKILLed while it runs a task (up to 3 s of looking for one; an
    idle worker proves nothing, so none is killed then and the fault is skipped)."""
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        busy = []
        for p in _task_workers(tg):
            try:
                if not " ".join(p.cmdline()).startswith("ray::IDLE"):
                    busy.append(p)
            except psutil.NoSuchProcess:
                pass
        if busy:
            p = busy[rng.randrange(len(busy))]
            try:
                title = " ".join(p.cmdline())[:60].strip()
                f.target, f.t = f"task worker {p.pid} ({title})", time.time()
                os.kill(p.pid, signal.SIGKILL)
            except (psutil.NoSuchProcess, ProcessLookupError):
                continue  # it ended meanwhile: look again
            f.effect_s = _wait_gone(p.pid)
            return
        time.sleep(0.002)
    f.skipped = "no task running for 3 s"


def fault_executor_kill(tg: Target, f: Fault, rng: random.Random) -> None:
    """A persistent per-node executor killed (``ray.kill``, Ray restarts it)."""
    rt = ray_patch.get_runtime()
    ex = sorted(executors_.executor_nodes(rt).items())
    if not ex:
        f.skipped = "no executors under this configuration"
        return
    node, h = ex[rng.randrange(len(ex))]
    try:
        pid = ray.get(h.__ray_call__.remote(lambda self: os.getpid()),
                      timeout=EFFECT_TIMEOUT_S)
    except ray.exceptions.RayError as e:
        f.skipped = f"executor not reachable: {type(e).__name__}"
        return
    f.target, f.t = f"executor on {node[:8]} (pid {pid})", time.time()
    ray.kill(h, no_restart=False)
    f.effect_s = _wait_gone(pid)


def fault_node_remove(tg: Target, f: Fault, rng: random.Random) -> None:
    """The run's extra node removed from the cluster (its processes end)."""
    node = tg.extra_node
    if node is None or node not in tg.cluster.worker_nodes:
        f.skipped = "no extra node left to remove"
        return
    f.target, f.t = f"node {node.node_id[:8]} removed", time.time()
    t0 = time.monotonic()
    tg.cluster.remove_node(node)
    f.effect_s = time.monotonic() - t0


def fault_raylet_kill(tg: Target, f: Fault, rng: random.Random) -> None:
    """The extra node's raylet SIGKILLed (its workers and object store go with it; the
    GCS declares the node dead by its health checks)."""
    node = tg.extra_node
    if node is None or node not in tg.cluster.worker_nodes:
        f.skipped = "no extra node left"
        return
    info = node.all_processes["raylet"][0]
    pid = info.process.pid
    f.target, f.t = f"raylet {pid} of node {node.node_id[:8]}", time.time()
    os.kill(pid, signal.SIGKILL)
    f.effect_s = _wait_gone(pid)


FAULTS: dict[str, Callable[[Target, Fault, random.Random], None]] = {
    "reducer-kill": fault_reducer_kill,
    "reducer-sigkill": fault_reducer_sigkill,
    "worker-sigkill": fault_worker_sigkill,
    "executor-kill": fault_executor_kill,
    "node-remove": fault_node_remove,
    "raylet-kill": fault_raylet_kill,
}
NODE_FAULTS = ("node-remove", "raylet-kill")  # at most one per run: one extra node
REDUCER_FAULTS = ("reducer-kill", "reducer-sigkill")
DURABLE = "driver-sigkill"
ALL_KINDS = tuple(FAULTS) + (DURABLE,)


def _fed() -> int:
    import ray_patch.resident as resident_
    return resident_.fed_batches()


def _sent() -> int:
    import ray_patch.resident as resident_
    return resident_.sent_inputs()


def applicable(cfg: Config, kind: str) -> bool:
    """Whether the configuration has what the fault kind hits."""
    opts = options_for(cfg.options)
    on_executors = all(opts.enabled(s) for s in ("executors", "batch_tasks",
                                                  "shuffle_by_node", "fuse"))
    if kind == "executor-kill":
        return opts.enabled("executors")
    if kind == "worker-sigkill":  # the whole stage runs on executors: no task workers
        return not on_executors
    return True


# ---- one run ---------------------------------------------------------------------------------
@dataclass
class RunResult:
    config: str
    kinds: list[str]
    seed: int
    batches: int
    exact: bool = False
    calls_ok: bool = False
    error: str = ""
    recoveries: int = 0
    recovered_reducers: list[int] = field(default_factory=list)
    faults: list[dict] = field(default_factory=list)
    wall_s: float = 0.0
    lost_calls: int = 0
    totals: list[int] = field(default_factory=list)
    expected: list[int] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    fed: int = 0  # batches (per node) the resident executors got through their feeds
    sent: int = 0  # inputs the driver sent inside those frames (refs it put)

    @property
    def injected(self) -> int:
        return sum(1 for f in self.faults if not f["skipped"])

    def problems(self) -> list[str]:
        """What went wrong (empty: the run kept every promise)."""
        out = []
        if self.error:
            out.append(self.error)
        if not self.exact:
            out.append(f"sums {self.totals} != expected {self.expected}")
        if not self.calls_ok:
            out.append(f"calls applied {self.calls} != {self.batches} per reducer")
        if self.lost_calls:
            out.append(f"lost {self.lost_calls}")
        if self.recoveries > RECOVERY_BOUND * max(1, self.injected):
            out.append(f"{self.recoveries} recoveries for {self.injected} faults "
                       f"(bound {RECOVERY_BOUND} per fault)")
        aimed = {f["reducer"] for f in self.faults if f["reducer"] is not None}
        others = [f for f in self.faults if f["kind"] not in REDUCER_FAULTS
                  and not f["skipped"]]
        if not others and aimed and not set(self.recovered_reducers) <= aimed:
            out.append(f"reducers {sorted(set(self.recovered_reducers) - aimed)} recovered "
                       f"but only {sorted(aimed)} were hit (a cascade)")
        return out


def _injector(tg: Target, plan: list[Fault], rng: random.Random, submitted: list[int],
              done: threading.Event, interval_s: float) -> None:
    for f in plan:
        while submitted[0] < f.at_batch and not done.is_set():
            time.sleep(0.002)
        if done.is_set():
            f.skipped = "the stream ended first"
            continue
        time.sleep(rng.uniform(0, 3 * interval_s))
        f.at_batch = submitted[0]
        try:
            FAULTS[f.kind](tg, f, rng)
        except Exception as e:  # recorded; the run's checks decide
            f.skipped = f"injection failed: {type(e).__name__}: {e}"


def run_one(cluster: Any, cfg: Config, kinds: list[str], seed: int, batches: int = 24,
            interval_s: float = 0.03, checkpoint_every: int = 4,
            log: Callable[[str], None] = print) -> RunResult:
    """One stream under ``cfg`` with the faults ``kinds`` (in a random order) at random
    moments; the checks of the module's docstring, as a ``RunResult``."""
    rng = random.Random(seed)
    res = RunResult(cfg.name, list(kinds), seed, batches)
    extra = cluster.add_node() if any(k in NODE_FAULTS for k in kinds) else None
    ray_patch.refresh_nodes()
    n = sum(1 for nd in ray.nodes() if nd["Alive"])  # one reducer per node
    data = source(seed, batches)
    factors = None
    if cfg.shared:  # one set of parts, put once: batches after the first are fed
        data = [data[0]] * batches
        factors = [2 + k % 7 for k in range(batches)]
    res.expected = expected(data, n, factors)
    inputs = [[ray.put(p) for p in data[0]]] * batches if cfg.shared else data
    reducers = InitActors(ChaosReducer, n, [(i,) for i in range(n)])
    tg = Target(cluster, reducers, extra)
    order = list(kinds)
    rng.shuffle(order)
    positions = sorted(rng.randrange(2, max(3, batches - 4)) for _ in order)
    plan = [Fault(k, p) for k, p in zip(order, positions)]
    submitted, done = [0], threading.Event()
    inj = threading.Thread(target=_injector, name="chaos-injector", daemon=True,
                           args=(tg, plan, rng, submitted, done, interval_s))
    combine = operator.add if cfg.combine else None

    def on_submit(_rec):
        submitted[0] += 1
        if submitted[0] == batches - 1:  # every fault lands before the last batch
            inj.join(timeout=EFFECT_TIMEOUT_S * 2)
            done.set()

    stream = MicroBatchStream(interval_s=interval_s, max_in_flight=3,
                              checkpoint_every=checkpoint_every, restart_timeout_s=60,
                              max_recoveries=10, name=f"chaos-{cfg.name}")
    t0 = time.perf_counter()
    fed0, sent0 = _fed(), _sent()
    inj.start()
    try:
        with lowering_options(options_for(cfg.options)):
            stream.run((make_batch(p, reducers, combine, cfg.ahead, k,
                                   None if factors is None else factors[k], cfg.put)
                        for k, p in enumerate(inputs)), on_submit=on_submit)
        got = ray.get([h.totals.remote() for h in reducers.eval()], timeout=120)
        res.totals = [t for t, _ in got]
        res.calls = [c for _, c in got]
        res.exact = res.totals == res.expected
        res.fed = _fed() - fed0
        res.sent = _sent() - sent0
        res.calls_ok = res.calls == [batches] * n
        res.lost_calls = stream.stats.lost_calls
    except Exception as e:
        res.error = f"{type(e).__name__}: {e}"[:500]
    finally:
        done.set()
        # the injector may be inside a fault (a node's removal takes long under load):
        # the teardown waits for it, so that nothing of this run outlives it there
        inj.join(timeout=INJECTOR_JOIN_S)
        if inj.is_alive():
            res.error = (res.error + "; " if res.error else "") + (
                f"the fault injector was still running {INJECTOR_JOIN_S:.0f} s after "
                "the stream ended")
        res.wall_s = time.perf_counter() - t0
        recs = stream.stats.recoveries
        res.recoveries = len(recs)
        res.recovered_reducers = sorted({r["reducer"] for r in recs})
        for f in plan:
            if not f.skipped:
                after = [r["at"] - f.t for r in recs if r["at"] >= f.t]
                f.recovered_s = min(after) if after else None
        res.faults = [asdict(f) for f in plan]
        stream.close()
        _teardown(cluster, reducers, extra)
    status = "ok" if not res.problems() else "FAILED: " + "; ".join(res.problems())
    log(f"[{cfg.name:16s}] seed {seed} {'+'.join(kinds):32s} "
        f"{res.injected} faults, {res.recoveries} recoveries, {res.wall_s:5.1f} s  {status}")
    return res


def _teardown(cluster: Any, reducers: InitActors, extra: Any) -> None:
    try:
        for h in reducers.eval():
            ray.kill(h, no_restart=True)
    except Exception:  # noqa: BLE001  (an actor already gone)
        pass
    if extra is not None:
        if extra in cluster.worker_nodes:
            cluster.remove_node(extra)
        # the next run (or test) sees the cluster's own nodes only
        cluster.wait_dead(extra.node_id)
    ray_patch.refresh_nodes()


# ---- durable streams: the driver SIGKILLed and resumed ---------------------------------------
DRIVER_STREAM = "chaos-durable"


def driver_main(a: argparse.Namespace) -> None:
    """One durable driver (``chaos.py driver``): runs the stream from where the store
    says, writes its progress after every batch and, at the end, the totals."""
    ray.init(address=a.address, log_to_driver=False)
    data = source(a.seed, a.batches)
    reducers = InitActors(ChaosReducer, a.reducers, [(i,) for i in range(a.reducers)])
    progress = a.out + ".progress"

    def src(start: int):
        for k in range(start, a.batches):
            yield make_batch(data[k], reducers, None, False, k)

    def on_submit(rec):
        with open(progress + ".tmp", "w") as fh:
            fh.write(str(rec.label))
        os.replace(progress + ".tmp", progress)

    stream = MicroBatchStream(interval_s=a.interval, max_in_flight=3, checkpoint_every=3,
                              restart_timeout_s=60, checkpoint_dir=a.dir,
                              name=DRIVER_STREAM)
    resumed = dict(stream.resume())
    stream.run(src, on_submit=on_submit)
    got = ray.get([h.totals.remote() for h in reducers.eval()], timeout=120)
    stream.close(finished=True)
    out = {"totals": [t for t, _ in got], "calls": [c for _, c in got],
           "expected": expected(data, a.reducers), "position": resumed["position"],
           "lost_calls": stream.stats.lost_calls}
    with open(a.out + ".tmp", "w") as fh:
        json.dump(out, fh)
    os.replace(a.out + ".tmp", a.out)
    ray.shutdown()


def _progress(path: str) -> int:
    try:
        with open(path + ".progress") as fh:
            return int(fh.read().strip() or -1)
    except (OSError, ValueError):
        return -1


def run_durable(address: str, workdir: str, seed: int, kills: int = 3, batches: int = 30,
                reducers: int = 3, log: Callable[[str], None] = print) -> RunResult:
    """Drivers SIGKILLed ``kills`` times in a row at random moments (each after the
    previous one's successor submitted a random number of batches), then one that runs
    to the end; the sums and call counts checked as for the other runs."""
    rng = random.Random(seed)
    res = RunResult("durable", [DURABLE] * kills, seed, batches)
    ckdir = os.path.join(workdir, f"ckpt-{seed}")
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(benchpath.ROOT, "python"),
                                         benchpath.ROOT, env.get("PYTHONPATH", "")])
    t0 = time.perf_counter()
    faults: list[Fault] = []
    out = None
    try:
        for attempt in range(kills + 1):
            path = os.path.join(workdir, f"driver-{seed}-{attempt}")
            logf = open(path + ".log", "w")
            argv = [sys.executable, os.path.abspath(__file__), "driver", "--address",
                    address, "--dir", ckdir, "--out", path, "--seed", str(seed),
                    "--batches", str(batches), "--reducers", str(reducers)]
            p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env)
            try:
                if attempt < kills:
                    start = max(0, _progress_of_all(workdir, seed))
                    # kill after it submitted a random number of further batches (0..4),
                    # then a random delay
                    target = start + rng.randrange(0, 5)
                    deadline = time.monotonic() + 180
                    while _progress(path) < target and p.poll() is None:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"driver {attempt} made no progress in 180 s")
                        time.sleep(0.01)
                    time.sleep(rng.uniform(0, 0.3))
                    f = Fault(DURABLE, _progress(path) + 1, time.time(),
                              f"driver {attempt} (pid {p.pid})")
                    if p.poll() is not None:
                        f.skipped = "the driver finished first"
                    else:
                        os.kill(p.pid, signal.SIGKILL)
                        f.effect_s = _wait_gone(p.pid)
                    faults.append(f)
                    if f.skipped:
                        break
                else:
                    p.wait(timeout=600)
            finally:
                if p.poll() is None:
                    os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=60)
                logf.close()
            if os.path.exists(path):
                with open(path) as fh:
                    out = json.load(fh)
                if p.returncode not in (0, None) and attempt == kills:
                    raise RuntimeError(f"last driver failed: rc {p.returncode}")
        if out is None:
            with open(path + ".log", errors="replace") as fh:
                raise RuntimeError(f"no driver finished the stream: {fh.read()[-1500:]}")
        res.totals, res.calls, res.expected = out["totals"], out["calls"], out["expected"]
        res.exact = res.totals == res.expected
        res.calls_ok = res.calls == [batches] * reducers
        res.lost_calls = out["lost_calls"]
    except Exception as e:
        res.error = f"{type(e).__name__}: {e}"[:800]
    finally:
        _kill_durable_leftovers()
    res.wall_s = time.perf_counter() - t0
    res.faults = [asdict(f) for f in faults]
    status = "ok" if not res.problems() else "FAILED: " + "; ".join(res.problems())
    log(f"[{'durable':16s}] seed {seed} {DURABLE} x{res.injected:<26d} "
        f"{res.wall_s:5.1f} s  {status}")
    return res


def _progress_of_all(workdir: str, seed: int) -> int:
    best = -1
    for name in os.listdir(workdir):
        if name.startswith(f"driver-{seed}-") and name.endswith(".progress"):
            best = max(best, _progress(os.path.join(workdir, name[:-len(".progress")])))
    return best


def _kill_durable_leftovers() -> None:
    """Detached reducers a failed durable run left (by their names, through Ray)."""
    ns = f"irfront-{DRIVER_STREAM}"
    for a in ray.util.list_named_actors(all_namespaces=True):
        if a.get("namespace") == ns:
            try:
                ray.kill(ray.get_actor(a["name"], namespace=ns), no_restart=True)
            except ValueError:
                pass


# ---- matrices --------------------------------------------------------------------------------
def short_plan(seed: int) -> list[tuple[Config, list[str]]]:
    """Every configuration once with two faults: one aimed at a reducer (kill and
    SIGKILL alternating) and one of the other kinds, cycled over the configurations so
    that every kind comes several times (what ``make test`` runs)."""
    rng = random.Random(seed)
    others = [k for k in FAULTS if k not in REDUCER_FAULTS]
    rng.shuffle(others)
    plan, j = [], 0
    for n, cfg in enumerate(CONFIGS):
        while not applicable(cfg, others[j % len(others)]):
            j += 1
        plan.append((cfg, [REDUCER_FAULTS[n % 2], others[j % len(others)]]))
        j += 1
    return plan


def long_plan(runs: int, faults_per_run: int) -> list[tuple[Config, list[str]]]:
    """Every configuration x every applicable fault kind, ``runs`` runs each, with
    ``faults_per_run`` faults of that kind per run (one for node faults)."""
    plan = []
    for cfg in CONFIGS:
        for kind in FAULTS:
            if not applicable(cfg, kind):
                continue
            k = 1 if kind in NODE_FAULTS else faults_per_run
            plan += [(cfg, [kind] * k)] * runs
    return plan


def rows(results: list[RunResult]) -> list[dict]:
    """The runs as the JSON holds them."""
    return [asdict(r) | {"injected": r.injected, "problems": r.problems()}
            for r in results]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "driver":
        ap = argparse.ArgumentParser()
        ap.add_argument("driver")
        for a in ("--address", "--dir", "--out"):
            ap.add_argument(a, required=True)
        ap.add_argument("--seed", type=int, default=0)
        ap.add_argument("--batches", type=int, default=30)
        ap.add_argument("--reducers", type=int, default=3)
        ap.add_argument("--interval", type=float, default=0.05)
        driver_main(ap.parse_args())
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--short", action="store_true", help="the short matrix (make test's)")
    ap.add_argument("--runs", type=int, default=2, help="runs per configuration x fault")
    ap.add_argument("--faults-per-run", type=int, default=4)
    ap.add_argument("--durable-runs", type=int, default=4)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--configs", default="", help="comma-separated subset of "
                    + ",".join(CONFIG_BY_NAME))
    ap.add_argument("--json", default="bench/results/chaos.json")
    a = ap.parse_args()
    plan = short_plan(a.seed) if a.short else long_plan(a.runs, a.faults_per_run)
    if a.configs:
        want = set(a.configs.split(","))
        plan = [(c, k) for c, k in plan if c.name in want]
    import tempfile
    from irfront.cluster import LocalCluster
    results: list[RunResult] = []
    t0 = time.time()
    load0 = os.getloadavg()
    with LocalCluster(num_nodes=4, cpus_per_node=2, object_store_mb=200) as cluster, \
            tempfile.TemporaryDirectory(prefix="irf-chaos-") as work:
        irfront.init(scheduler="locality")
        total = len(plan) + a.durable_runs
        for j, (cfg, kinds) in enumerate(plan):
            print(f"{j + 1}/{total} ", end="")
            results.append(run_one(cluster, cfg, kinds, a.seed * 1000 + j,
                                   batches=a.batches))
        for d in range(a.durable_runs):
            print(f"{len(plan) + d + 1}/{total} ", end="")
            results.append(run_durable(cluster.address, work, a.seed * 1000 + 500 + d))
    bad = [r for r in results if r.problems()]
    injected = sum(r.injected for r in results)
    print(table(rows(results)))
    print(f"{len(results)} runs, {injected} faults injected, {len(bad)} runs with a broken "
          f"promise, {time.time() - t0:.0f} s")
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as fh:
        json.dump({"seed": a.seed, "short": a.short, "injected": injected,
                   "command": "bench/chaos.py " + " ".join(sys.argv[1:]),
                   "broken": len(bad), "wall_s": time.time() - t0,
                   "provenance": common.provenance(load0),
                   "runs": rows(results)}, fh, indent=1)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
