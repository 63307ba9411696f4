"""A multi-node Ray cluster on this machine, kept on loopback (127.0.0.1).

    with LocalCluster(num_nodes=4, cpus_per_node=2) as cluster:
        ...                                  # ray is initialised against it
        cluster.remove_node(cluster.worker_nodes[0])   # a node failure

Each node is a raylet with its own object store (ray.cluster_utils.Cluster), so objects
really move between nodes through Ray's object manager. ``connect(address)`` joins an
existing cluster instead.
"""
from __future__ import annotations

import os
import sys

import ray
from ray.cluster_utils import Cluster

import ray_patch

LOOPBACK = "127.0.0.1"

# How fast Ray's GCS declares a node dead (Ray 2.60 system config, set on the head; a
# real cluster sets the same with `ray start --head --system-config='{...}'`). The GCS
# health-checks every raylet over gRPC; a node is dead after `failure_threshold` checks
# in a row fail. Ray's defaults: a check every 3 s, 5 failures (15 s), a 10 s timeout
# per check, the first check 5 s after a node joins. Here: a killed raylet refuses the
# check at once, so it is declared dead about 5 x 0.5 = 2.5 s after it dies; a raylet
# that is alive but starved of CPU gets 5 s per check, so it must stay silent for about
# 27 s to be declared dead (at 2 s and 3 failures, 7.5 s of starvation was enough on a
# 2-core machine with busy loops beside the tests: a whole node of the session's
# cluster was lost mid-run).
HEALTH_CHECK = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 5000,
    "health_check_failure_threshold": 5,
}


# The process titles of the agents a raylet starts beside its workers (Ray 2.60).
_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _started_by(node) -> list:
    """The processes a node's raylet started (its workers), found before it is killed:
    once it is, they are re-parented and can no longer be told apart."""
    import psutil
    try:
        return [psutil.Process(p.pid).children(recursive=True)
                for name, p in node.live_processes() if name == "raylet"][0]
    except (IndexError, psutil.Error):
        return []


def _kill_all(procs: list, timeout_s: float = 10.0) -> None:
    """SIGKILLs ``procs`` (psutil processes, by pid) and waits, bounded, until they are
    gone."""
    import psutil
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=timeout_s)


def _force_loopback() -> None:
    """Ray binds to the machine's interface address unless told otherwise; this keeps
    it (and every raylet it starts, which inherits the environment) on loopback. Only
    the embedded cluster does this: joining a cluster leaves Ray's addresses alone."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:  # ray may have been imported before this module: fix its cached constant too
        from ray._private import ray_constants
        ray_constants.ENABLE_RAY_CLUSTER = False
    except Exception:  # pragma: no cover - layout of a future Ray
        pass


def _worker_pythonpath(extra: list[str]) -> None:
    """Lets Ray workers import irfront, ray_patch and the caller's extra paths."""
    here = os.path.dirname(os.path.abspath(__file__))  # .../python/irfront
    paths = [os.path.dirname(here)]  # .../python
    paths.append(os.path.dirname(os.path.dirname(os.path.abspath(
        sys.modules["ray_patch"].__file__))))
    paths += extra
    old = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    merged = []
    for p in paths + old:
        if p not in merged:
            merged.append(p)
    os.environ["PYTHONPATH"] = os.pathsep.join(merged)


def check_loopback() -> list[str]:
    """The NodeManagerAddress of every node; raises if any is not 127.0.0.1."""
    addrs = [n["NodeManagerAddress"] for n in ray.nodes()]
    bad = [a for a in addrs if a != LOOPBACK]
    if bad:
        raise RuntimeError(f"Ray nodes are not on loopback: {addrs}; set "
                           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing ray")
    return addrs


class LocalCluster:
    """``num_nodes`` Ray nodes (head included) of ``cpus_per_node`` CPUs on 127.0.0.1.

    Starts on construction (``start=True``) and, with ``connect=True``, initialises Ray
    against it. Use as a context manager, or call ``shutdown()``. ``dashboard=True`` starts
    Ray's dashboard on the head (ray[default]; off by default: it costs CPU on small
    machines). Each node's metrics agent runs whenever ray[default] is installed (it
    exports Ray's and irfront's metrics: ``metrics_ports()``). ``system_config`` goes to
    the head's ``_system_config`` over ``HEALTH_CHECK`` (a killed raylet is seen dead in
    about 2.5 s).
    """

    def __init__(self, num_nodes: int = 4, cpus_per_node: int = 2, *,
                 object_store_mb: int = 256, head_cpus: int | None = None,
                 connect: bool = True, start: bool = True,
                 pythonpath: list[str] | None = None, dashboard: bool = False,
                 system_config: dict | None = None):
        if num_nodes < 1:
            raise ValueError(f"LocalCluster: num_nodes must be >= 1; got {num_nodes}")
        self.num_nodes = num_nodes
        self.cpus_per_node = cpus_per_node
        self.object_store_mb = object_store_mb
        self.head_cpus = cpus_per_node if head_cpus is None else head_cpus
        self._connect = connect
        self._pythonpath = list(pythonpath or [])
        self.dashboard = dashboard  # Ray's dashboard on the head (needs ray[default])
        self.system_config = {**HEALTH_CHECK, **(system_config or {})}
        self._cluster = None
        self.worker_nodes: list = []
        if start:
            self.start()

    def _node_args(self, cpus: int) -> dict:
        return {"num_cpus": cpus, "node_ip_address": LOOPBACK,
                "object_store_memory": self.object_store_mb * 1024 * 1024}

    def start(self) -> "LocalCluster":
        _force_loopback()
        _worker_pythonpath(self._pythonpath)
        if ray.is_initialized():
            raise RuntimeError("LocalCluster: Ray is already initialised in this process; "
                               "call ray.shutdown() first or use irfront.cluster.connect()")
        self._cluster = Cluster(initialize_head=True,
                                head_node_args={**self._node_args(self.head_cpus),
                                                "include_dashboard": self.dashboard,
                                                "_system_config": self.system_config})
        try:
            for _ in range(self.num_nodes - 1):
                self.worker_nodes.append(self._cluster.add_node(
                    **self._node_args(self.cpus_per_node)))
            self._cluster.wait_for_nodes()
            if self._connect:
                ray.init(address=self._cluster.address)
                check_loopback()
        except BaseException:
            self.shutdown()
            raise
        return self

    @property
    def address(self) -> str:
        return self._cluster.address

    @property
    def head_node(self):
        return self._cluster.head_node

    def node_ids(self) -> list[str]:
        """Ray hex ids of the alive nodes (needs a connected driver)."""
        return [n["NodeID"] for n in ray.nodes() if n["Alive"]]

    def metrics_ports(self) -> dict[str, tuple[str, int]]:
        """Ray hex id -> (address, port) of each alive node's Prometheus endpoint
        (``http://address:port/metrics``; served by the node's metrics agent, which needs
        ray[default]). Needs a connected driver."""
        return {n["NodeID"]: (n["NodeManagerAddress"], int(n["MetricsExportPort"]))
                for n in ray.nodes() if n["Alive"] and n.get("MetricsExportPort")}

    def add_node(self, cpus: int | None = None):
        node = self._cluster.add_node(**self._node_args(
            self.cpus_per_node if cpus is None else cpus))
        self.worker_nodes.append(node)
        self._cluster.wait_for_nodes()
        return node

    def remove_node(self, node=None, allow_graceful: bool = False):
        """Removes a worker node (default: the last one added): a node failure.

        Not graceful (the default), it is a machine going away: the node's own processes
        and the workers its raylet started (actors, executors) are killed together. Ray's
        ``Cluster.remove_node`` kills only the node's own processes, and a worker then
        lives on, and answers direct actor calls, until it notices its raylet is gone."""
        if node is None:
            node = self.worker_nodes[-1]
        elif isinstance(node, int):
            node = self.worker_nodes[node]
        elif isinstance(node, str):
            node = next(w for w in self.worker_nodes if w.node_id == node)
        workers = [] if allow_graceful else _started_by(node)
        self._cluster.remove_node(node, allow_graceful=allow_graceful)
        _kill_all(workers)
        self.worker_nodes.remove(node)
        return node

    def process_ids(self) -> list[int]:
        """The pids of every live process of every node this cluster started: the GCS,
        raylets and log monitors, and what each raylet started (its agents, which do not
        always exit with it, and its workers)."""
        if self._cluster is None:
            return []
        nodes = self._cluster.list_all_nodes()
        pids = [p.pid for node in nodes for _, p in node.live_processes()]
        pids += [p.pid for node in nodes for p in _started_by(node)]
        return list(dict.fromkeys(pids))

    def worker_pids(self) -> list[int]:
        """The pids of the Ray workers (tasks, actors, executors) every node's raylet
        started, for fault injection by pid. Not the node's agents, which the raylet
        also starts: the raylet exits with them (a node failure, not a worker's)."""
        import psutil
        if self._cluster is None:
            return []
        out = []
        for node in self._cluster.list_all_nodes():
            for p in _started_by(node):
                try:
                    cmd = p.cmdline()
                except psutil.Error:
                    continue
                if cmd and cmd[0] not in _AGENTS and (
                        cmd[0].startswith("ray::") or
                        any(c.endswith("default_worker.py") for c in cmd)):
                    out.append(p.pid)
        return out

    @staticmethod
    def wait_dead(node_id: str, timeout_s: float = 60.0) -> bool:
        """Waits until the GCS reports node ``node_id`` dead (a removed node, or one
        whose raylet died, stays alive in ``ray.nodes()`` until its health checks
        fail); False if it still looks alive after ``timeout_s``."""
        import time
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes()):
                return True
            time.sleep(0.2)
        return False

    def shutdown(self) -> None:
        """Disconnects the driver and stops every node; safe to call twice."""
        release_runtime()
        quiet_shutdown()
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = None
            self.worker_nodes = []

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "running" if self._cluster is not None else "stopped"
        return (f"LocalCluster(num_nodes={self.num_nodes}, cpus_per_node="
                f"{self.cpus_per_node}, object_store_mb={self.object_store_mb}, {state})")


def release_runtime() -> None:
    """Lets go of what ray_patch's runtime holds (its tables: the resident feeds, whose
    connections close, and routes holding refs) while Ray is still up
    (``quiet_shutdown`` then collects: a Ray object whose last reference goes after
    ``ray.shutdown()``, in any thread, reaches a core worker that is gone, and Ray then
    ends the process)."""
    rt = ray_patch.current_runtime()
    if rt is not None:
        rt.release()
    ray_patch.reset()


def quiet_shutdown() -> None:
    """``ray.shutdown()`` with the garbage collector paused: a collection that another
    thread triggers meanwhile would release Ray objects against a core worker being torn
    down (Ray ends the process when that happens)."""
    import gc
    if not ray.is_initialized():
        return
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        ray.shutdown()
    finally:
        if was:
            gc.enable()


def connect(address: str = "auto", **init_kwargs) -> None:
    """Joins an existing Ray cluster (``ray.init(address=...)``); a no-op when Ray is
    already initialised. Ray's node addresses are left as the cluster has them."""
    if not ray.is_initialized():
        ray.init(address=address, **init_kwargs)
