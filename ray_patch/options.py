"""Ray's task and actor options as the group core sees them: one place that reads them.

- ``effective_options``: a remote function's (or actor class's) own ``@ray.remote``
  options with an ``.options(...)`` wrapper's on top (what Ray will apply).
- ``resource_demand``: the resources other than CPU one task (or actor) demands, as the
  core models them: ``num_gpus`` -> ``"GPU"``, each of ``resources``, ``memory`` ->
  ``"memory"``, ``accelerator_type="A100"`` -> ``"accelerator_type:A100"`` (Ray's own
  naming of that resource). The core places such a group only on nodes that have them.
- ``user_placement``: the option that keeps Ray's placement (the user's own
  ``scheduling_strategy``, ``placement_group`` or ``label_selector``): such a group is
  submitted unpinned, and its placement says so.
- ``resource_shape``: the options that decide where and how a task runs, normalised
  (``num_cpus`` absent = 1, ``resources={}`` = absent, ints = floats): two stages with
  different shapes are never fused.
- ``pinned_actor_options``: what an actor the core placed adds so that Ray starts it on
  that node.
"""
from __future__ import annotations

from typing import Any

# Options that keep Ray's own placement: the core does not model them.
UNPINNED_OPTIONS = ("scheduling_strategy", "placement_group", "label_selector")

# Options that shape where and how a task runs: fused stages must agree on them.
RESOURCE_OPTIONS = ("num_cpus", "num_gpus", "resources", "memory", "accelerator_type",
                    "runtime_env", "scheduling_strategy", "placement_group",
                    "label_selector")

_DEFAULTS = {"num_cpus": 1.0, "num_gpus": 0.0, "memory": 0.0, "resources": {}}


def effective_options(base: Any, options: dict[str, Any] | None) -> dict[str, Any]:
    """``base``'s own options (``_default_options``) with ``options`` on top."""
    own = base._default_options
    return {**own, **options} if options else dict(own)


def resource_demand(options: dict[str, Any]) -> dict[str, float]:
    """What one task with these (effective) options demands besides CPUs; {} for none."""
    out: dict[str, float] = {}
    for name, amount in (options.get("resources") or {}).items():
        if amount:
            out[str(name)] = float(amount)
    if options.get("num_gpus"):
        out["GPU"] = float(options["num_gpus"])
    if options.get("memory"):
        out["memory"] = float(options["memory"])
    if options.get("accelerator_type"):
        out[f"accelerator_type:{options['accelerator_type']}"] = 0.001  # as Ray asks
    return out


def executor_eligible(options: dict[str, Any], max_retries: int | None) -> bool:
    """Whether work with these (effective) options may run on a persistent per-node
    executor (``ray_patch.executors``, ``ray_patch.resident``): executors reserve
    nothing and run in the driver's environment, so a stage that asks for resources, a
    runtime_env, more than one CPU, or no retries runs as Ray tasks."""
    cpus = float(options.get("num_cpus", 1) or 0)
    return not resource_demand(options) and cpus <= 1 and \
        not options.get("runtime_env") and max_retries != 0


def user_placement(options: dict[str, Any]) -> str | None:
    """The option that keeps Ray's own placement (see UNPINNED_OPTIONS), or None."""
    for k in UNPINNED_OPTIONS:
        if options.get(k) is not None:
            return k
    return None


def _normal(key: str, value: Any) -> Any:
    if value is None:
        value = _DEFAULTS.get(key)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _normal("", v)) for k, v in value.items() if v))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return repr(value)


def resource_shape(options: dict[str, Any]) -> tuple:
    """The RESOURCE_OPTIONS of effective ``options``, normalised for comparison."""
    return tuple(_normal(k, options.get(k)) for k in RESOURCE_OPTIONS)


def pinned_actor_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options an actor placed by the core (soft node affinity) adds so that Ray starts
    it on that node, given its effective ``options``:

    - no ``num_cpus`` of its own: ``num_cpus=0``. Ray's default asks for one CPU to
      *place* an actor (none while it lives), so a node whose CPUs are busy with tasks
      made Ray start the actor elsewhere despite the affinity (reducers 2/0/2/0 over four
      1-CPU hosts where the core chose 1/1/1/1, docs/NETCLUSTER.md). The core already
      balanced the actors; they hold no CPU once started in either case.
    - then, if the actor asks for nothing at all, ``memory=1`` (one byte): Ray puts a
      request of no resources on a random node whatever its soft affinity says.
    """
    extra: dict[str, Any] = {}
    if options.get("num_cpus") is None:
        extra["num_cpus"] = 0
    merged = {**options, **extra}
    if not merged.get("num_cpus") and not resource_demand(merged):
        extra["memory"] = 1
    return extra
