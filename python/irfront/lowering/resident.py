"""The resident lowering of a combined grouped shuffle (switch ``resident``): one call per
source node to that node's resident executor, which sends its merged partials straight
to the reducers (ray_patch/resident.py). The driver submits no reducer call.

It applies inside a stream driver (a call log is set: the driver confirms, checkpoints
and replays the batch) when the shuffle runs per node with ``combine`` and its node task
may run on an executor; otherwise ``lower_resident`` returns None and the caller lowers
the batch as before. The shape (the reducers, the placement) is looked up per batch:
the core places every batch's group (a cached plan under ``plan_cache``), so a node
joining or dying, other partitions or other reducers give a new placement or route
(ray_patch.resident.route_for), i.e. a rebuild, and the next batch uses it.

Exactly-once reducers (``CheckpointedReducer``) get the group's numbered calls
(``apply_partial``) and the batch goes into the driver's call log as a ``ResidentCall``:
the driver confirms each reducer from the executors' answers, and replays a reducer's
calls after a restore with ``ResidentBatch.replay_source`` (plain tasks, pieces sent by
the driver). Other actors get calls numbered per route and applied in order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray

import ray_patch.resident as resident_
import ray_patch.serialized as serialized_
from irfront.ir.nodes import InitActors, ReduceActors
from irfront.lowering.context import Lowered, LoweringContext, Results


@dataclass
class ResidentCall:
    """One batch of an exactly-once reducer group on the resident path (a call log
    entry): call ``seq`` of every reducer, fed by one executor call per source node."""

    actors: InitActors
    seq: int
    batch: resident_.ResidentBatch

    @property
    def refs(self) -> list:
        return self.batch.refs

    def replay(self, reducer: int) -> list:
        """Every source's piece for ``reducer`` sent again (the fallback path)."""
        return [self.batch.replay_source(s, reducer) for s in range(len(self.batch.nodes))]


def lower_resident(ctx: LoweringContext, red: ReduceActors, fn: Any, calls: list,
                   node_call: Any, handles: list, gid: int, depends_on: int | None
                   ) -> Lowered | None:
    """The batch on the resident path, or None (nothing submitted) where it does not
    apply: outside a stream driver, under vanilla, a stage that needs its own
    resources or retries, or reducer arguments holding futures."""
    log = ctx.results.call_log
    opts = ctx.options
    if log is None or not opts.grouped or not opts.enabled("resident"):
        return None
    answers = ctx.results.answers
    if answers and red.actors.checkpointed:
        return None  # its calls are logged and answered one by one through Ray
    if not resident_.residentable(fn, opts.task_retries):
        return None
    n = red.actors.n
    prefixes = [tuple(red.arg(i)) for i in range(n)]
    if any(isinstance(a, ray.ObjectRef) for p in prefixes for a in p):
        return None  # e.g. a pre-scheduling gate: the reducers would wait on it
    actors = red.actors
    if not serialized_.channel_safe(actors.actor_cls, handles, actors.checkpointed):
        return None  # async methods, or actors not made one-method-at-a-time here
    route = resident_.route_for(handles, actors.checkpointed, owner=actors)
    seq = ctx.results.next_seq(actors) if actors.checkpointed else route.next_seq
    batch, _ = resident_.submit_resident(
        fn, calls, node_call, route=route, seq=seq, method=red.method, prefixes=prefixes,
        num_returns=n, group_id=gid, group_dependency=depends_on,
        policy=opts.scheduler, plan_cache=opts.enabled("plan_cache"),
        epochs=ctx.results.epochs(actors) if actors.checkpointed else None,
        base=0 if actors.checkpointed else route.base(), keep=answers)
    if actors.checkpointed:
        log.append(ResidentCall(actors, seq, batch))
        return Lowered(list(batch.refs), gid, depends_on)
    route.unanswered[seq] = list(batch.refs)
    route.next_seq += 1
    calls = [resident_.ReducerAnswer(batch, i) for i in range(n)] if answers else None
    return Lowered(list(batch.refs), gid, depends_on, calls)



def settle(results: Results, actors: InitActors) -> None:
    """Before a call through Ray on one of ``actors``: waits until the resident batches
    sent to them were answered (``ray_patch.resident.wait_unanswered``), so a later call
    (``get_total``) runs after them, in program order, as under plain Ray."""
    r = results.get(actors)
    if r is not None and r.value is not None and not actors.checkpointed:
        resident_.wait_unanswered(r.value)
