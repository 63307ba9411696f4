"""The worker side of the resident path (ray_patch/resident.py is the driver's): what
runs in Ray's worker processes, as ordinary importable functions and classes, shipped by
reference (workers import ``ray_patch``, as docs/NETCLUSTER.md requires).

- ``ResidentExecutor``: one async actor per node; runs a node's share of a batch (sent
  through Ray, or fed on its authenticated feed) and sends each reducer its piece on a
  channel (``ray_patch.channel``);
- ``gather`` (plain actors) and ``apply_partial`` (exactly-once reducers): what a piece
  runs on the reducer, under the actor's lock;
- ``StageFailed``: the error a node's work raised, as the driver sees it.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from typing import Any

import numpy as np
import ray
from ray import cloudpickle

from ray_patch import channel, shipping, wire
from ray_patch.lru import LRU, nbytes

unpack = shipping.unpack

# The node's work on the executor's event loop (True) or in its thread pool of one thread
# per CPU (False). Inline saves a thread hop before the sends but serialises a node's
# batches; with the feed its p50 was 8.3 ms against the pool's 6.8 (floor data, quiet
# machine; docs/BENCHMARKS.md, "The resident path").
INLINE_COMPUTE = False
INPUT_TTL_S = 60.0  # an executor drops a kept input unused this long (checked as often)
INPUT_MAX_BYTES = 512 << 20  # what an executor keeps of inputs, at most (LRU)


# Other actors' calls are numbered per route (``Route.nonce``): a second driver, or a
# route built again, numbers its own calls from 0. A state the actor has not seen yet (a
# new route, or an actor Ray restarted: a new process) starts below the piece's ``base``:
# every call of the route under it was answered before the piece was sent.
GATHER_STALL_S = 30.0  # an incomplete call older than this fails later pieces (loudly)


RESULTS_KEPT = 256  # results of kept calls (``Piece.keep``) an actor holds per route


def gather(actor: Any, *args: Any) -> int:
    """On any actor: buffers piece ``source`` of call ``seq``; runs every complete call
    in order (``method(*prefix, *pieces)``; a call with a failed piece is skipped);
    returns the last applied call number. The piece comes as a ``channel.Piece`` (an
    executor's channel, under the actor's lock) or spread out (a replay from the
    driver through Ray, whose piece is a ref Ray resolves). A call whose pieces ask
    for it (``keep``) leaves its result, or its error, for ``result_of``."""
    piece = args[0] if len(args) == 1 else channel.Piece(*args)
    with channel.lock_of(actor):
        return _gather_locked(actor, piece)


class SkippedCall(RuntimeError):
    """A resident call that never ran: a source stage failed (the stream reports the
    stage's own error)."""


def _answered(actor: Any) -> threading.Condition:
    """Notified (under the actor's lock) whenever a call of any route is applied."""
    c = actor.__dict__.get("_irf_answered")
    if c is None:
        c = actor.__dict__.setdefault("_irf_answered",
                                      threading.Condition(channel.lock_of(actor)))
    return c


def _keep(st: dict, seq: int, outcome: tuple) -> None:
    kept = st.setdefault("results", {})
    kept[seq] = outcome
    while len(kept) > RESULTS_KEPT:  # oldest first (dicts keep insertion order)
        del kept[next(iter(kept))]


def _gather_locked(actor: Any, p: "channel.Piece") -> int:
    routes = actor.__dict__.setdefault("_irf_gather", {})
    st = routes.get(p.route)
    if st is None:
        st = routes[p.route] = {"last": p.base - 1, "parts": {}, "since": None}
    parts = st["parts"]
    if p.seq > st["last"]:
        got = parts.setdefault(p.seq, [p.nsources, p.prefix, {}, False, p.keep])
        got[2][p.source] = p.partial
        got[3] = got[3] or p.failed
    try:
        while True:
            nxt = parts.get(st["last"] + 1)
            if nxt is None or len(nxt[2]) < nxt[0]:
                break
            del parts[st["last"] + 1]
            n, pre, pieces, bad, keep = nxt
            st["last"] += 1
            if bad:
                if keep:
                    _keep(st, st["last"], (False, SkippedCall(
                        f"call {st['last']} was skipped: a stage it reads failed")))
                continue
            try:
                out = getattr(actor, p.method)(*pre, *[pieces[k] for k in range(n)])
            except Exception as e:
                if keep:
                    _keep(st, st["last"], (False, e))
                raise
            if keep:
                _keep(st, st["last"], (True, out))
    finally:
        _answered(actor).notify_all()
    if not parts:
        st["since"] = None
    else:
        now = time.monotonic()
        st["since"] = st["since"] or now
        if now - st["since"] > GATHER_STALL_S:
            raise RuntimeError(
                f"call {st['last'] + 1} of this reducer never completed: its pieces were "
                "lost (the actor restarted while they were in flight)")
    return st["last"]


def result_of(actor: Any, route: int, seq: int, timeout_s: float) -> Any:
    """On the actor, through Ray (``__ray_call__``): the result of call ``seq`` of
    ``route`` (its error raised), once applied; what a Ray actor call's ref gives.
    Read once: the result is dropped here when handed over."""
    deadline = time.monotonic() + timeout_s
    cond = _answered(actor)
    with cond:
        while True:
            st = actor.__dict__.get("_irf_gather", {}).get(route)
            if st is not None and st["last"] >= seq:
                got = st.get("results", {}).pop(seq, None)
                if got is None:
                    raise RuntimeError(
                        f"the result of call {seq} is not held: a reducer keeps the "
                        f"last {RESULTS_KEPT} results of resident calls not read yet")
                ok, value = got
                if ok:
                    return value
                raise value
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"call {seq} was not applied within {timeout_s} s "
                                   "(its pieces were lost, or the actor restarted)")
            cond.wait(left)


GATHER = gather
RESULT_OF = result_of


STALE = "irf-stale-epoch"  # a reducer's answer to a piece fenced off (see below)


class StageFailed(Exception):
    """A source node's work raised ``error`` on its executor: no reducer was sent a
    piece of that call (the driver retries the source or stops with ``error``)."""

    def __init__(self, error: BaseException):
        super().__init__(error)
        self.error = error

    def __str__(self) -> str:
        return f"the stage raised {self.error!r}"


def apply_partial(actor: Any, piece: "channel.Piece") -> Any:
    """What a channel frame runs on an exactly-once reducer. ``piece.epoch`` is the
    token the driver last restored this reducer with. A process that has another one is
    not the reducer the driver restored: a process Ray already replaced (its node's
    raylet died and it lives on for a while), or one restored since the piece was sent.
    It answers ``STALE`` and applies nothing."""
    actor._irf_init()
    if piece.epoch != actor._irf_epoch and not actor._irf_stale:
        return STALE
    return actor.apply_partial(piece.seq, piece.source, piece.nsources, piece.method,
                               piece.prefix, piece.partial, piece.failed)


APPLY_PARTIAL = apply_partial


def _stale(answer: Any) -> bool:
    return isinstance(answer, str) and answer == STALE


def _close_conn(task: Any) -> None:
    """An evicted channel: closed if it opened."""
    if task.done() and not task.cancelled() and task.exception() is None:
        task.result().close(channel.ChannelError("evicted"))


def _shareable(v: Any) -> bool:
    """Whether one copy of an input may serve every fed batch: immutable values, and
    numpy arrays Ray maps read-only from the object store. Others are kept pickled and
    each batch gets its own copy, as each Ray task would."""
    if v is None or isinstance(v, (bool, int, float, complex, str, bytes)):
        return True
    if isinstance(v, np.ndarray):
        return not v.flags.writeable
    if isinstance(v, tuple):
        return all(_shareable(x) for x in v)
    return False



class ResidentExecutor:
    """One per node: runs a node's share of a batch and feeds the reducers."""

    def __init__(self, threads: int):
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, threads))
        # every table is least-recently-used and bounded (in bytes for inputs)
        self.routes = LRU(64)  # route key -> the reducers' (weak) handles
        # (reducer's actor id, method) -> task: its channel (closed when evicted)
        self.conns = LRU(1024, on_evict=lambda _, t: _close_conn(t))
        self.key = wire.cluster_key()  # every channel and the feed prove they hold it
        self.fns = LRU(256)  # (function key, method) -> the node's fused function
        self.feeds = 0  # open feed connections (at most wire.MAX_CONNECTIONS)
        self.refused = 0  # feed connections that failed the handshake or a frame
        # ref id -> [value, or ("pickled", bytes); last use]
        self.inputs = LRU(1024, max_bytes=INPUT_MAX_BYTES,
                          size=lambda e: nbytes(e[0]))
        self.feed = None  # (address, server): the driver's frames come in here
        self.raylet = os.getppid()  # this worker's raylet (channel.raylet_gone)
        self.evicting = False  # an eviction of unused inputs is scheduled

    # ---- what the executor keeps between batches (fed batches name them) ------
    def _remember(self, ids, values):
        import pickle as pickle_
        import time as time_
        now = time_.monotonic()
        for i, v in zip(ids, values):
            if not _shareable(v):  # each batch gets its own copy, as from Ray
                v = ("pickled", pickle_.dumps(v, protocol=5))
            self.inputs[i] = [v, now]
        if self.inputs and not self.evicting:  # an idle executor lets go too
            self.evicting = True
            asyncio.get_running_loop().call_later(INPUT_TTL_S, self._evict)

    def _drop_unused(self):
        """Drops the inputs unused for ``INPUT_TTL_S`` (they may pin objects their
        owner freed)."""
        import time as time_
        now = time_.monotonic()
        for k, e in self.inputs.items():
            if now - e[1] > INPUT_TTL_S:
                self.inputs.pop(k)

    def _evict(self):  # on a timer while inputs are kept: an idle executor too
        self._drop_unused()
        self.evicting = bool(self.inputs)
        if self.evicting:
            asyncio.get_running_loop().call_later(INPUT_TTL_S, self._evict)

    def _input(self, i, now):
        import pickle as pickle_
        e = self.inputs.get(i)
        if e is None:
            raise channel.CacheMiss(f"input {i.hex()[:16]} is not held here")
        e[1] = now
        v = e[0]
        if isinstance(v, tuple) and len(v) == 2 and v[0] == "pickled":
            return pickle_.loads(v[1])
        return v

    async def open_feed(self):
        """The address of this executor's feed (started on first call)."""
        if self.feed is None:
            server = await asyncio.start_server(
                self._feed_conn, ray.util.get_node_ip_address(), 0)
            self.feed = (server.sockets[0].getsockname()[:2], server)
        return self.feed[0]

    async def _feed_conn(self, reader, writer):
        """One driver's feed: it proves it holds the cluster's key first; then
        each frame is a batch (``_fed``)."""
        import socket
        if self.feeds >= wire.MAX_CONNECTIONS:
            writer.close()
            return
        self.feeds += 1
        try:
            await wire.async_server_handshake(reader, writer, self.key)
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                call_id, frame = wire.loads(await wire.read_frame_async(reader))
                asyncio.ensure_future(self._fed(call_id, frame, writer))
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
            self.refused += 1  # a stranger, a bad frame, or the driver went away
        finally:
            self.feeds -= 1
            writer.close()

    async def _fed(self, call_id, frame, writer):
        import time as time_
        try:
            route, fn_key, spec, ids, sent = frame
            if channel.raylet_gone(self.raylet):
                raise channel.ChannelError("this executor's node is gone (its raylet "
                                           "died)")
            fn = self.fns.get(fn_key)  # with its method, both sent through Ray
            handles = self.routes.get(route[0])
            if fn is None or handles is None:
                raise channel.CacheMiss("the batch's function or route is not "
                                        "held here")
            route = route[:6] + (fn_key[1],) + route[7:]
            now = time_.monotonic()
            # each input is held here (a broadcast kept from an earlier batch) or came
            # in this frame (the batch's own data, read by the driver from its store)
            values = [sent[k] if k in sent else self._input(i, now)
                      for k, i in enumerate(ids)]
            reply = channel.dumps_answer(
                (call_id,), True, await self._run(route, handles, fn, spec, values))
        except Exception as e:  # noqa: BLE001 - the driver falls back
            reply = channel.dumps_answer((call_id,), False, e)
        writer.write(reply)

    def forget_routes(self, keys):
        """The driver dropped these routes (their reducers are gone)."""
        for k in keys:
            self.routes.pop(k)

    def _reducers(self, key, blob):
        hit = self.routes.get(key)
        if hit is None:
            hit = self.routes[key] = cloudpickle.loads(blob)
        return hit

    def _conn(self, handle, checkpointed, method):
        """The open channel to this reducer for ``method`` (a task that connects on
        first use, or again after the channel broke: the actor may be a restarted
        process)."""
        aid = (handle._actor_id.binary(), method)
        task = self.conns.get(aid)
        if task is not None and task.done() and (
                task.exception() is not None or task.result().broken is not None):
            task = None
        if task is None:
            async def open_():
                conn = await channel.connect(
                    await self._address(handle, checkpointed, method), self.key)
                conn.on_close = lambda: self._forget_conn(aid, conn)
                return conn
            task = self.conns[aid] = asyncio.ensure_future(open_())
        return task

    def _forget_conn(self, aid, conn):
        """A channel that broke (its reducer ended, restarted or went away) leaves the
        table: connections to reducers that are gone do not pile up."""
        t = self.conns.pop(aid)
        if t is not None and not (t.done() and not t.cancelled()
                                  and t.exception() is None and t.result() is conn):
            self.conns[aid] = t  # a newer connection: kept

    async def _address(self, handle, checkpointed, method):
        """Where the reducer's channel listener is (Ray routes this to the actor's
        current process, which starts one if it has none), ``method`` allowed."""
        apply = APPLY_PARTIAL if checkpointed else GATHER
        return tuple(await handle.__ray_call__.remote(channel.open_channel, apply,
                                                      method))

    async def _send(self, handle, checkpointed, piece):
        """The reducer's answer to one frame. A fenced-off answer (``STALE``) comes
        from a process Ray replaced (its raylet died), or is about a piece sent
        before the reducer's last restore. Ray is asked where the actor is now: at
        another address the piece is sent again there, and that connection serves
        the later pieces; at the same one the piece is old (the driver's replay
        covers it). The connection stays open either way: other pieces on it may
        be current."""
        apply = APPLY_PARTIAL if checkpointed else GATHER
        try:
            try:
                frame = wire.dumps(piece)
            except (wire.RefInFrame, wire.FrameTooLarge):  # refs keep their owner,
                # and a frame is bounded: through Ray
                return await handle.__ray_call__.remote(apply, piece)
            conn = await self._conn(handle, checkpointed, piece.method)
            got = await conn.call(frame)
            if not _stale(got):
                return got
            addr = await self._address(handle, checkpointed, piece.method)
            if addr == conn.addr:
                return channel.ChannelError("the reducer fenced the piece off: it "
                                            "was restored since the piece was sent")
            fresh = await channel.connect(addr, self.key)
            aid = (handle._actor_id.binary(), piece.method)
            fresh.on_close = lambda: self._forget_conn(aid, fresh)
            done = asyncio.get_running_loop().create_future()
            done.set_result(fresh)
            self.conns[aid] = done
            got = await fresh.call(frame)
            return channel.ChannelError("the reducer fenced the piece off") \
                if _stale(got) else got
        except ray.exceptions.RayError as e:  # the actor died, or refused the call
            return e
        except (EOFError, OSError, asyncio.TimeoutError) as e:  # no channel (an
            return channel.ChannelError(f"no channel to the reducer: {e!r}")  # AuthError
            # is an OSError); anything else is a bug and propagates

    async def run(self, packed, *refs):
        """A batch sent through Ray (the first of its shape on this node): the
        inputs, the function and the route are kept for fed batches."""
        route, fn, spec, ids, fn_key = packed  # one argument: Ray serialises each
        handles = self._reducers(route[0], route[1])
        self.fns[(fn_key, route[6])] = fn  # later batches of the shape name it
        if ids is not None:
            self._remember(ids, refs)
        return await self._run(route, handles, fn, spec, refs)

    async def _run(self, route, handles, fn, spec, refs):
        _, _, checkpointed, seq, source, nsources, method, prefixes, targets, \
            timeout_s, epochs, nonce, base, keep = route
        error = None
        try:
            if INLINE_COMPUTE:  # on the event loop: no thread hop before the sends
                out = fn(*unpack(spec, refs))
            else:
                loop = asyncio.get_running_loop()
                out = await loop.run_in_executor(self.pool, fn, *unpack(spec, refs))
        except Exception as e:  # the user's code raised
            if checkpointed:  # no reducer gets a piece: retried or the stream stops
                raise StageFailed(e) from e
            error, out = e, None  # other actors skip the call, as a failed Ray call
        if targets is None:
            targets = range(len(handles))
        single = len(handles) == 1
        calls = [asyncio.ensure_future(self._send(
            handles[i], checkpointed, channel.Piece(
                seq, source, nsources, method, prefixes[i],
                None if error is not None else (out if single else out[i]),
                error is not None, epochs[i] if checkpointed else 0, nonce, base,
                keep)))
            for i in targets]
        done, _ = await asyncio.wait(calls, timeout=timeout_s)
        late = TimeoutError(f"reducer did not answer call {seq} within {timeout_s} s")
        got = [c.result() if c in done else late for c in calls]
        if error is not None:
            raise StageFailed(error) from error
        if not checkpointed:  # no driver-side recovery: the batch fails
            for g in got:
                if isinstance(g, BaseException):
                    raise g
        return got

    def ping(self):
        return True
