"""Persistent per-node stage executors: one long-lived actor per node that runs a group's
per-node work (``submit_per_node``) as an actor call instead of a Ray task.

A pinned task costs a lease from the node's raylet and a worker to run it; an actor call
goes straight to a worker that is already running. A streaming stage sends the same work
to the same nodes every micro-batch, so the executor is created once per node (pinned
where the core places the node's work, ``num_cpus=0`` like an idle actor, as many
concurrent calls as the node has CPUs) and reused.

The function a call runs is pickled once per function and carried inline in each call
(``ray_patch.shipping.inline``): no object store read per call. Ray restarts an executor
that dies and retries its calls (``max_restarts=-1``, ``max_task_retries=-1``); an
executor whose node left the cluster is replaced by one on a live node at the next call
that is placed there.
"""
from __future__ import annotations

from typing import Any

import ray

from ray_patch.options import pinned_actor_options
from ray_patch.shipping import unpack


def _executor_class() -> type:
    # Built in a function so that cloudpickle ships the class by value: workers need not
    # import ray_patch (as with the fused functions).
    class StageExecutor:
        """Runs the fused per-node work of a group for the driver."""

        def run(self, fn: Any, spec: tuple, *refs: Any) -> Any:
            return fn(*unpack(spec, refs))  # the arguments as ray_patch.shipping packed

    return StageExecutor


# num_cpus=0, memory=1 (byte): what ray_patch.options.pinned_actor_options gives an
# actor that asks for nothing, so that Ray keeps it on its node.
_ExecutorActor = ray.remote(num_cpus=0, **pinned_actor_options({"num_cpus": 0}),
                            max_restarts=-1, max_task_retries=-1)(
    _executor_class())

# Executors are named in a namespace of their own: a program's
# ``ray.util.list_named_actors()`` (its own namespace) lists only its actors.
NAMESPACE = "irfront-executors"


def executor_for(rt: Any, kind: str, node: int, make: Any) -> tuple[str, Any, dict]:
    """The ``kind`` executor of node index ``node``: ``(node hex id, handle, its method
    wrappers)``, made on first use by ``make(strategy, cpus, name)``: pinned with
    ``strategy``, as many threads as the node's ``cpus``, named
    ``<Kind>Executor~<job>-<runtime>-<node>`` in ``NAMESPACE``. Every kind lives in the runtime's one
    table (``rt.executors``; kind "stage" is this module's, "resident"
    ray_patch.resident's), so ``forget`` drops them all at shutdown and
    ``executor_nodes`` lists them."""
    key = (kind, node)
    hit = rt.executors.get(key)  # the per-call path: no lock once made
    if hit is None:
        with rt.lock:
            hit = rt.executors.get(key)
            if hit is None:
                hexid = rt.hex_of[node]
                job = ray.get_runtime_context().get_job_id()
                h = make(rt.strategies[node], max(1, int(rt.node_cpus(node))),
                         f"{kind.capitalize()}Executor~{job}-{rt.token}-{hexid[:12]}")
                hit = rt.executors[key] = (hexid, h, {})
    return hit


def _make_stage(strategy: Any, cpus: int, name: str) -> Any:
    return _ExecutorActor.options(scheduling_strategy=strategy, max_concurrency=cpus,
                                  name=name, namespace=NAMESPACE).remote()


def executor_call(rt: Any, node: int, num_returns: int) -> Any:
    """``run.remote`` of the stage executor on node index ``node`` (created on first
    use), returning ``num_returns`` objects (its option wrapper built once per
    executor)."""
    _, h, methods = executor_for(rt, "stage", node, _make_stage)
    m = methods.get(num_returns)
    if m is None:
        m = methods[num_returns] = (h.run.options(num_returns=num_returns)
                                    if num_returns != 1 else h.run).remote
    return m


def forget(rt: Any) -> list[Any]:
    """Drops a runtime's executors (every kind); returns their handles (to kill)."""
    with rt.lock:
        handles = [v[1] for v in rt.executors.values()]
        rt.executors.clear()
    return handles


def executor_nodes(rt: Any, kind: str | None = None) -> dict[str, Any]:
    """A runtime's executors of ``kind`` (None: every kind): node hex id it was pinned
    to -> handle."""
    with rt.lock:
        return {v[0]: v[1] for k, v in rt.executors.items() if kind is None or k[0] == kind}
