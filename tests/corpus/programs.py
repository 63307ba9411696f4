"""The corpus: small plain Ray programs in the style of Ray's documentation examples.

Each ``prog_*`` function is a whole driver program: it returns what it computed (values,
and the types of what Ray handed back) and catches the errors the example shows. No
irfront in them: ``run.py`` runs each plainly or under ``irfront.infer``. Results are
deterministic (seeded random numbers), so the two runs must agree exactly.
"""
from __future__ import annotations

import asyncio
import collections
import os
import re
import threading
import time

import numpy as np
import ray
from ray.util import ActorPool
from ray.util.multiprocessing import Pool
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import (NodeAffinitySchedulingStrategy,
                                            PlacementGroupSchedulingStrategy)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_WHERE = re.compile(r" \((pid|ip)=[^)]*\)")
_HEX = re.compile(r"\b[0-9a-f]{16,}\b")


def err(e: BaseException) -> list:
    """An error as the program sees it: its type, first line (Ray's ``ray::f()``, without
    pid and address), and for a task's error the cause's type and message."""
    first = _HEX.sub("<id>", _WHERE.sub("", _ANSI.sub("", str(e))).splitlines()[0]
                     if str(e) else "")
    out = [type(e).__name__, first]
    cause = getattr(e, "cause", None)
    if cause is not None:
        out += [type(cause).__name__, str(cause)]
    return out


def kind(x) -> str:
    return type(x).__name__


# ---- 1. map-reduce with num_returns (Ray's "MapReduce" example) ------------------------------
CORPUS = ["the quick brown fox jumps over the lazy dog", "a fox and a dog",
          "ray makes distributed python simple", "the dog sleeps", "python is quick",
          "the lazy fox", "simple is better", "a quick brown dog"]


@ray.remote
def apply_map(text, num_partitions):
    parts = [collections.Counter() for _ in range(num_partitions)]
    for word in text.split():
        parts[len(word) % num_partitions][word] += 1
    return tuple(dict(p) for p in parts)


@ray.remote
def apply_reduce(*results):
    out = collections.Counter()
    for r in results:
        out.update(r)
    return dict(out)


def prog_map_reduce():
    k = 3
    maps = [apply_map.options(num_returns=k).remote(t, k) for t in CORPUS]
    reduced = [apply_reduce.remote(*[m[j] for m in maps]) for j in range(k)]
    counts = {}
    for part in ray.get(reduced):
        counts.update(part)
    # The refs themselves go back too: their type is compared (a deferred reference is
    # not an ObjectRef while it is deferred, docs/INFER.md; what a program returns is).
    return [maps[0], reduced, sorted(counts.items())]


# ---- 2. Monte-Carlo pi with a progress actor --------------------------------------------------
@ray.remote
class ProgressActor:
    def __init__(self, total):
        self.total, self.done = total, {}

    def report_progress(self, task_id, n):
        self.done[task_id] = n

    def get_progress(self):
        return sum(self.done.values()) / self.total


@ray.remote
def sampling_task(num_samples, task_id, progress_actor):
    rng = np.random.default_rng(task_id)
    pts = rng.random((num_samples, 2))
    inside = int(((pts ** 2).sum(axis=1) <= 1).sum())
    progress_actor.report_progress.remote(task_id, num_samples)
    return inside


def prog_monte_carlo_pi():
    n_tasks, n = 8, 20000
    progress = ProgressActor.remote(n_tasks * n)
    refs = [sampling_task.remote(n, i, progress) for i in range(n_tasks)]
    inside = sum(ray.get(refs))
    for _ in range(200):  # bounded: reports arrive after the results
        if ray.get(progress.get_progress.remote()) == 1.0:
            break
        time.sleep(0.01)
    return [4 * inside / (n_tasks * n), ray.get(progress.get_progress.remote())]


# ---- 3-4. parameter server, sync and async -------------------------------------------------
@ray.remote
class ParameterServer:
    def __init__(self, dim):
        self.w = np.zeros(dim)

    def apply_gradients(self, *grads):
        self.w -= 0.1 * np.sum(grads, axis=0)
        return self.w

    def get_weights(self):
        return self.w


@ray.remote
def compute_gradient(weights, seed):
    rng = np.random.default_rng(seed)
    target = rng.random(weights.shape)
    return weights - target


def prog_param_server_sync():
    ps = ParameterServer.remote(4)
    w = ps.get_weights.remote()
    for it in range(4):
        grads = [compute_gradient.remote(w, it * 10 + i) for i in range(4)]
        w = ps.apply_gradients.remote(*grads)
    return np.round(ray.get(w), 9).tolist()


def prog_param_server_async():
    ps = ParameterServer.remote(4)
    w = ray.get(ps.get_weights.remote())
    pending = {compute_gradient.remote(w, i): i for i in range(4)}
    seeds, updates = 4, 0
    while pending and updates < 12:
        ready, _ = ray.wait(list(pending), num_returns=1)
        pending.pop(ready[0])
        w = ray.get(ps.apply_gradients.remote(ready[0]))
        updates += 1
        if seeds < 12:
            pending[compute_gradient.remote(w, seeds)] = seeds
            seeds += 1
    ray.get(list(pending))
    return [updates, w.shape[0]]  # order of completion varies: the count and shape


# ---- 5. actors calling actors: a streaming word count ----------------------------------------
@ray.remote
class WordReducer:
    def __init__(self):
        self.counts = collections.Counter()

    def add(self, words):
        self.counts.update(words)

    def get(self):
        return dict(self.counts)


@ray.remote
class WordMapper:
    def __init__(self, reducers):
        self.reducers = reducers

    def process(self, line):
        words = line.split()
        parts = [[w for w in words if len(w) % len(self.reducers) == i]
                 for i in range(len(self.reducers))]
        return ray.get([r.add.remote(p) for r, p in zip(self.reducers, parts)])


def prog_actors_calling_actors():
    reducers = [WordReducer.remote() for _ in range(2)]
    mapper = WordMapper.remote(reducers)
    ray.get([mapper.process.remote(line) for line in CORPUS])
    out = {}
    for part in ray.get([r.get.remote() for r in reducers]):
        out.update(part)
    return sorted(out.items())


# ---- 6. batch prediction: ray.put of a model, tasks and an ActorPool -------------------------
@ray.remote
def predict(model, batch):
    return (batch @ model).round(9).tolist()


@ray.remote
class Predictor:
    def __init__(self, model):
        self.model = model

    def predict(self, batch):
        return float((batch @ self.model).sum().round(9))


def prog_batch_prediction():
    model = np.arange(12.0).reshape(4, 3)
    model_ref = ray.put(model)
    batches = [np.full((2, 4), float(i)) for i in range(8)]
    by_task = ray.get([predict.remote(model_ref, b) for b in batches])
    pool = ActorPool([Predictor.remote(model_ref) for _ in range(2)])
    by_pool = list(pool.map(lambda a, b: a.predict.remote(b), batches))
    return [by_task, by_pool]


# ---- 7-8. first-time tips: ray.get in a loop, ray.wait pipelining ----------------------------
@ray.remote
def do_some_work(x):
    return x * x + 1


def prog_get_in_loop():
    return [ray.get(do_some_work.remote(x)) for x in range(6)]


@ray.remote
def slow_square(x):
    time.sleep(0.01 * (x % 3))
    return x * x


def prog_wait_pipelining():
    refs = [slow_square.remote(i) for i in range(10)]
    done = []
    while refs:
        ready, refs = ray.wait(refs, num_returns=1)
        done.append(ray.get(ready[0]))
    return sorted(done)


# ---- 9. ray.util.multiprocessing.Pool -------------------------------------------------------
def cube(x):
    return x ** 3


def prog_multiprocessing_pool():
    pool = Pool(processes=2)
    try:
        return [pool.map(cube, range(8)), pool.apply(cube, (3,))]
    finally:
        pool.close()
        pool.join()


# ---- 10-11. generators: streaming and num_returns="dynamic" ----------------------------------
@ray.remote
def stream_numbers(n):
    for i in range(n):
        yield i * 10


def prog_streaming_generator():
    gen = stream_numbers.remote(5)
    out = [kind(gen), ray.get(next(gen))]
    out += [ray.get(r) for r in gen]
    ready, _ = ray.wait([stream_numbers.remote(2)], num_returns=1)
    out.append(isinstance(ready[0], ray.ObjectRefGenerator))

    async def drain():
        return [await r async for r in stream_numbers.remote(3)]
    out.append(asyncio.run(drain()))
    return out


def prog_dynamic_returns():
    ref = stream_numbers.options(num_returns="dynamic").remote(4)
    gen = ray.get(ref)
    return [kind(ref), kind(gen), [ray.get(r) for r in gen]]


# ---- 12. ray.cancel ---------------------------------------------------------------------------
@ray.remote
def sleeper(s):
    time.sleep(s)
    return s


def _cancelled(ref) -> list:
    """Cancels ``ref``'s task as Ray documents it (no force); a cancel that raced the
    task's start (it may never reach the task, on Ray 2.60, in plain Ray and under infer
    alike) is sent again with ``force=True`` after 5 s, so neither mode can hang."""
    for force in (False, True, True):
        ray.cancel(ref, force=force)
        try:
            ray.get(ref, timeout=5)
            return ["not cancelled"]
        except ray.exceptions.GetTimeoutError:
            continue
        except (ray.exceptions.TaskCancelledError, ray.exceptions.RayTaskError,
                ray.exceptions.WorkerCrashedError) as e:
            # TaskCancelledError for a task cancelled before it started,
            # RayTaskError(TaskCancelledError) (a subclass of both) for one cancelled
            # while running; a forced cancel kills the worker (WorkerCrashedError on
            # some paths): all are "cancelled" to the program, in either mode
            cancelled = isinstance(e, (ray.exceptions.TaskCancelledError,
                                       ray.exceptions.WorkerCrashedError))
            return ["TaskCancelledError" if cancelled else type(e).__name__]
    return ["still running"]


@ray.remote
def blocking_operation():
    time.sleep(10e6)


def prog_cancel_as_documented():
    """Ray's task documentation's own example: a task that sleeps for good, cancelled at
    once (it hung once in 10 under infer, issue 28)."""
    obj_ref = blocking_operation.remote()
    return _cancelled(obj_ref)


def prog_cancel():
    return _cancelled(sleeper.remote(30))


# ---- 13. nested tasks -------------------------------------------------------------------------
@ray.remote
def partial_sum(lo, hi):
    if hi - lo <= 4:
        return sum(range(lo, hi))
    mid = (lo + hi) // 2
    return sum(ray.get([partial_sum.remote(lo, mid), partial_sum.remote(mid, hi)]))


def prog_nested_tasks():
    # Two trees, one and two levels deep: every task that nests blocks in ray.get, and
    # Ray starts a worker process for each (a cold driver's main cost here).
    return ray.get([partial_sum.remote(0, 8), partial_sum.remote(8, 20)])


# ---- 14. a tree of actors -------------------------------------------------------------------
@ray.remote
class Leaf:
    def __init__(self, i):
        self.i = i

    def work(self, x):
        return x * self.i


@ray.remote
class Supervisor:
    def __init__(self, n):
        self.leaves = [Leaf.remote(i + 1) for i in range(n)]

    def work(self, x):
        return ray.get([leaf.work.remote(x) for leaf in self.leaves])


def prog_actor_tree():
    sup = Supervisor.remote(2)
    return ray.get([sup.work.remote(i + 1) for i in range(3)])


# ---- 15-16. async and threaded actors, concurrency groups -------------------------------------
@ray.remote(concurrency_groups={"io": 2, "compute": 2})
class AsyncStore:
    def __init__(self):
        self.items = {}

    @ray.method(concurrency_group="io")
    async def put(self, k, v):
        await asyncio.sleep(0.001)
        self.items[k] = v

    @ray.method(concurrency_group="compute")
    async def total(self):
        return sum(self.items.values())


@ray.remote(max_concurrency=2)
class ThreadedCounter:
    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()

    def incr(self, k):
        with self.lock:
            self.n += k
        return k

    def get(self):
        return self.n


def prog_async_and_threaded_actors():
    store = AsyncStore.remote()
    ray.get([store.put.remote(i, i * i) for i in range(6)])
    counter = ThreadedCounter.remote()
    ray.get([counter.incr.remote(i) for i in range(5)])
    return [ray.get(store.total.remote()), ray.get(counter.get.remote())]


# ---- 17. placement groups ---------------------------------------------------------------------
@ray.remote(num_cpus=1)
def bundle_task(x):
    return x + 100


def prog_placement_group():
    pg = placement_group([{"CPU": 1}] * 2, strategy="SPREAD")
    ray.get(pg.ready(), timeout=60)
    strategy = PlacementGroupSchedulingStrategy(placement_group=pg)
    out = ray.get([bundle_task.options(scheduling_strategy=strategy).remote(i)
                   for i in range(4)])
    remove_placement_group(pg)
    return out


# ---- 18. SPREAD and NodeAffinity ------------------------------------------------------------
@ray.remote
def where_am_i(x):
    return [x, len(ray.get_runtime_context().get_node_id())]


def prog_spread_and_node_affinity():
    spread = ray.get([where_am_i.options(scheduling_strategy="SPREAD").remote(i)
                      for i in range(4)])
    here = ray.get_runtime_context().get_node_id()
    pinned = ray.get([where_am_i.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        here, soft=False)).remote(i) for i in range(3)])
    return [spread, pinned]


# ---- 19. task exceptions ----------------------------------------------------------------------
@ray.remote
def might_fail(x):
    if x == 3:
        raise ValueError(f"bad input {x}")
    return x


@ray.remote
def add_one(x):
    return x + 1


def prog_task_exceptions():
    refs = [add_one.remote(r) for r in [might_fail.remote(i) for i in range(5)]]
    out = []
    for r in refs:
        try:
            out.append(ray.get(r))
        except ray.exceptions.RayTaskError as e:
            out.append(err(e))
    try:
        ray.get(might_fail.remote(3))
    except ValueError as e:  # a RayTaskError(ValueError) is a ValueError too
        out.append(err(e))
    return out


# ---- 20. runtime_env (env_vars only) ----------------------------------------------------------
@ray.remote
def read_env(name):
    return os.environ.get(name)


def prog_runtime_env():
    f = read_env.options(runtime_env={"env_vars": {"CORPUS_FLAG": "on"}})
    return [ray.get(f.remote("CORPUS_FLAG")), ray.get(read_env.remote("CORPUS_FLAG"))]


# ---- 21. ray.get with a timeout ---------------------------------------------------------------
def prog_get_timeout():
    ref = sleeper.remote(2)
    try:
        ray.get(ref, timeout=0.05)
        out = ["no timeout"]
    except ray.exceptions.GetTimeoutError as e:
        out = [type(e).__name__]
    ray.cancel(ref)
    return out


# ---- 22. actor restarts -----------------------------------------------------------------------
@ray.remote(max_restarts=1, max_task_retries=0)
class Fragile:
    def __init__(self):
        self.calls = 0

    def call(self):
        self.calls += 1
        return self.calls

    def crash(self):
        os._exit(1)


def prog_actor_restart():
    a = Fragile.remote()
    first = ray.get([a.call.remote() for _ in range(2)])
    try:
        ray.get(a.crash.remote())
        crashed = "no error"
    except ray.exceptions.RayActorError as e:
        crashed = type(e).__name__
    after = None
    for _ in range(100):  # bounded: the restart takes a moment
        try:
            after = ray.get(a.call.remote())
            break
        except ray.exceptions.RayActorError:
            time.sleep(0.05)
    return [first, crashed, after]


# ---- 23. ray.put of a large numpy array --------------------------------------------------------
@ray.remote
def chunk_sum(arr, i):
    return float(arr[i::4].sum())


def prog_large_put():
    arr = np.arange(2_000_000, dtype=np.float64)
    ref = ray.put(arr)
    sums = ray.get([chunk_sum.remote(ref, i) for i in range(4)])
    return [sums, float(arr.sum())]


# ---- 24. a pipeline of stages over plain values ----------------------------------------------
@ray.remote
def load(i):
    return np.full(1000, float(i))


@ray.remote
def transform(scale, x):
    return x * scale


@ray.remote
def summarize(x):
    return float(x.sum())


def prog_pipeline():
    loaded = [load.remote(i) for i in range(8)]
    scaled = [transform.remote(2.0, x) for x in loaded]
    return ray.get([summarize.remote(x) for x in scaled])


# ---- 25. a tree reduction (pairwise joins) ------------------------------------------------------
@ray.remote
def add(a, b):
    return a + b


def prog_tree_reduce():
    refs = [load.remote(i) for i in range(8)]
    while len(refs) > 1:
        refs = [add.remote(refs[i], refs[i + 1]) for i in range(0, len(refs), 2)]
    return float(ray.get(refs[0]).sum())


# ---- 26. keyword arguments and resource options ----------------------------------------------
@ray.remote
def normalize(x, *, scale=1.0, shift=0.0):
    return float(x.mean() * scale + shift)


def prog_keywords_and_options():
    xs = [load.options(num_cpus=0.5).remote(i) for i in range(6)]
    return ray.get([normalize.remote(x=x, scale=3.0, shift=i) for i, x in enumerate(xs)])


# ---- 27. a named actor, found by name -------------------------------------------------------------
@ray.remote
class Registry:
    def __init__(self):
        self.items = []

    def add(self, x):
        self.items.append(x)
        return len(self.items)


def prog_named_actor():
    reg = Registry.options(name="corpus_registry").remote()
    ray.get(reg.add.remote("a"))
    again = ray.get_actor("corpus_registry")
    n = ray.get(again.add.remote("b"))
    names = sorted(ray.util.list_named_actors())
    ray.kill(reg)
    return [n, names]


# ---- 28. the draft's streaming batch: broadcast, stages, a shuffle into reducers --------------
@ray.remote
def gen_data(n):
    return np.arange(n, dtype=np.float64)


@ray.remote
def step(t, x):
    return x + t


@ray.remote
def split(k, x):
    return tuple(float(c.sum()) for c in np.array_split(x, k))


@ray.remote
class Sum:
    def __init__(self, i):
        self.total = 0.0

    def reduce(self, *parts):
        self.total += sum(parts)

    def get(self):
        return self.total


def prog_streaming_batches():
    k = 2
    reducers = [Sum.remote(i) for i in range(k)]
    data = gen_data.remote(1000)
    for t in range(3):
        xs = [step.remote(float(t), x) for x in [data] * 8]
        parts = [split.options(num_returns=k).remote(k, x) for x in xs]
        for i, r in enumerate(reducers):
            r.reduce.remote(*[p[i] for p in parts])
    return ray.get([r.get.remote() for r in reducers])


PROGRAMS = {name[5:]: fn for name, fn in sorted(globals().items())
            if name.startswith("prog_") and callable(fn)}
# Programs that start actor processes in each driver and make few task calls (18 of the
# corpus's ~200): most of a cold run's time. `make test` runs the others, `make
# test-slow` these (tests/test_infer_corpus.py).
HEAVY = frozenset({"actor_restart", "actor_tree", "actors_calling_actors",
                   "async_and_threaded_actors", "batch_prediction", "monte_carlo_pi",
                   "multiprocessing_pool", "named_actor", "runtime_env"})
# Programs with a stage shape (several calls of one function over one stage's objects or
# over plain values, a fan-in, a shuffle): issue 28 asks that at least half of each one's
# task calls run as groups (bench/corpus.py reports those under it). The others make
# single tasks read at once, generators, or calls with options the IR does not model.
STAGE_SHAPED = frozenset({"batch_prediction", "keywords_and_options", "large_put",
                          "map_reduce", "monte_carlo_pi", "nested_tasks",
                          "param_server_async", "param_server_sync", "pipeline",
                          "placement_group", "spread_and_node_affinity",
                          "streaming_batches", "task_exceptions", "tree_reduce",
                          "wait_pipelining"})
