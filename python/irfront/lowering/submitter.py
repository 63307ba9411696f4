"""How lowered tasks reach Ray: one interface, two implementations, chosen once per
evaluation from the options (``submitter_for``), so lowering functions never branch on
the scheduler.

- ``VanillaSubmitter``: plain ``.remote()``; Ray places every task on its own.
- ``GroupedSubmitter``: ``ray_patch`` groups, placed whole by the C++ core and pinned.
"""
from __future__ import annotations

import abc
from typing import Any, Sequence

import ray
from ray.actor import ActorClass
from ray.remote_function import RemoteFunction

import ray_patch
from irfront.lowering.options import LoweringOptions
from ray_patch.options import user_placement
from ray_patch.ray_private import unwrap_task


class Submitter(abc.ABC):
    """Submits a node's tasks, actors and actor calls as one group."""

    def __init__(self, options: LoweringOptions):
        self.options = options
        self.scheduler = options.scheduler

    def new_group(self) -> int:
        return ray_patch.next_group_id()

    @abc.abstractmethod
    def tasks(self, fn: RemoteFunction, calls: Sequence[tuple], *, group_id: int,
              depends_on: int | None, num_returns: int = 1, name: str | None = None
              ) -> list:
        """One task per argument tuple; one ref (or a list of num_returns) per task.
        ``fn``: a remote function or its ``f.options(...)`` wrapper (options kept)."""

    @abc.abstractmethod
    def actors(self, cls: ActorClass, args: Sequence[tuple], *, group_id: int,
               depends_on: int | None, inputs: Sequence[Sequence[ray.ObjectRef]] | None,
               actor_options: dict[str, Any], names: Sequence[str] | None = None) -> list:
        """One actor per argument tuple; ``inputs[i]``: the objects actor i will read;
        ``names``: one name per actor, used as given (detached actors of a durable
        stream)."""

    @abc.abstractmethod
    def actor_calls(self, handles: Sequence[Any], method: str, calls: Sequence[tuple], *,
                    group_id: int, depends_on: int | None, invoke: Any = None,
                    name: str | None = None) -> list:
        """``method`` on each actor (or ``handle.__ray_call__.remote(invoke, *call)``)."""

    def actor_nodes(self, handles: Sequence[Any]) -> list[int] | None:
        """The node of each actor, when this submitter knows them."""
        return None

    def node_tasks(self, fn: RemoteFunction, calls: Sequence[tuple], node_call: Any, *,
                   group_id: int, depends_on: int | None, num_returns: int,
                   name: str | None = None) -> dict[int, tuple[list[int], Any]] | None:
        """The calls placed as one group, then one task per node (``node_call(indices)``
        its arguments); None when this submitter does not place tasks."""
        return None

    def placement(self, group_id: int) -> dict[str, int] | None:
        """Ray node id -> tasks of the group there, when this submitter knows it."""
        return None

    def defer_free(self, group_ids: Sequence[int]) -> None:
        """Queues groups for freeing (safe from finalizers)."""

    def free(self, group_ids: Sequence[int]) -> None:
        """Frees groups now (and applies queued frees)."""

    def after_failure(self) -> None:
        """A task or actor failed: a node may have died."""


def _call(fn: Any, invoke: Any, call: tuple) -> Any:
    return fn.remote(invoke, *call) if invoke is not None else fn.remote(*call)


class VanillaSubmitter(Submitter):
    """Plain Ray: ``f.remote(...)`` per task, Ray's own placement."""

    def _plain(self, fn: Any, **options: Any) -> Any:
        if self.options.max_retries is not None:
            options["max_retries"] = self.options.max_retries
        return fn.options(**options) if options else fn

    def tasks(self, fn, calls, *, group_id, depends_on, num_returns=1, name=None):
        fn, own = unwrap_task(fn)
        opts = dict(own)
        if num_returns > 1 or "num_returns" in opts:
            opts["num_returns"] = num_returns
        f = self._plain(fn, **opts)
        return [f.remote(*c) for c in calls]

    def actors(self, cls, args, *, group_id, depends_on, inputs, actor_options,
               names=None):
        if names is not None:
            return [cls.options(**actor_options, name=n).remote(*a)
                    for n, a in zip(names, args)]
        c = cls.options(**actor_options) if actor_options else cls
        return [c.remote(*a) for a in args]

    def actor_calls(self, handles, method, calls, *, group_id, depends_on, invoke=None,
                    name=None):
        out = []
        for h, c in zip(handles, calls):
            m = h.__ray_call__ if invoke is not None else getattr(h, method)
            out.append(_call(m, invoke, c))
        return out


class GroupedSubmitter(Submitter):
    """ray_patch groups: placed by the C++ core with the options' policy, pinned."""

    def _retries(self, fn: RemoteFunction) -> int | None:
        """The options' max_retries, else the function's own or its ``f.options(...)``
        wrapper's (None: keep it), else 3 (Ray's default, explicit for groups)."""
        fn, own = unwrap_task(fn)
        if self.options.max_retries is None and {**fn._default_options, **own}.get(
                "max_retries") is not None:
            return None
        return self.options.task_retries

    def tasks(self, fn, calls, *, group_id, depends_on, num_returns=1, name=None):
        explicit = num_returns > 1 or "num_returns" in unwrap_task(fn)[1]
        return list(ray_patch.submit_group(
            fn, calls, group_id=group_id, group_dependency=depends_on,
            policy=self.scheduler, num_returns=num_returns if explicit else None,
            name=name, max_retries=self._retries(fn),
            batch=self.options.enabled("batch_tasks"),
            plan_cache=self.options.enabled("plan_cache")))

    def actors(self, cls, args, *, group_id, depends_on, inputs, actor_options,
               names=None):
        return list(ray_patch.group_actors(
            cls, len(args), args, group_id=group_id, group_dependency=depends_on,
            inputs=inputs, policy=self.options.actors_policy,
            name_actors=self.options.name_actors, actor_options=actor_options,
            names=names))

    def actor_calls(self, handles, method, calls, *, group_id, depends_on, invoke=None,
                    name=None):
        return list(ray_patch.call_actors(handles, method, calls, group_id=group_id,
                                          group_dependency=depends_on, invoke=invoke,
                                          name=name))

    def actor_nodes(self, handles):
        return ray_patch.actor_nodes(handles)

    def node_tasks(self, fn, calls, node_call, *, group_id, depends_on, num_returns,
                   name=None):
        if user_placement(fn._default_options) is not None:
            return None  # the user's own strategy: Ray places the tasks, not per node
        out, _ = ray_patch.submit_per_node(
            fn, calls, node_call, num_returns=num_returns, group_id=group_id,
            group_dependency=depends_on, policy=self.scheduler, name=name,
            max_retries=self._retries(fn), executors=self.options.enabled("executors"),
            plan_cache=self.options.enabled("plan_cache"))
        return out

    def placement(self, group_id):
        return ray_patch.placement(group_id)

    def defer_free(self, group_ids):
        ray_patch.defer_free(group_ids)

    def free(self, group_ids):
        ray_patch.free_groups(group_ids)

    def after_failure(self):
        if ray_patch.current_runtime() is not None:
            ray_patch.refresh_nodes()


_CACHE: dict[LoweringOptions, Submitter] = {}


def submitter_for(options: LoweringOptions) -> Submitter:
    """The submitter of ``options`` (one object per distinct options value)."""
    sub = _CACHE.get(options)
    if sub is None:
        cls = GroupedSubmitter if options.grouped else VanillaSubmitter
        sub = _CACHE[options] = cls(options)
    return sub
