"""Direct channels from resident executors to reducer actors: one TCP connection per
(executor, reducer), set up once, carrying one frame per batch each way, every one of
them authenticated (``ray_patch.wire``: a peer proves it holds the cluster's key before
any byte it sends is unpickled).

    addr = ray.get(handle.__ray_call__.remote(open_channel, apply, "reduce"))
    conn = await connect(addr)          # in an executor's event loop
    ack = await conn.call(wire.dumps(piece))   # the reducer applied it

Why not an actor call from the executor: each node's executor feeds every reducer, so a
batch is 32 calls from 4 workers on the benchmark's shape, each one a Ray task (submit,
gRPC, the receiving worker's task machinery). On the 2-core machine that put the
resident path's reducer arrival at 59 ms p50 (floor data), against 18 ms for the driver
submitting the reducer calls itself (docs/BENCHMARKS.md). A frame on a connection that
is already open is a ``sendall`` on one side and a blocking ``recv`` on the other.

The reducer side (``open_channel``, run on the actor through ``__ray_call__``): a
listening socket on the node's IP (at most ``wire.MAX_CONNECTIONS`` connections, each on
a thread of its own once it passed the handshake), each frame a ``Piece`` applied under
the actor's ``_irf_lock`` (the lock every method of a reducer takes, so a frame never
runs beside another method): ``apply(actor, piece)``, the function the ``open_channel``
call named. The method a piece names must have been allowed by an ``open_channel`` call
(through Ray): nothing off the wire picks what runs. The reply is ``(True, result)`` or
``(False, exception)``. It is idempotent: a second call returns the address of the
listener already running in that actor process, and a restarted actor (a new process)
opens a new one.

The executor side (``Conn``): frames are written in call order and replies read in the
same order, so a batch's call resolves to its own reply; a broken connection (the reducer
died, its node went away) resolves every waiting call to a ``ChannelError`` and the
executor reconnects on its next batch (asking the actor for its address again).
"""
from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import socket
import threading
from typing import Any, NamedTuple

from ray_patch import wire
from ray_patch.wire import dumps


log = logging.getLogger("ray_patch.channel")


class ChannelError(ConnectionError):
    """The connection to a reducer broke (it died or restarted) or never opened: the
    frames it carried may not have been applied."""


class Piece(NamedTuple):
    """One source node's piece of call ``seq`` to one reducer."""

    seq: int
    source: int
    nsources: int
    method: str  # one the reducer's listener allowed through Ray
    prefix: tuple
    partial: Any
    failed: bool  # the source's node task raised: the call is passed over
    epoch: int = 0  # exactly-once reducers: the driver's last restore token
    route: int = 0  # other actors: the route's nonce (its own call numbering)
    base: int = 0  # other actors: every call of the route below it was answered
    keep: bool = False  # other actors: the call's result is kept (``result_of`` reads it)


def dumps_answer(head: tuple, ok: bool, value: Any) -> bytes:
    """An answer frame ``head + (ok, value)``; an exception that does not pickle travels
    as its text."""
    try:
        return dumps(head + (ok, value))
    except Exception:  # noqa: BLE001 - any value the user's code returned or raised
        return dumps(head + (False, RuntimeError(repr(value))))


def lock_of(actor: Any) -> Any:
    """The actor's ``_irf_lock`` (made on first use; ``setdefault``: two threads asking
    first get the same lock)."""
    lock = actor.__dict__.get("_irf_lock")
    if lock is None:
        lock = actor.__dict__.setdefault("_irf_lock", threading.RLock())
    return lock


def locked(method: Any) -> Any:
    """``method`` run under the actor's ``_irf_lock``, the lock a channel frame takes:
    what keeps a reducer's own methods from running beside a piece."""
    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock_of(self):
            return method(self, *args, **kwargs)
    run._irf_locked = True
    return run


class _Listener:
    """An actor's channel listener (one per actor process)."""

    def __init__(self, actor: Any, apply: Any):
        import ray
        self.actor, self.apply, self.key = actor, apply, wire.cluster_key()
        self.lock = lock_of(actor)
        self.methods: set[str] = set()
        self.slots = threading.BoundedSemaphore(wire.MAX_CONNECTIONS)
        self.refused = 0  # connections that failed the handshake or sent a bad frame
        ip = ray.util.get_node_ip_address()
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.bind((ip, 0))
        self.srv.listen(64)
        self.addr = (ip, self.srv.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True,
                         name="irf-channel-accept").start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            if not self.slots.acquire(blocking=False):  # at the cap: refused at once
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name="irf-channel").start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            wire.server_handshake(conn, self.key)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            f = conn.makefile("rb")
            while True:
                body = wire.read_frame(f)
                if body is None:
                    return
                conn.sendall(dumps_answer((), *self._apply(wire.loads(body))))
        except (OSError, wire.AuthError):  # a stranger, a bad frame, or the peer went away
            self.refused += 1
        finally:
            conn.close()
            self.slots.release()

    def _apply(self, piece: Any) -> tuple[bool, Any]:
        if not isinstance(piece, Piece) or piece.method not in self.methods:
            return False, PermissionError(
                f"{getattr(piece, 'method', piece)!r} was not allowed on this channel")
        try:
            with self.lock:
                return True, self.apply(self.actor, piece)
        except Exception as e:  # noqa: BLE001 - the user's method raised: it travels back
            return False, e


def raylet_gone(raylet_pid: int) -> bool:
    """Whether this worker process outlived its raylet (it was the parent: an orphan is
    re-parented). Such a process still serves its sockets for a while, but Ray counts
    its actor dead and restarts it elsewhere: what it applied would be lost, so the
    resident path refuses to use it (the driver then recovers through Ray)."""
    return os.getppid() != raylet_pid


def open_channel(actor: Any, apply: Any, method: str) -> tuple[str, int]:
    """On any actor (through ``__ray_call__``): the address of its channel listener
    (started on first call), whose frames run ``apply(actor, piece)``; allows ``method``
    to be named by a piece."""
    st = actor.__dict__.get("_irf_chan")
    if st is None:
        init = getattr(actor, "_irf_init", None)
        if init is not None:  # an exactly-once reducer: its state read on Ray's thread
            init()
        st = actor.__dict__["_irf_chan"] = _Listener(actor, apply)
    st.methods.add(method)
    return st.addr


def close_channel(actor: Any) -> bool:
    """On any actor: stops its listener (a stream that closes lets go of it)."""
    st = actor.__dict__.pop("_irf_chan", None)
    if st is None:
        return False
    st.srv.close()
    return True


class Conn:
    """One open connection to a reducer, in an executor's event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 addr: tuple = ()):
        self.reader, self.writer, self.addr = reader, writer, tuple(addr)
        self.waiting: collections.deque = collections.deque()
        self.broken: ChannelError | None = None
        self.on_close: Any = None  # called once when the connection breaks or closes
        self.task = asyncio.ensure_future(self._replies())

    async def _replies(self) -> None:
        try:
            while True:
                ok, val = wire.loads(await wire.read_frame_async(self.reader))
                fut = self.waiting.popleft()
                if not fut.done():  # its caller may have stopped waiting (a timeout)
                    fut.set_result(val)
        except (EOFError, OSError, asyncio.CancelledError) as e:  # the peer went away
            self.close(ChannelError(f"channel to the reducer broke: {e!r}"))
        except Exception as e:  # a protocol bug: loud, and no caller waits forever
            log.exception("channel to %s: unexpected answer", self.addr)
            self.close(ChannelError(f"channel to the reducer failed: {e!r}"))
            raise

    def call(self, frame: bytes) -> asyncio.Future:
        """Sends one frame; the future resolves to the reducer's result, or to the
        exception its apply raised, or to a ``ChannelError`` (never raises)."""
        fut = asyncio.get_running_loop().create_future()
        if self.broken is not None:
            fut.set_result(self.broken)
            return fut
        self.waiting.append(fut)
        self.writer.write(frame)
        return fut

    def close(self, why: ChannelError) -> None:
        if self.broken is None:
            self.broken = why
            self.writer.close()
            if self.on_close is not None:
                self.on_close()
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_result(why)


async def connect(addr: tuple[str, int], key: bytes) -> Conn:
    """An authenticated connection to a reducer's listener (``AuthError`` if either
    side does not hold ``key``)."""
    reader, writer = await asyncio.open_connection(addr[0], addr[1])
    try:
        await wire.async_client_handshake(reader, writer, key)
    except BaseException:
        writer.close()
        raise
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Conn(reader, writer, addr)


class CacheMiss(ChannelError):
    """A fed batch named a function, a route or an input the executor no longer holds
    (it restarted, or dropped an entry unused for a while): the driver sends the batch
    the other way (and the next one through Ray, which fills the executor's caches)."""


class FeedClient:
    """The driver's end of an executor's feed: frames out on a blocking socket, answers
    read by one thread per executor into ``concurrent.futures.Future``s. A broken
    connection fails every waiting future with a ``ChannelError`` (the driver sends
    those batches again through its fallback) and marks the client ``broken``."""

    def __init__(self, addr: tuple[str, int], key: bytes, timeout_s: float = 5.0):
        self.sock = socket.create_connection(tuple(addr), timeout=timeout_s)
        try:
            wire.client_handshake(self.sock, key)
        except BaseException:
            self.sock.close()
            raise
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.waiting: dict[int, Any] = {}
        self.broken: ChannelError | None = None
        self._lock = threading.Lock()
        self._ids = iter(range(1 << 62))
        self._reader = threading.Thread(target=self._answers, daemon=True,
                                        name="irf-feed")
        self._reader.start()

    def send(self, frame: Any) -> Any:
        """One frame; returns the future of its answer. Raises ``RefInFrame`` when the
        frame holds an ObjectRef, ``FrameTooLarge`` past the bound (nothing sent)."""
        import concurrent.futures
        fut: Any = concurrent.futures.Future()
        with self._lock:
            if self.broken is not None:
                fut.set_exception(self._failure())
                return fut
            call_id = next(self._ids)
            data = dumps((call_id, frame))
            self.waiting[call_id] = fut
            try:
                self.sock.sendall(data)
            except OSError as e:
                self._break(ChannelError(f"feed to the executor broke: {e!r}"))
        return fut

    def _answers(self) -> None:
        f = self.sock.makefile("rb")
        try:
            while True:
                body = wire.read_frame(f)
                if body is None:
                    raise ChannelError("the executor closed its feed")
                call_id, ok, value = wire.loads(body)
                with self._lock:
                    fut = self.waiting.pop(call_id, None)
                if fut is not None:
                    (fut.set_result if ok else fut.set_exception)(value)
        except (EOFError, OSError) as e:  # the executor went away: every waiting batch
            with self._lock:  # hears of it (a ChannelError is an OSError)
                self._break(e if isinstance(e, ChannelError) else
                            ChannelError(f"feed to the executor broke: {e!r}"))
        except Exception as e:  # a protocol bug: loud, and no batch waits forever
            log.exception("feed to %s: unexpected answer", self.sock)
            with self._lock:
                self._break(ChannelError(f"feed to the executor failed: {e!r}"))

    def _break(self, why: ChannelError) -> None:  # under self._lock
        if self.broken is None:
            self.broken = ChannelError(str(why))
            try:
                self.sock.close()
            except OSError:
                pass
        for fut in self.waiting.values():
            fut.set_exception(self._failure())
        self.waiting.clear()

    def _failure(self) -> ChannelError:
        """A fresh error per waiting batch: one the driver raises gets a traceback, and
        an error shared with ``broken`` would keep the driver's frames (and the
        program's nodes in them) alive as long as this client."""
        return ChannelError(str(self.broken))

    def close(self) -> None:
        """Closes the connection and waits (a little) for the answer thread to end,
        so that nothing of this client outlives it in another thread."""
        with self._lock:
            self._break(ChannelError("closed"))
        if self._reader is not threading.current_thread():
            self._reader.join(timeout=2.0)
