"""How IR nodes become Ray tasks: the scheduler, the optimisation switches, task retries.

    irfront.init(scheduler="locality")            # or "pack", "spread", "vanilla"
    with irfront.lowering_options(fuse=False): ...

``init``/``set_options`` set the process's options; ``lowering_options`` overrides them
for the calling thread only, inside its block (a stream in another thread, or irfront's
own calls under ``irfront.infer``, keep theirs).
Scheduler names are ``vanilla`` (plain ``.remote()``: Ray places each task) and the C++
core's task policies (``ray_patch.submit.POLICIES`` less ``actors``, which places actor
groups). Each optimisation is a switch: ``None`` means on under ``locality`` (except
``preschedule``, off unless asked), off otherwise; ``True``/``False`` force it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
from dataclasses import dataclass
from typing import Any, Iterator

from ray_patch.submit import POLICIES

VANILLA = "vanilla"
SCHEDULERS = (VANILLA,) + tuple(p for p in POLICIES if p != "actors")

# The optimisation switches (IR passes and driver features) and their defaults.
SWITCHES = ("fuse", "shuffle_by_node", "batch_tasks", "preschedule", "executors",
            "plan_cache", "combine", "resident")
DEFAULT_ON = ("fuse", "shuffle_by_node", "batch_tasks", "executors",
              "plan_cache", "combine", "resident")  # under locality
DEFAULT_GROUP_RETRIES = 3  # Ray's own default, made explicit for group tasks


@dataclass(frozen=True)
class LoweringOptions:
    """How IR nodes become Ray tasks. Add new optimisation switches here."""

    scheduler: str = "locality"
    # Policy for actor groups; None: "actors" (balanced, with their data), or "pack"
    # under the pack scheduler.
    actor_policy: str | None = None
    name_actors: bool = True  # named actors "Cls[g7:0]" (visible in the state API)
    fuse: bool | None = None  # a chain of one-to-one Maps runs as one task per partition
    shuffle_by_node: bool | None = None  # a shuffle into actors writes one object per node
    # A group's tasks placed on one node run as one Ray task per CPU slot there; a
    # grouped shuffle runs as one task per node writing one object per destination node.
    batch_tasks: bool | None = None
    preschedule: bool | None = None  # stream driver: submit the next batch ahead (gated)
    # With batch_tasks: a node's share of a grouped shuffle runs as a call to a
    # persistent per-node executor actor (ray_patch.executors), not as a task. On by
    # default under locality: no task lease per micro-batch (docs/BENCHMARKS.md).
    executors: bool | None = None
    # A group of the same shape and input locations as an earlier one (the same stage
    # of the next micro-batch) reuses its placement instead of calling the core's
    # policy (ray_patch.plans: expires on node changes, failures, after 100 uses or 5 s).
    plan_cache: bool | None = None
    # With batch_tasks: a grouped shuffle into a ReduceActors that declares
    # ``combine=`` merges each node's pieces per actor before they move (one partial
    # per source node reaches each actor instead of one per partition).
    combine: bool | None = None
    # With batch_tasks and combine, inside a stream driver: each node's resident
    # executor sends its merged partials straight to the reducers over channels, and
    # gets the batches of a shape it has seen through its feed (no Ray call per batch;
    # lowering/resident.py, ray_patch/resident.py). On by default under locality.
    resident: bool | None = None
    # Ray task retries of lowered tasks (a crashed worker; an output lost with its node is
    # rebuilt from lineage). None: 3 for groups; under vanilla nothing is passed (plain
    # Ray's default applies) unless set here.
    max_retries: int | None = None

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {self.scheduler!r}; pass one of "
                             f"{', '.join(SCHEDULERS)}")
        if self.actor_policy is not None and self.actor_policy not in POLICIES:
            raise ValueError(f"unknown actor_policy {self.actor_policy!r}; pass one of "
                             f"{', '.join(POLICIES)}")
        r = self.max_retries
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < -1):
            raise ValueError(f"max_retries must be None or an int >= -1 (-1: forever); "
                             f"got {r!r}")
        if self.scheduler == VANILLA and self.shuffle_by_node:
            raise ValueError("shuffle_by_node needs a grouped scheduler (it writes one "
                             "object per actor node, and vanilla Ray does not say where "
                             "actors are); pass scheduler='locality' or drop the switch")
        if self.scheduler == VANILLA and self.executors:
            raise ValueError("executors needs a grouped scheduler (each node's work goes to "
                             "that node's executor); pass scheduler='locality' or drop the "
                             "switch")
        if self.scheduler == VANILLA and self.plan_cache:
            raise ValueError("plan_cache needs a grouped scheduler (it reuses the core's "
                             "placements); pass scheduler='locality' or drop the switch")
        if self.scheduler == VANILLA and self.batch_tasks:
            raise ValueError("batch_tasks needs a grouped scheduler (tasks are batched by "
                             "the node the core placed them on); pass scheduler='locality' "
                             "or drop the switch")

    @property
    def grouped(self) -> bool:
        """Whether tasks go through ray_patch (False: plain .remote())."""
        return self.scheduler != VANILLA

    @property
    def task_retries(self) -> int | None:
        """max_retries to pass to a lowered task: None means pass nothing."""
        if self.max_retries is not None:
            return self.max_retries
        return DEFAULT_GROUP_RETRIES if self.grouped else None

    @property
    def actors_policy(self) -> str:
        if self.actor_policy is not None:
            return self.actor_policy
        return "pack" if self.scheduler == "pack" else "actors"

    def enabled(self, switch: str) -> bool:
        """Whether an optimisation is on: its field, or its default under the scheduler."""
        value = getattr(self, switch)
        if value is None:
            return self.scheduler == "locality" and switch in DEFAULT_ON
        return bool(value)

    def describe(self) -> str:
        """``"fuse,shuffle_by_node"``: the switches on ("-" if none)."""
        return ",".join(s for s in SWITCHES if self.enabled(s)) or "-"

    def replace(self, **changes: Any) -> "LoweringOptions":
        return dataclasses.replace(self, **changes)


_FIELDS = {"fuse": "fuse", "shuffle": "shuffle_by_node", "batch": "batch_tasks",
           "ahead": "preschedule", "exec": "executors", "plan": "plan_cache",
           "combine": "combine", "resident": "resident"}


def options_for(name: str) -> LoweringOptions:
    """Series names -> options: ``vanilla``, ``pack``, ``locality`` with suffixes
    ``-nofuse``, ``-noshuffle``, ``-nobatch``, ``-noahead``, ``-noexec``, ``-noplan``,
    ``-nocombine``, ``-noresident`` (switch off), ``+fuse``, ``+shuffle``, ``+batch``,
    ``+ahead``, ``+exec``, ``+plan``, ``+combine``, ``+resident`` (switch on), or
    ``-plain`` (all off). Every switch is resolved."""
    parts = re.split(r"(?=[-+])", name.strip())
    opts = LoweringOptions(scheduler=parts[0])
    for p in parts[1:]:
        sign, what = p[0], p[1:]
        if sign == "-" and what == "plain":
            opts = opts.replace(**{f: False for f in SWITCHES})
            continue
        value = sign == "+"
        if sign == "-" and what.startswith("no"):
            what = what[2:]
        elif sign == "-":
            what = None
        if what not in _FIELDS:
            raise ValueError(f"unknown scheduler variant {name!r}: {p!r}; use e.g. "
                             "locality-nofuse, locality-noshuffle, locality-nobatch, "
                             "locality-noahead, locality-noexec, locality-noplan, "
                             "locality-nocombine, locality-plain, vanilla+fuse")
        opts = opts.replace(**{_FIELDS[what]: value})
    return opts.replace(**{s: opts.enabled(s) for s in SWITCHES})


_options = LoweringOptions()
_local = threading.local()  # .stack: this thread's lowering_options blocks, innermost last


def get_options() -> LoweringOptions:
    """The calling thread's options: its innermost ``lowering_options`` block's, or the
    process's."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else _options


def set_options(options: LoweringOptions) -> None:
    """Sets the process's options (every thread outside a ``lowering_options`` block)."""
    global _options
    if not isinstance(options, LoweringOptions):
        raise TypeError(f"options must be LoweringOptions; got {type(options).__name__}")
    _options = options


@contextlib.contextmanager
def lowering_options(options: LoweringOptions | None = None,
                     **changes: Any) -> Iterator[LoweringOptions]:
    """``with lowering_options(scheduler="pack"): ...`` evaluates this thread's nodes
    under other options inside the block; ``lowering_options(options_for(
    "locality-nobatch"))`` under a whole options value (with ``changes`` applied on
    top). Other threads are not affected."""
    opts = (options or get_options()).replace(**changes)
    if not isinstance(opts, LoweringOptions):
        raise TypeError(f"options must be LoweringOptions; got {type(opts).__name__}")
    stack = _local.__dict__.setdefault("stack", [])
    stack.append(opts)
    try:
        yield opts
    finally:
        stack.pop()
