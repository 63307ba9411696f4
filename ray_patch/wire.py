"""The authenticated transport under the resident path's own sockets (the executors'
feeds, the reducers' channels): a peer proves it holds the cluster's data-plane key
before any byte it sends is unpickled, frames are bounded, and listeners cap their
connections.

    key = cluster_key()                       # the same in every process of the cluster
    client_handshake(sock, key)               # blocking socket; raises AuthError
    await async_client_handshake(r, w, key)   # asyncio streams
    body = read_frame(f)                      # bounded by MAX_FRAME_BYTES
    frame = dumps(obj)                        # refuses an ObjectRef (RefInFrame)

The key travels only through Ray: with Ray's token authentication on, it is derived
from Ray's own token (``HMAC(token, label)``: every process of the cluster holds the
token); otherwise it is a random per-cluster key kept in Ray's internal KV (written once
by the first process that asks, read by the others through the GCS). Nothing that
cannot reach Ray can learn it.

The handshake is a mutual HMAC-SHA256 challenge of fixed sizes, as
``multiprocessing.connection``'s authkey does, so nothing of variable length is parsed
before it succeeds:

    server -> client   MAGIC (8) + server nonce (32)
    client -> server   HMAC(key, "c" + both nonces) (32) + client nonce (32)
    server -> client   HMAC(key, "s" + both nonces) (32)

ObjectRefs never travel in a frame: pickled outside Ray they lose their owner and no
borrower is registered. ``dumps`` raises ``RefInFrame`` instead, and the caller sends
that value through a Ray call.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import os
import pickle
import secrets
import socket
import struct
import threading
from typing import Any

import ray
from ray import cloudpickle

HEADER = struct.Struct("!Q")  # a frame's length
MAGIC = b"irfdp\x00\x01\x00"
NONCE = 32
DIGEST = 32
# A frame longer than this closes its connection (a header of 2**62 allocates nothing).
MAX_FRAME_BYTES = int(os.environ.get("IRFRONT_MAX_FRAME_BYTES", 1 << 30))
HANDSHAKE_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 256  # per listener; more are closed at once
KV_NAMESPACE = "irfront"
KV_KEY = b"data-plane-key"
_LABEL = b"irfront data plane v1"


class AuthError(ConnectionError):
    """A peer did not prove it holds the cluster's key (or sent a bad frame)."""


class FrameTooLarge(AuthError):
    """A frame's header announced more than ``MAX_FRAME_BYTES``."""


class RefInFrame(TypeError):
    """A value holds an ObjectRef: it must travel through a Ray call."""


# ---- the key ---------------------------------------------------------------------------
_key_lock = threading.Lock()
_KEYS: dict[str, bytes] = {}


def _ray_token() -> bytes | None:
    """Ray's own token when its token authentication is on in this process."""
    try:
        from ray._private.authentication.authentication_utils import \
            is_token_auth_enabled
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:  # a Ray without token authentication
        return None
    if not is_token_auth_enabled():
        return None
    loader = AuthenticationTokenLoader.instance()
    if not loader.has_token():
        return None
    headers = loader.get_token_for_http_header()
    return "".join(f"{k}:{v}" for k, v in sorted(headers.items())).encode()


def _kv_key() -> bytes:
    # Through this process's own GCS client (what ray.init connected), not
    # ``ray.experimental.internal_kv``'s module-wide one, which another in-process
    # cluster's shutdown resets (``ray.cluster_utils.Cluster``).
    gcs = ray._private.worker.global_worker.gcs_client
    got = gcs.internal_kv_get(KV_KEY, KV_NAMESPACE)
    if got is None:
        gcs.internal_kv_put(KV_KEY, secrets.token_bytes(32), False, KV_NAMESPACE)
        got = gcs.internal_kv_get(KV_KEY, KV_NAMESPACE)
    if not got or len(got) < 16:
        raise AuthError("no data-plane key in Ray's internal KV")
    return bytes(got)


def cluster_key() -> bytes:
    """This cluster's data-plane key (see the module's docstring), cached per cluster."""
    session = ray.get_runtime_context().gcs_address
    with _key_lock:
        key = _KEYS.get(session)
        if key is None:
            token = _ray_token()
            secret = token if token is not None else _kv_key()
            key = _KEYS[session] = hmac.new(secret, _LABEL, hashlib.sha256).digest()
    return key


def _mac(key: bytes, side: bytes, a: bytes, b: bytes) -> bytes:
    return hmac.new(key, side + a + b, hashlib.sha256).digest()


# ---- the handshake, blocking sockets ---------------------------------------------------
def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        got = sock.recv(n - len(buf))
        if not got:
            raise AuthError("the peer closed the connection during the handshake")
        buf += got
    return bytes(buf)


def server_handshake(sock: socket.socket, key: bytes) -> None:
    """The listening side's half; raises ``AuthError`` (or ``OSError``/timeout)."""
    sock.settimeout(HANDSHAKE_TIMEOUT_S)
    ns = secrets.token_bytes(NONCE)
    sock.sendall(MAGIC + ns)
    got = _recv_exactly(sock, DIGEST + NONCE)
    nc = got[DIGEST:]
    if not hmac.compare_digest(got[:DIGEST], _mac(key, b"c", ns, nc)):
        raise AuthError("the peer did not prove it holds the cluster's key")
    sock.sendall(_mac(key, b"s", nc, ns))
    sock.settimeout(None)


def client_handshake(sock: socket.socket, key: bytes) -> None:
    """The connecting side's half: also checks that the listener holds the key."""
    sock.settimeout(HANDSHAKE_TIMEOUT_S)
    hello = _recv_exactly(sock, len(MAGIC) + NONCE)
    if hello[:len(MAGIC)] != MAGIC:
        raise AuthError("not an irfront data-plane listener")
    ns, nc = hello[len(MAGIC):], secrets.token_bytes(NONCE)
    sock.sendall(_mac(key, b"c", ns, nc) + nc)
    if not hmac.compare_digest(_recv_exactly(sock, DIGEST), _mac(key, b"s", nc, ns)):
        raise AuthError("the listener did not prove it holds the cluster's key")
    sock.settimeout(None)


# ---- the handshake, asyncio streams ----------------------------------------------------
async def _server_half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       key: bytes) -> None:
    ns = secrets.token_bytes(NONCE)
    writer.write(MAGIC + ns)
    await writer.drain()
    got = await reader.readexactly(DIGEST + NONCE)
    nc = got[DIGEST:]
    if not hmac.compare_digest(got[:DIGEST], _mac(key, b"c", ns, nc)):
        raise AuthError("the peer did not prove it holds the cluster's key")
    writer.write(_mac(key, b"s", nc, ns))


async def _client_half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       key: bytes) -> None:
    hello = await reader.readexactly(len(MAGIC) + NONCE)
    if hello[:len(MAGIC)] != MAGIC:
        raise AuthError("not an irfront data-plane listener")
    ns, nc = hello[len(MAGIC):], secrets.token_bytes(NONCE)
    writer.write(_mac(key, b"c", ns, nc) + nc)
    got = await reader.readexactly(DIGEST)
    if not hmac.compare_digest(got, _mac(key, b"s", nc, ns)):
        raise AuthError("the listener did not prove it holds the cluster's key")


async def async_server_handshake(reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter, key: bytes) -> None:
    await asyncio.wait_for(_server_half(reader, writer, key), HANDSHAKE_TIMEOUT_S)


async def async_client_handshake(reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter, key: bytes) -> None:
    await asyncio.wait_for(_client_half(reader, writer, key), HANDSHAKE_TIMEOUT_S)


# ---- frames ----------------------------------------------------------------------------
def _length(head: bytes) -> int:
    n = HEADER.unpack(head)[0]
    if n > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"a frame of {n} bytes (the bound is {MAX_FRAME_BYTES})")
    return n


def read_frame(f: Any) -> bytes | None:
    """The next frame's body from a blocking file, or None at the end."""
    head = f.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    n = _length(head)
    body = f.read(n)
    return body if len(body) == n else None


async def read_frame_async(reader: asyncio.StreamReader) -> bytes:
    """The next frame's body (``IncompleteReadError`` at the end)."""
    return await reader.readexactly(_length(await reader.readexactly(HEADER.size)))


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, ray.ObjectRef):
            raise RefInFrame("an ObjectRef travels through Ray, not in a frame")
        return NotImplemented


class _CloudPickler(cloudpickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, ray.ObjectRef):
            raise RefInFrame("an ObjectRef travels through Ray, not in a frame")
        return super().reducer_override(obj)


# A frame's body: the count of out-of-band buffers, their lengths, the pickle, the
# buffers. Large contiguous values (numpy arrays, bytes) travel as protocol 5 buffers:
# copied once into the frame, and unpickled as read-only views of the received body (as
# Ray maps them from its object store), not copied again.
_COUNT = struct.Struct("!I")
_LEN = 8


def dumps(obj: Any) -> bytearray:
    """A frame: ``pickle`` when it can, ``cloudpickle`` otherwise (closures); an
    ObjectRef anywhere in ``obj`` raises ``RefInFrame``, a frame over
    ``MAX_FRAME_BYTES`` raises ``FrameTooLarge`` (nothing is sent either way)."""
    buffers: list = []
    buf = io.BytesIO()
    try:
        _Pickler(buf, protocol=5, buffer_callback=buffers.append).dump(obj)
    except RefInFrame:
        raise
    except (pickle.PicklingError, TypeError, AttributeError):
        buffers.clear()
        buf.seek(0)
        buf.truncate()
        _CloudPickler(buf, protocol=5, buffer_callback=buffers.append).dump(obj)
    raw = [b.raw() for b in buffers]
    head = _COUNT.pack(len(raw)) + struct.pack(f"!{len(raw)}Q", *(r.nbytes for r in raw))
    body = buf.getbuffer()
    n = len(head) + len(body) + sum(r.nbytes for r in raw)
    if n > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"a frame of {n} bytes (the bound is {MAX_FRAME_BYTES})")
    out = bytearray(HEADER.size + n)
    HEADER.pack_into(out, 0, n)
    pos = HEADER.size
    for part in (memoryview(head), body, *raw):
        out[pos:pos + part.nbytes] = part
        pos += part.nbytes
    return out


def loads(body: Any) -> Any:
    """A frame's value (``dumps``' layout); only ever on a connection whose peer passed
    the handshake. A body that does not parse raises ``AuthError``."""
    view = memoryview(body)
    if len(view) < _COUNT.size:
        raise AuthError("a malformed frame")
    count = _COUNT.unpack_from(view, 0)[0]
    start = _COUNT.size + _LEN * count
    if start > len(view):
        raise AuthError("a malformed frame")
    lens = struct.unpack_from(f"!{count}Q", view, _COUNT.size)
    size = len(view) - start - sum(lens)
    if size < 0:
        raise AuthError("a malformed frame")
    pos = start + size
    buffers = []
    for n in lens:
        buffers.append(view[pos:pos + n])
        pos += n
    return pickle.loads(view[start:start + size], buffers=buffers)
