"""The resident path of a grouped shuffle into reducers: each node's executor sends its
(combined) partials straight to the reducers, and once a batch's shape is known the
driver hands each node's share to its executor as one frame on a TCP connection: no Ray
task or actor call per batch.

    batch = submit_resident(fn, calls, node_call, route=route_for(handles, True), seq=7,
                            method="reduce", prefixes=[(start, tag)] * n, ...)
    batch.refs      # per source node: a ref (a call through Ray) or a Future (fed);
                    # either gives, per reducer, (last applied call, epoch) or an error

Per batch the core places the per-partition group as ``submit_per_node`` does (cached
plans included). Each source node's resident executor (one async actor per node,
``num_cpus=0``, pinned like ``ray_patch.executors``) gets its share:

- through Ray (``run``) for the first batches of a shape on that node: the call carries
  the node's fused function, the route (the reducers' handles, pickled once per route)
  and the inputs, and tells the executor to keep them when the inputs repeat from the
  node's previous batch (``_Feed``: what the driver knows the executor holds);
- then through the executor's feed (``channel.FeedClient``): the batch's plain values and
  the ids of the function, route and inputs it holds. A cache miss or a broken feed
  fails the batch's future; the driver sends it through the fallback below and the next
  batch through Ray again.

The executor runs the node's fused work in its thread pool and sends every reducer its
piece on a channel of its own (``ray_patch.channel``: one TCP connection per executor
and reducer):

- exactly-once reducers (``checkpointed``): ``apply_partial(seq, source, nsources,
  method, prefix, partial, failed)`` (through ``APPLY_PARTIAL``, which fences off a
  piece of another restore epoch: ``STALE``), which buffers the pieces of call ``seq``
  until all ``nsources`` arrived, then runs ``method(*prefix, *pieces)`` once and in order;
- other actors: the same buffering in a function run on the actor (``GATHER``, its
  state in the actor's ``_irf_gather``), numbered per route.

The executor waits for the reducers' answers (``timeout_s``) and returns, per reducer,
the reducer's last applied call number and epoch, or the exception it raised (its
channel broke, it refused a call after a restart, a timeout): the driver confirms,
recovers and replays from that. A failing node task still sends every reducer a
``failed`` piece when its reducers are plain actors (they skip the call, as a Ray actor
call whose argument failed: later calls are not held back); exactly-once reducers get
none (they wait for the driver's retry of the source, or the stream stops). Then it
raises ``StageFailed`` (the stage's error inside). ``replay_source`` is the fallback
when an executor cannot be used: the node's work as a plain pinned task, its pieces
sent by the driver through Ray.

This module is the driver's side; what runs on the workers (the executor, ``gather``,
``apply_partial``) is in ``ray_patch.resident_worker``, shipped by reference.
"""
from __future__ import annotations

import collections
import concurrent.futures
import itertools
import secrets
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import ray
from ray import cloudpickle
from ray.remote_function import RemoteFunction

from ray_patch import channel, executors as executors_, shipping, wire
from ray_patch.lru import LRU
from ray_patch.options import effective_options, executor_eligible, pinned_actor_options
from ray_patch.ray_private import weak_handle
from ray_patch.resident_worker import GATHER, RESULT_OF, ResidentExecutor
from ray_patch.runtime import GroupRecord, current_runtime, get_runtime
from ray_patch.submit import _inputs_of, place
from ray_patch.validate import as_tuples, check_remote_function

DEFAULT_TIMEOUT_S = 60.0
# Batches after the first two of their shape on a node go to its executor through its
# feed (one frame, no Ray call); False: every batch is a Ray actor call.
FEED = True



_ExecutorActor = ray.remote(num_cpus=0, **pinned_actor_options({"num_cpus": 0}),
                            max_restarts=-1, max_task_retries=-1,
                            max_concurrency=64)(ResidentExecutor)

_lock = threading.Lock()
ROUTES, FEEDS = "resident.routes", "resident.feeds"  # the runtime's tables


def _routes(rt: Any) -> LRU:
    """(reducers' actor ids, checkpointed) -> Route."""
    return rt.table(ROUTES, 256)


def _feeds(rt: Any) -> LRU:
    """Source node -> its executor's _Feed (a feed evicted or released closes)."""
    return rt.table(FEEDS, 4096, on_evict=lambda _, f: f.reset())


def fed_batches() -> int:
    """Node-batches this runtime sent through the executors' feeds (no Ray call)."""
    rt = current_runtime()
    return 0 if rt is None else sum(f.fed for f in _feeds(rt).values())


def sent_inputs() -> int:
    """Inputs this runtime sent inside fed frames (a batch's own data, not held)."""
    rt = current_runtime()
    return 0 if rt is None else sum(f.sent for f in _feeds(rt).values())


# Routes whose reducers are gone, dropped at the next route_for: a deque, so that a
# finalizer (which may run while _lock is held) only appends.
_GONE: collections.deque = collections.deque()


def _actor_ids(handles: Sequence[Any]) -> tuple:
    """A route's reducers, as its key names them (with whether they are checkpointed)."""
    return tuple(h._actor_id.binary() for h in handles)


def forget_route(handles: Sequence[Any]) -> None:
    """Drops the routes to these reducers (a stream that closes lets go of them)."""
    ids = _actor_ids(handles)
    _GONE.extend([(ids, False), (ids, True)])


def _drop_gone(rt: Any, routes: LRU) -> None:  # under _lock
    """Drops the routes of reducers that are gone, here and on the executors."""
    keys = []
    while _GONE:
        r = routes.pop(_GONE.popleft())
        if r is not None:
            keys.append(r.key)
    if keys:
        for h in _resident_executors(rt):
            h.forget_routes.remote(keys)


_route_ids = itertools.count()


@dataclass
class Route:
    """Where a resident batch's pieces go: the reducers, pickled once."""

    key: int
    blob: bytes
    checkpointed: bool
    handles: list
    built_s: float  # driver time it took to build (pickling the handles)
    next_seq: int = 0  # call numbers of actors without their own (not checkpointed)
    # other actors' calls are numbered per route: the nonce tells routes apart on the
    # actor (two drivers, a route built again), ``unanswered`` gives each piece its base
    nonce: int = field(default_factory=lambda: secrets.randbits(62))
    unanswered: dict = field(default_factory=dict)  # seq -> its executor calls

    def base(self) -> int:
        """The lowest call of this route that some source has not answered yet (the
        next call when every one was): an actor that has no state for the route (Ray
        restarted it) starts right below it, as a restarted Ray actor gets every call
        made after its restart."""
        if self.unanswered:
            refs = [r for rs in self.unanswered.values() for r in rs
                    if isinstance(r, ray.ObjectRef)]
            done = set(ray.wait(refs, num_returns=len(refs), timeout=0,
                                fetch_local=False)[0]) if refs else set()
            for seq in [q for q, rs in self.unanswered.items() if all(
                    (r in done) if isinstance(r, ray.ObjectRef) else r.done()
                    for r in rs)]:
                del self.unanswered[seq]
        return min(self.unanswered, default=self.next_seq)


@dataclass
class ResidentBatch:
    """One batch on the resident path: enough to confirm it and to send it again."""

    route: Route
    seq: int
    method: str
    prefixes: tuple
    fn: RemoteFunction  # the node task (for a fallback as a plain task)
    nodes: list[int]  # source node of each source index
    node_args: list[tuple]  # node_call(indices) per source
    refs: list  # the executor calls' refs, one per source
    num_returns: int
    strategies: list = field(default_factory=list)
    base: int = 0  # other actors: the route's base when the batch was sent
    keep: bool = False  # other actors: each call's result kept for ``ReducerAnswer``
    _partials: dict = field(default_factory=dict)  # source -> plain task's refs

    def forget_source(self, source: int) -> None:
        """The source's plain task failed: the next replay runs it again."""
        self._partials.pop(source, None)

    def replay_source(self, source: int, reducer: int) -> Any:
        """Source ``source``'s piece for ``reducer`` sent again from the driver, computed
        by a plain task pinned to the node (run once per source, kept for other
        reducers): the path that needs no executor. Returns the reducer call's ref."""
        refs = self._partials.get(source)
        if refs is None:
            f = self.fn.options(num_returns=self.num_returns,
                                scheduling_strategy=self.strategies[source])
            refs = f.remote(*self.node_args[source])
            refs = [refs] if self.num_returns == 1 else list(refs)
            self._partials[source] = refs
        h = self.route.handles[reducer]
        args = (self.seq, source, len(self.nodes), self.method, self.prefixes[reducer],
                refs[reducer], False)
        if self.route.checkpointed:
            return h.apply_partial.remote(*args)
        return h.__ray_call__.remote(GATHER, *args, 0, self.route.nonce, self.base,
                                     self.keep)


class ReducerAnswer:
    """Reducer ``reducer``'s call of a resident batch whose results are kept
    (``submit_resident(keep=True)``): what a Ray actor call hands back, made on first
    use. ``waitables()``: the batch's executor answers (a driver waiting for the call
    waits on those, with no Ray call); ``ref()``: an ``ObjectRef`` of the reducer's
    result, or its error (one ``__ray_call__`` on the reducer, ``result_of``)."""

    __slots__ = ("batch", "reducer", "_ref")

    def __init__(self, batch: ResidentBatch, reducer: int):
        self.batch, self.reducer, self._ref = batch, reducer, None

    def waitables(self) -> list:
        return self.batch.refs

    def ref(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
        if self._ref is None:
            h = self.batch.route.handles[self.reducer]
            self._ref = h.__ray_call__.remote(RESULT_OF, self.batch.route.nonce,
                                              self.batch.seq, timeout_s)
        return self._ref


def wait_unanswered(handles: Sequence[Any], timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Waits (at most ``timeout_s``) until every batch sent on the route to these plain
    actors has been answered, whatever the answer: its calls were applied or failed.
    Their pieces reach the actors on channels, outside Ray's per-caller actor queue, so
    a call through Ray that must follow them in program order waits here first."""
    rt = current_runtime()
    if rt is None:
        return
    k = (_actor_ids(handles), False)
    with _lock:
        r = _routes(rt).get(k)
        refs = [x for rs in list(r.unanswered.values()) for x in rs] if r else []
    objs = [x for x in refs if isinstance(x, ray.ObjectRef)]
    futs = [x for x in refs if not isinstance(x, ray.ObjectRef)]
    if objs:
        ray.wait(objs, num_returns=len(objs), timeout=timeout_s, fetch_local=False)
    if futs:
        concurrent.futures.wait(futs, timeout=timeout_s)


def route_for(handles: Sequence[Any], checkpointed: bool, owner: Any = None) -> Route:
    """The route to these reducers (built once per set of handles); dropped when
    ``owner`` (the program's ``InitActors`` node) is garbage-collected."""
    k = (_actor_ids(handles), checkpointed)
    rt = get_runtime()
    routes = _routes(rt)
    with _lock:
        _drop_gone(rt, routes)
        r = routes.get(k)
        if r is None:
            if owner is not None:
                weakref.finalize(owner, _GONE.append, k)
            t0 = time.perf_counter()
            # weak handles: neither the table nor the executors keep the actors alive
            weak = [weak_handle(h) for h in handles]
            blob = cloudpickle.dumps(weak)
            r = routes[k] = Route(next(_route_ids), blob, checkpointed, weak,
                                  time.perf_counter() - t0)
        return r


@dataclass
class _Feed:
    """The driver's view of one executor's feed: what the executor holds (confirmed by
    a finished call through Ray that carried it), and the connection."""

    ids: set = field(default_factory=set)  # inputs, by ref id
    fns: set = field(default_factory=set)  # function keys
    routes: set = field(default_factory=set)  # route keys
    seeding: list = field(default_factory=list)  # (ref, ids, fn key, route key)
    # per shape (function, method, route): the previous batch's inputs; only inputs that
    # repeat are kept (two streams in one driver each have their own)
    last: LRU = field(default_factory=lambda: LRU(64))
    addr: Any = None  # the open_feed call's ref
    client: Any = None  # channel.FeedClient
    missed: bool = False  # the executor answered a CacheMiss: start over
    fed: int = 0  # batches sent through the feed
    sent: int = 0  # inputs that went in those frames (the batches' own data)

    def answered(self, fut: Any) -> None:  # a fed batch's done-callback
        if isinstance(fut.exception(), channel.CacheMiss):
            self.missed = True

    def reset(self) -> None:
        if self.client is not None:
            self.client.close()
        self.ids.clear(), self.fns.clear(), self.routes.clear(), self.seeding.clear()
        self.addr = self.client = None

    def ready(self, handle: Any, fn_key: Any, route_key: int) -> bool:
        """Whether a batch of this shape can be fed (its function and route are held,
        the feed is up); starts the feed and takes in finished seeding calls on the
        way. Its inputs are the caller's to check (held, or sent in the frame)."""
        if self.missed or (self.client is not None and self.client.broken is not None):
            self.reset()
            self.missed = False
        if self.seeding:
            done, _ = ray.wait([r for r, *_ in self.seeding], timeout=0,
                               num_returns=len(self.seeding), fetch_local=False)
            if done:
                done = set(done)
                for r, i, f, k in [e for e in self.seeding if e[0] in done]:
                    self.ids.update(i), self.fns.add(f), self.routes.add(k)
                self.seeding = [e for e in self.seeding if e[0] not in done]
        if self.client is None:
            if self.addr is None:
                self.addr = handle.open_feed.remote()
                return False
            if not ray.wait([self.addr], timeout=0, fetch_local=True)[0]:
                return False
            try:
                self.client = channel.FeedClient(ray.get(self.addr), wire.cluster_key())
            except (ray.exceptions.RayError, OSError):  # the executor restarted: ask
                # again later (an AuthError is an OSError: a listener without the key)
                self.addr = None
                return False
        return fn_key in self.fns and route_key in self.routes


# A batch's own data (inputs the executor does not hold) goes in the feed's frame when
# the driver's node holds it (``ray.put`` in the driver, as a stream's source does): one
# copy over a TCP connection, straight to the executor that computes on it, instead of a
# Ray call whose worker pulls each object from the driver's node. At most this much per
# frame; more goes through Ray.
SEND_MAX_BYTES = 256 << 20


def _sendable(refs: Sequence[Any], held: set, last: Sequence[bytes],
              driver_node: str) -> dict | None:
    """The values to send in a fed batch's frame, by position among ``refs``: every
    ref the executor does not hold, read from the driver's store. None (the batch goes
    through Ray) when one of them repeats from the shape's previous batch (a broadcast:
    the executor is to keep it, through Ray), is not ready, is not on the driver's
    node, or the frame would be too large. Locations come from the driver's own
    reference table (no RPC: it knows them for the objects it owns)."""
    want = [k for k, r in enumerate(refs) if r.binary() not in held]
    if not want:
        return {}
    if any(refs[k].binary() in last for k in want):
        return None
    locs = ray.experimental.get_local_object_locations([refs[k] for k in want])
    total = 0
    for k in want:
        loc = locs.get(refs[k])
        size = None if loc is None else loc.get("object_size")
        if size is None:  # not the driver's, or not ready yet
            return None
        nodes = loc.get("node_ids") or []
        if nodes and driver_node not in nodes:  # in another node's store: Ray moves it
            return None
        total += size
    if total > SEND_MAX_BYTES:
        return None
    return dict(zip(want, ray.get([refs[k] for k in want])))


def _feed(rt: Any, node: int) -> _Feed:
    feeds = _feeds(rt)
    st = feeds.get(node)
    if st is None:
        st = feeds[node] = _Feed()
    return st


def _resident_executors(rt: Any) -> list:
    return list(executors_.executor_nodes(rt, "resident").values())


def _make_resident(strategy: Any, cpus: int, name: str) -> Any:
    return _ExecutorActor.options(scheduling_strategy=strategy, name=name,
                                  namespace=executors_.NAMESPACE).remote(cpus)


def _executor(rt: Any, node: int) -> Any:
    """Node ``node``'s resident executor (created on first use), in
    ``ray_patch.executors``' table with the stage executors (kind ``"resident"``)."""
    return executors_.executor_for(rt, "resident", node, _make_resident)[1]


def submit_resident(fn: RemoteFunction, arg_tuples: Sequence[Sequence[Any]],
                    node_call: Any, *, route: Route, seq: int, method: str,
                    prefixes: Sequence[tuple], num_returns: int,
                    group_id: int | None = None, group_dependency: int | None = None,
                    policy: str = "locality", plan_cache: bool = False,
                    epochs: Sequence[int] | None = None, base: int = 0,
                    timeout_s: float = DEFAULT_TIMEOUT_S, keep: bool = False
                    ) -> tuple[ResidentBatch, int]:
    """Places one task per argument tuple as a group (as ``submit_per_node``), then sends
    each node's share to that node's resident executor, which feeds the route's
    reducers call ``seq`` (see the module's docstring). Returns the batch and the group
    id. A stage that asks for resources, a runtime_env or more than one CPU is not
    resident (the caller checks ``residentable``). ``keep`` (other actors): each
    reducer keeps its call's result for a ``ReducerAnswer``."""
    fn, _ = check_remote_function(fn)
    args = as_tuples(arg_tuples)
    rt = get_runtime()
    with rt.group(group_id) as gid:
        nodes, dep = place(rt, gid, np.full(len(args), 1.0), _inputs_of(args),
                           group_dependency=group_dependency, policy=policy,
                           plan_cache=plan_cache)
        by_node: dict[int, list[int]] = {}
        for i, n in enumerate(nodes.tolist()):
            by_node.setdefault(n, []).append(i)
        order = sorted(by_node)
        body = shipping.inline(fn._function)
        prefixes = tuple(tuple(p) for p in prefixes)
        epochs = tuple(epochs) if epochs is not None else (0,) * len(route.handles)
        batch = ResidentBatch(route, seq, method, prefixes, fn, order, [], [],
                              num_returns, [rt.strategies[n] for n in order], base,
                              keep and not route.checkpointed)
        fn_key = body.key
        driver_node = rt.driver_node_hex()
        for source, n in enumerate(order):
            a = node_call(by_node[n])
            spec, refs = shipping.pack(a)
            ids = tuple(x.binary() for x in refs)
            batch.node_args.append(a)
            handle, st = _executor(rt, n), _feed(rt, n)
            r = (route.key, route.blob, route.checkpointed, seq, source, len(order),
                 method, prefixes, None, timeout_s, epochs, route.nonce, base,
                 batch.keep)
            shape = (fn_key, method, route.key)
            prev = st.last.get(shape, ())  # the shape's previous batch's inputs
            st.last[shape] = ids
            sent = None
            if FEED and st.ready(handle, (fn_key, method), route.key):
                sent = _sendable(refs, st.ids, prev, driver_node)
            if sent is not None:
                try:  # the method is the one the executor holds with the function
                    fut = st.client.send(((route.key, None) + r[2:6] + (None,) +
                                          r[7:], (fn_key, method), spec, ids, sent))
                except (wire.RefInFrame, wire.FrameTooLarge):  # refs keep their
                    # owner, and a frame is bounded: through Ray
                    fut = None
                if fut is not None:
                    st.fed += 1
                    st.sent += len(sent)
                    fut.add_done_callback(st.answered)
                    batch.refs.append(fut)
                    continue
            # The executor keeps the inputs only when they repeat (a broadcast read
            # by every batch), not each batch's own data; the function and the
            # route it keeps always (later batches of the shape name them).
            keep = FEED and set(ids).issubset(prev)
            ref = handle.run.remote((r, body, spec, ids if keep else None, fn_key),
                                    *refs)
            if FEED:
                st.seeding.append((ref, ids if keep else (), (fn_key, method),
                                   route.key))
            batch.refs.append(ref)
        rec = GroupRecord(gid, f"{fn._function.__name__}@resident", dep, policy, nodes,
                          in_core=True)
        rt.record(rec, ((by_node[n][0], ref) for n, ref in zip(order, batch.refs)
                        if isinstance(ref, ray.ObjectRef)))
    return batch, gid


def residentable(fn: RemoteFunction, max_retries: int | None) -> bool:
    """Whether a node task can run on the resident executors (as on
    ``ray_patch.executors``: ``options.executor_eligible``)."""
    fn, own = check_remote_function(fn)
    return executor_eligible(effective_options(fn, own), max_retries)
