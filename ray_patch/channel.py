"""Direct channels from resident executors to reducer actors: one TCP connection per
(executor, reducer), set up once, carrying one frame per batch each way.

    addr = ray.get(handle.__ray_call__.remote(OPEN_CHANNEL, True))  # on the reducer
    conn = await connect(addr)          # in an executor's event loop
    ack = await conn.call(frame_args)   # the reducer applied it: last applied call

Why not an actor call from the executor: each node's executor feeds every reducer, so a
batch is 32 calls from 4 workers on the benchmark's shape, each one a Ray task (submit,
gRPC, the receiving worker's task machinery). On the 2-core machine that put the
resident path's reducer arrival at 59 ms p50 (floor data), against 18 ms for the driver
submitting the reducer calls itself (docs/BENCHMARKS.md). A frame on a connection that
is already open is a ``sendall`` on one side and a blocking ``recv`` on the other.

The reducer side (``OPEN_CHANNEL``, run on the actor through ``__ray_call__``, shipped by
value): a listening socket on the node's IP, one thread per connection, each frame
applied under the actor's ``_irf_lock`` (the lock ``CheckpointedReducer``'s methods take,
so a frame never runs beside a checkpoint, a restore or a replayed call): an exactly-once
reducer's ``apply_partial``, another actor's ``GATHER`` (ray_patch.resident). The reply is
``(True, result)`` or ``(False, exception)``. It is idempotent: a second call returns the
address of the listener already running in that actor process, and a restarted actor
(a new process) opens a new one.

The executor side (``Conn``): frames are written in call order and replies read in the
same order, so a batch's call resolves to its own reply; a broken connection (the reducer
died, its node went away) resolves every waiting call to a ``ChannelError`` and the
executor reconnects on its next batch (asking the actor for its address again).
"""
from __future__ import annotations

import asyncio
import collections
import pickle
import struct
from typing import Any

from ray import cloudpickle

HEADER = struct.Struct("!Q")  # the frame's length


class ChannelError(ConnectionError):
    """The connection to a reducer broke (it died or restarted) or never opened: the
    frames it carried may not have been applied."""


def dumps(obj: Any) -> bytes:
    """A frame: ``pickle`` (fast) when it can, ``cloudpickle`` otherwise (closures)."""
    try:
        body = pickle.dumps(obj, protocol=5)
    except Exception:
        body = cloudpickle.dumps(obj)
    return HEADER.pack(len(body)) + body


def read_frame(f: Any) -> bytes | None:
    """The next frame's body from a blocking file, or None at the end."""
    head = f.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    return f.read(HEADER.unpack(head)[0])


def dumps_answer(head: tuple, ok: bool, value: Any) -> bytes:
    """An answer frame ``head + (ok, value)``; an exception that does not pickle travels
    as its text."""
    try:
        return dumps(head + (ok, value))
    except Exception:  # noqa: BLE001
        return dumps(head + (False, RuntimeError(repr(value))))


def _open_channel_fn():
    # Built in a function so that cloudpickle ships it by value to any actor; what it
    # calls comes from this module (workers import ray_patch, docs/NETCLUSTER.md).
    def open_channel(self, apply: Any) -> tuple[str, int]:
        """On any actor: the address of its channel listener (started on first call).
        Each frame is ``args``; it runs ``apply(self, args)`` under ``self._irf_lock``."""
        st = self.__dict__.get("_irf_chan")
        if st is not None:
            return st[0]
        init = getattr(self, "_irf_init", None)
        if init is not None:  # an exactly-once reducer: its state read on Ray's thread
            init()
        import socket
        import threading

        import ray as ray_

        lock = self.__dict__.setdefault("_irf_lock", threading.RLock())
        ip = ray_.util.get_node_ip_address()
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.bind((ip, 0))
        srv.listen(64)
        addr = (ip, srv.getsockname()[1])

        def serve(conn):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            f = conn.makefile("rb")
            try:
                while True:
                    body = read_frame(f)
                    if body is None:
                        return
                    try:
                        args = pickle.loads(body)
                        with lock:
                            out = (True, apply(self, args))
                    except BaseException as e:  # noqa: BLE001 - it travels back
                        out = (False, e)
                    conn.sendall(dumps_answer((), *out))
            except OSError:
                return
            finally:
                conn.close()

        def accept():
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                threading.Thread(target=serve, args=(conn,), daemon=True,
                                 name="irf-channel").start()

        threading.Thread(target=accept, daemon=True, name="irf-channel-accept").start()
        self.__dict__["_irf_chan"] = (addr, srv)
        return addr
    return open_channel


OPEN_CHANNEL = _open_channel_fn()


class Conn:
    """One open connection to a reducer, in an executor's event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 addr: tuple = ()):
        self.reader, self.writer, self.addr = reader, writer, tuple(addr)
        self.waiting: collections.deque = collections.deque()
        self.broken: ChannelError | None = None
        self.task = asyncio.ensure_future(self._replies())

    async def _replies(self) -> None:
        try:
            while True:
                head = await self.reader.readexactly(HEADER.size)
                ok, val = pickle.loads(
                    await self.reader.readexactly(HEADER.unpack(head)[0]))
                fut = self.waiting.popleft()
                if not fut.done():  # its caller may have stopped waiting (a timeout)
                    fut.set_result(val)
        except (Exception, asyncio.CancelledError) as e:  # noqa: BLE001
            self.close(ChannelError(f"channel to the reducer broke: {e!r}"))

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
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_result(why)


async def connect(addr: tuple[str, int]) -> Conn:
    reader, writer = await asyncio.open_connection(addr[0], addr[1])
    sock = writer.get_extra_info("socket")
    if sock is not None:
        import socket
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

    def __init__(self, addr: tuple[str, int], timeout_s: float = 5.0):
        import socket
        import threading
        self.sock = socket.create_connection(tuple(addr), timeout=timeout_s)
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.waiting: dict[int, Any] = {}
        self.broken: ChannelError | None = None
        self._lock = threading.Lock()
        self._ids = iter(range(1 << 62))
        threading.Thread(target=self._answers, daemon=True, name="irf-feed").start()

    def send(self, frame: Any) -> Any:
        """One frame; returns the future of its answer."""
        import concurrent.futures
        fut: Any = concurrent.futures.Future()
        with self._lock:
            if self.broken is not None:
                fut.set_exception(self.broken)
                return fut
            call_id = next(self._ids)
            self.waiting[call_id] = fut
            try:
                self.sock.sendall(dumps((call_id, frame)))
            except OSError as e:
                self._break(ChannelError(f"feed to the executor broke: {e!r}"))
        return fut

    def _answers(self) -> None:
        f = self.sock.makefile("rb")
        try:
            while True:
                body = read_frame(f)
                if body is None:
                    raise ChannelError("the executor closed its feed")
                call_id, ok, value = pickle.loads(body)
                with self._lock:
                    fut = self.waiting.pop(call_id, None)
                if fut is not None:
                    (fut.set_result if ok else fut.set_exception)(value)
        except Exception as e:  # noqa: BLE001 - every waiting batch hears of it
            with self._lock:
                self._break(e if isinstance(e, ChannelError) else
                            ChannelError(f"feed to the executor broke: {e!r}"))

    def _break(self, why: ChannelError) -> None:  # under self._lock
        if self.broken is None:
            self.broken = why
            try:
                self.sock.close()
            except OSError:
                pass
        for fut in self.waiting.values():
            fut.set_exception(why)
        self.waiting.clear()

    def close(self) -> None:
        with self._lock:
            self._break(ChannelError("closed"))
