"""An attacker on the cluster's network, against the resident path's own listeners.

``attack(pids, marker)`` lists every TCP port the given processes listen on (the Ray
workers that host irfront's executors and reducers: their own listeners and Ray's) and
sends each, on fresh connections:
- a pickle whose ``__reduce__`` would write ``marker`` (code execution);
- the same after 64 bytes that stand in for a handshake answer;
- random bytes;
- a frame header announcing 2**62 bytes, raw and after a fake handshake answer.
It returns what it did. The caller then checks that ``marker`` was never written, that
every process is alive, and that a stream run afterwards is still exact.

Run as a script (``python tests/adversary.py``) it does all of that on a cluster of its
own with Ray's token authentication on (``RAY_AUTH_MODE=token``), and prints a JSON line.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import socket
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def listening_ports(pids: list[int]) -> list[tuple[str, int, int]]:
    """(ip, port, pid) of every TCP socket these processes listen on."""
    import psutil
    out = []
    for pid in set(pids):
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN and c.laddr:
                ip = c.laddr.ip if c.laddr.ip not in ("0.0.0.0", "::") else "127.0.0.1"
                out.append((ip, c.laddr.port, pid))
    return sorted(set(out))


def _send(addr: tuple[str, int], payload: bytes, rng: random.Random) -> str:
    try:
        with socket.create_connection(addr, timeout=2.0) as s:
            s.settimeout(1.0)
            try:
                s.sendall(payload)
                s.recv(4096)  # whatever comes back (a challenge, nothing)
            except OSError:
                pass
            return "sent"
    except OSError as e:
        return f"refused: {e.__class__.__name__}"


def attack(pids: list[int], marker: str, seed: int = 0) -> dict:
    rng = random.Random(seed)
    evil = pickle.dumps(_Evil(marker), protocol=5)
    frame = struct.pack("!Q", len(evil)) + evil
    huge = struct.pack("!Q", 1 << 62)
    fake_answer = bytes(rng.getrandbits(8) for _ in range(64))
    payloads = {
        "pickle": frame,
        "pickle-after-fake-handshake": fake_answer + frame,
        "random": bytes(rng.getrandbits(8) for _ in range(4096)),
        "huge-header": huge + b"x" * 64,
        "huge-header-after-fake-handshake": fake_answer + huge,
    }
    ports = listening_ports(pids)
    sent = 0
    for ip, port, _ in ports:
        for name, p in payloads.items():
            if _send((ip, port), p, rng) == "sent":
                sent += 1
    return {"ports": len(ports), "sent": sent, "kinds": sorted(payloads)}


def actor_pids(handles: list) -> list[int]:
    import ray
    return ray.get([h.__ray_call__.remote(lambda self: os.getpid()) for h in handles])


def resident_pids() -> list[int]:
    """The processes of this driver's resident executors."""
    import ray
    from ray_patch import current_runtime, executors as ex
    hs = list(ex.executor_nodes(current_runtime(), "resident").values())
    return ray.get([h.__ray_call__.remote(lambda self: os.getpid()) for h in hs])


def alive(pids: list[int]) -> list[int]:
    import psutil
    out = []
    for p in pids:
        try:
            if psutil.Process(p).status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def main() -> int:
    """A cluster with Ray's token auth on: a stream, the attack, a stream again."""
    token_dir = tempfile.mkdtemp(prefix="irf-token-")
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = os.urandom(16).hex()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    sys.path[:0] = [os.path.join(ROOT, "python"), ROOT, HERE]
    try:
        return _attack_run(token_dir)
    finally:
        shutil.rmtree(token_dir, ignore_errors=True)


def _attack_run(token_dir: str) -> int:
    """``main``'s run; the marker a stranger's code would write goes in ``token_dir``."""
    from irfront.cluster import LocalCluster
    from ray_patch import wire
    import streams
    marker = os.path.join(token_dir, "pwned")
    out: dict = {}
    with LocalCluster(num_nodes=2, cpus_per_node=2, object_store_mb=150,
                      pythonpath=[HERE]):
        out["token_auth"] = wire._ray_token() is not None
        out["first"] = streams.exact_resident_stream(8)
        handles = out["first"].pop("handles")  # kept: an actor ends with its last handle
        pids = actor_pids(handles) + resident_pids()
        out["attack"] = attack(pids, marker)
        time.sleep(0.5)
        living = alive(pids)
        out["alive"] = len(living) == len(pids)
        out["dead"] = sorted(set(pids) - set(living))
        out["second"] = streams.exact_resident_stream(8)
        out["second"].pop("handles")
        del handles
    out["code_ran"] = os.path.exists(marker)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
