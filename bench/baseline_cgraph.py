"""The ``compiled-graph`` baseline in its own driver process.

On Ray 2.60 a second compiled graph in one driver can hang and a graph's teardown can
kill a raylet (docs ENVIRONMENT notes), so the graph lives in a child process connected
to the same cluster by address, compiled once for the whole run (one input per batch
names the size: every worker holds a copy per size), torn down at the end.

    drv = CompiledGraphDriver(address, partitions=16, maps=2, reducers=8,
                              sizes=[1, 4], max_in_flight=4)
    drv.start()                      # False (and drv.error says why) if it cannot run
    drv.submit(size_index, start, tag)   # one batch, now; returns at once
    out = drv.finish()               # {"records": [(tag, latency_s)...], "cpu_s": ...}

The child reads one JSON line per batch on stdin, executes the graph and reads its
outputs before the next line: one batch in flight. Unread outputs must not pile up on
Ray 2.60: the raylet that pushes a cross-node output blocks until the reader has read the
previous one, and every other task on that node stalls with it (plain tasks hung while a
graph's outputs waited to be read). A batch whose line arrives while the previous batch
runs waits in the pipe: that wait (its start to its execute) is its held-back time and is
in its latency. Each reducer returns ``(tag, time.time() - start, total)`` through the
graph. Driver CPU per batch is
``time.process_time()`` around ``execute`` in the child. Protocol lines on stdout start
with ``@@CG``; Ray's own output goes to stderr or a log file.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MARK = "@@CG "
CGRAPH_ENV = {"RAY_CGRAPH_get_timeout": "120", "RAY_CGRAPH_submit_timeout": "120"}


def _emit(kind: str, payload=None) -> None:
    sys.stdout.write(MARK + json.dumps([kind, payload]) + "\n")
    sys.stdout.flush()


def _tag(t):
    return tuple(t) if isinstance(t, list) else t


# ---- the child process ---------------------------------------------------------------
def serve(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--maps", type=int, required=True)
    ap.add_argument("--reducers", type=int, required=True)
    ap.add_argument("--sizes", required=True, help="MB, comma list")
    ap.add_argument("--max-in-flight", type=int, default=4,
                    help="the graph's _max_inflight_executions (one is used)")
    ap.add_argument("--warmup", type=int, default=3, help="unmeasured runs per size")
    a = ap.parse_args(argv)
    sys.path.insert(0, HERE)
    import benchpath  # noqa: F401  (Ray on loopback)
    import ray

    import baselines as bl

    sizes = [float(s) for s in a.sizes.split(",") if s]
    ray.init(address=a.address, log_to_driver=False)
    compiled = None
    try:
        bl.ship_by_value()
        layout = bl.Layout(bl.cpu_node_ids(), a.partitions, a.maps, a.reducers)
        compiled, _workers, _reducers, pids = bl.build_graph(layout, sizes,
                                                             a.max_in_flight)
        for _ in range(a.warmup):
            for j in range(len(sizes)):
                ray.get(compiled.execute((j, time.time(), None)))
        _emit("READY", {"nodes": layout.nodes, "pids": [os.getpid()] + pids})
        records, cpu, held, totals = [], [], [], None
        for line in sys.stdin:
            msg = json.loads(line)
            if msg[0] == "end":
                break
            _, j, start, tag = msg
            wait = max(0.0, time.time() - start)  # behind the parent's schedule
            c0 = time.process_time()
            ref = compiled.execute((j, start, tag))
            c1 = time.process_time()
            # Read at once: an unread output blocks the raylet that pushes the next one
            # (its WriteAcquire waits for the reader), and that stalls every other task
            # on the node (seen on Ray 2.60: plain tasks hung while outputs were unread).
            out = ray.get(ref)  # one CompiledDAGRef per reducer
            for rtag, lat, _total in out:
                if rtag is not None:
                    records.append((rtag, lat))
            totals = [t for _, _, t in out]
            if tag is not None:
                cpu.append((tag, c1 - c0))
                held.append((tag, wait))
        _emit("RESULT", {"records": records, "cpu_s": cpu, "held_back_s": held,
                         "totals": totals})
    except BaseException as e:  # noqa: BLE001 - reported to the parent, then re-raised
        _emit("ERROR", f"{type(e).__name__}: {e}"[:2000])
        raise
    finally:
        if compiled is not None:
            try:
                compiled.teardown()
            except Exception as e:  # noqa: BLE001
                print(f"teardown failed: {e!r}", file=sys.stderr)
        _emit("DONE")
        ray.shutdown()
    return 0


# ---- the parent's side ---------------------------------------------------------------
class CompiledGraphDriver:
    """Runs the graph in a child driver process; ``error`` says why it could not run."""

    def __init__(self, address: str, *, partitions: int, maps: int, reducers: int,
                 sizes: list[float], max_in_flight: int = 4, warmup: int = 3,
                 start_timeout_s: float = 300.0, finish_timeout_s: float = 300.0):
        self.address = address
        self.argv = [sys.executable, os.path.abspath(__file__), "--address", address,
                     "--partitions", str(partitions), "--maps", str(maps),
                     "--reducers", str(reducers),
                     "--sizes", ",".join(f"{s:g}" if s >= 1e-3 else repr(s) for s in sizes),
                     "--max-in-flight", str(max_in_flight), "--warmup", str(warmup)]
        self.start_timeout_s = start_timeout_s
        self.finish_timeout_s = finish_timeout_s
        self.error: str | None = None
        self.pids: list[int] = []
        self.proc: subprocess.Popen | None = None
        self._lines: queue.Queue = queue.Queue()
        self._log = None

    def _reader(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                try:
                    self._lines.put(json.loads(line[len(MARK):]))
                except ValueError:
                    pass
        self._lines.put(["EOF", None])

    def _expect(self, kind: str, timeout_s: float):
        deadline = time.time() + timeout_s
        while True:
            left = deadline - time.time()
            if left <= 0:
                self._fail(f"no {kind} from the compiled-graph driver in {timeout_s:.0f} s")
                return None
            try:
                got, payload = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if got == kind:
                return payload
            if got in ("ERROR", "EOF"):
                self._fail(payload if got == "ERROR" else
                           f"compiled-graph driver exited (rc {self.proc.poll()})")
                return None

    def _fail(self, reason: str) -> None:
        if self.error is None:
            tail = self.log_tail()
            self.error = reason + (f" [stderr: {tail}]" if tail else "")
        self._stop()

    def log_tail(self, n: int = 400) -> str:
        if self._log is None:
            return ""
        try:
            with open(self._log.name, errors="replace") as f:
                return " ".join(f.read()[-n:].split())
        except OSError:
            return ""

    def start(self) -> bool:
        env = dict(os.environ, **CGRAPH_ENV)
        self._log = tempfile.NamedTemporaryFile(prefix="cgraph_", suffix=".log",
                                                delete=False)
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     bufsize=1, env=env)
        threading.Thread(target=self._reader, daemon=True).start()
        ready = self._expect("READY", self.start_timeout_s)
        if ready is None:
            return False
        self.pids = ready["pids"]
        return True

    def cpu_s(self) -> float | None:
        """CPU seconds used so far by the graph's processes (its driver and actors), from
        /proc; None where /proc cannot tell."""
        total = 0.0
        try:
            tick = os.sysconf("SC_CLK_TCK")
            for pid in self.pids:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, ValueError, IndexError):
            return None
        return total

    def submit(self, size_index: int, start: float, tag) -> None:
        """One batch, executed by the child as soon as it reads the line."""
        if self.error is not None:
            return
        try:
            self.proc.stdin.write(json.dumps(["b", size_index, start, tag]) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as e:
            self._fail(f"compiled-graph driver gone ({type(e).__name__})")

    def finish(self) -> dict | None:
        """Ends the run: waits for every batch; returns the child's records, or None."""
        if self.error is not None:
            return None
        try:
            self.proc.stdin.write(json.dumps(["end"]) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as e:
            self._fail(f"compiled-graph driver gone ({type(e).__name__})")
            return None
        out = self._expect("RESULT", self.finish_timeout_s)
        if out is None:
            return None
        self._expect("DONE", 60.0)
        self._stop(wait_s=60.0)
        self._drop_log()  # a clean run's stderr is not needed (a failed one's is kept)
        return {"records": [(_tag(t), lat) for t, lat in out["records"]],
                "cpu_s": {_tag(t): s for t, s in out["cpu_s"]},
                "held_back_s": {_tag(t): s for t, s in out["held_back_s"]},
                "totals": out["totals"]}

    def _drop_log(self) -> None:
        if self._log is not None:
            self._log.close()
            try:
                os.unlink(self._log.name)
            except OSError:
                pass
            self._log = None

    def _stop(self, wait_s: float = 10.0) -> None:
        """Closes the child's stdin and waits; ends it (by its pid) if it hangs."""
        p = self.proc
        if p is None or p.poll() is not None:
            return
        try:
            p.stdin.close()
        except OSError:
            pass
        try:
            p.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(serve())
