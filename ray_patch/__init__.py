"""ray_patch: group-aware task submission on stock Ray (the draft's "slightly extended
Ray API"), enforced with Ray's public scheduling strategies.

    refs = [f.remote(x) for x in xs]                                   # plain Ray
    refs = ray_patch.group_map(f, xs, group_dependency=prev.group_id)  # one group
    ray_patch.free_groups([refs.group_id])

A group's tasks are placed together by the C++ core (ray_patch.scheduler.GroupScheduler),
pinned with NodeAffinitySchedulingStrategy(node, soft=True) and named
``f"{fn}[g{group_id}]"`` so Ray's dashboard, state API and timeline show the groups.
"""
from ray_patch.ids import next_group_id
from ray_patch.runtime import configure, current_runtime, get_runtime, reset
from ray_patch.validate import GroupError, task_name
from ray_patch.submit import (
    GroupActors,
    GroupedFunction,
    GroupRefs,
    actor_nodes,
    call_actors,
    core_group_count,
    defer_free,
    free_groups,
    group_actors,
    group_count,
    group_map,
    group_starmap,
    grouped,
    new_group_id,
    node_failed,
    placement,
    plan_stats,
    refresh_nodes,
    resend_call,
    submit_group,
    submit_per_node,
    update_actor_node,
)

__all__ = [
    "GroupActors", "GroupError", "GroupRefs", "GroupedFunction", "actor_nodes", "call_actors", "core_group_count",
    "configure", "current_runtime", "defer_free", "next_group_id", "task_name", "free_groups", "get_runtime", "group_actors", "group_count", "group_map",
    "group_starmap", "grouped", "new_group_id", "node_failed", "placement", "plan_stats", "refresh_nodes", "resend_call", "reset",
    "submit_group", "submit_per_node", "update_actor_node",
]
