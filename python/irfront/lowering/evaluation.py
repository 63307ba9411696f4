"""Semi-lazy evaluation: ``node.eval()`` runs the passes on the node's DAG, lowers what
is not evaluated yet (inputs first) and records the results for the user's nodes.

The ``Evaluator`` here is installed into the IR (``irfront.ir.set_evaluator``) when this
module is imported, so IR nodes need not import lowering.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import ray

from irfront.errors import IRError, note_node
from irfront.ir.nodes import InitActors, Node, set_evaluator
from irfront.lowering.context import LoweringContext, Results
from irfront.lowering.options import get_options
from irfront.lowering.ops import flat_objects
from irfront.lowering.planner import lower
from irfront.lowering.submitter import submitter_for
from irfront.passes import optimize

_FAILURES = (ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError,
             ray.exceptions.WorkerCrashedError, ray.exceptions.ActorDiedError)


@dataclass(frozen=True)
class NodePlacement:
    """Where an evaluated node's tasks went."""

    node: str  # the node's label
    group_id: int
    scheduler: str  # vanilla | pack | locality | spread
    depends_on: int | None  # the group it read from
    counts: dict[str, int] | None  # Ray node hex id -> tasks (None under vanilla)

    def __str__(self) -> str:
        counts = ("not recorded (vanilla Ray places each task itself)" if self.counts is None
                  else ", ".join(f"{h[:8]}: {c}" for h, c in sorted(self.counts.items())))
        dep = f" <- g{self.depends_on}" if self.depends_on is not None else ""
        return f"{self.node} g{self.group_id}{dep} [{self.scheduler}] {counts}"


class Evaluator:
    """Evaluates nodes under the current lowering options; one per process.

    One evaluation at a time: a program that evaluates from several threads (a driver
    thread streaming batches, another reading ``reducers.eval()``) must see one set of
    actors per ``InitActors``, so a node is lowered once, whichever thread asks first,
    and the others get its recorded value. Re-entrant: a batch's ``submit`` may
    evaluate nodes inside the driver's own evaluation."""

    def __init__(self) -> None:
        self.results = Results()
        self._lock = threading.RLock()

    def eval(self, node: Node) -> list:
        r = self.results.get(node)
        if r is not None and r.value is not None and not r.freed:
            return r.value  # already evaluated: no lock needed
        with self._lock:
            return self._eval_locked(node)

    def _eval_locked(self, node: Node) -> list:
        r = self.results.get(node)
        if r is not None and r.freed:
            raise IRError(node.label, f"evaluated after its group g{r.group_id} was freed; "
                          f"node.free() drops the results, so build a new {node.kind}(...) "
                          "node instead of reusing this one")
        if r is not None and r.value is not None:
            return r.value
        if not ray.is_initialized():
            raise IRError(node.label, "Ray is not initialised; call irfront.init(address="
                          "...) or ray.init() first, or start irfront.cluster.LocalCluster()")
        opts = get_options()
        sub = submitter_for(opts)
        results = self.results
        plan = optimize(node, results.done, opts.enabled)
        ctx = LoweringContext(opts, sub, results)
        for n in plan.walk():
            if results.done(n) or id(n) in ctx.local:
                continue
            if isinstance(n, InitActors) and n is not plan:
                continue  # placed by its first consumer, with that consumer's data
            out = lower(n, ctx)
            ctx.local[id(n)] = out
            results.record(n.replaces or n, out, sub)
        return ctx.local[id(plan)].value

    def get(self, node: Node, timeout: float | None = None) -> list:
        value = self.eval(node)
        if isinstance(node, InitActors):
            return list(value)
        flat = flat_objects(node, value)
        try:
            out = ray.get(flat, timeout=timeout)
        except ray.exceptions.RayError as e:
            if isinstance(e, _FAILURES):
                self.results.get(node).submitter.after_failure()
            raise note_node(e, node.label, f" (group g{self.group_id(node)})")
        if len(flat) != len(value):  # num_returns=k tasks: one list of k per task
            k = node.num_returns
            return [out[i:i + k] for i in range(0, len(out), k)]
        return out

    def placement(self, node: Node) -> NodePlacement:
        r = self.results.get(node)
        if r is None:
            raise IRError(node.label, "not evaluated yet; call node.eval() before "
                          "node.placement()")
        return NodePlacement(node.label, r.group_id, r.submitter.scheduler, r.depends_on,
                             r.submitter.placement(r.group_id))

    def free(self, node: Node) -> None:
        self.results.free(node)

    def group_id(self, node: Node) -> int | None:
        r = self.results.get(node)
        return None if r is None else r.group_id

    def evaluated(self, node: Node) -> bool:
        r = self.results.get(node)
        return r is not None and r.value is not None

    def state(self, node: Node) -> str:
        r = self.results.get(node)
        if r is None:
            return "not evaluated"
        if r.freed:
            return "freed"
        return f"g{r.group_id} [{r.submitter.scheduler}]"


EVALUATOR = Evaluator()
set_evaluator(EVALUATOR)
