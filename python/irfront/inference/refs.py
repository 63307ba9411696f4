"""What a recorded call hands back: a ``DeferredRef`` (a task's or method's result) or a
``DeferredActor`` (an actor being created), standing for the real Ray object until the
recorded graph is evaluated.

A deferred value is *bound* when its call has been matched (to an IR node and a position
in that node's outputs, or to a plain Ray call); it *resolves* to the real ``ObjectRef``
or ``ActorHandle`` on first use. Using one in any way Ray would (reading an attribute such
as ``.hex()``, pickling it inside another object, awaiting it, ``ray.get``) first
evaluates what is recorded: that is an evaluation point. Two things differ from a real
reference while the value is still deferred: ``isinstance(x, ray.ObjectRef)`` is False
(``is_deferred(x)`` tells), and equality and hashing are by identity.
"""
from __future__ import annotations

import operator
from typing import Any, Callable

import ray

from irfront.inference.quiet import quiet

# Pickled in place of a deferred value: itemgetter(0)((real,)) is the real object, and
# the real object is pickled by Ray's own reducer (a nested reference stays tracked).
_FIRST = operator.itemgetter(0)


class DeferredRef:
    """A recorded call's result. ``_resolve()`` gives the real ``ray.ObjectRef``."""

    __slots__ = ("_session", "_thunk", "_ref", "__weakref__")

    def __init__(self, session: Any):
        self._session = session
        self._thunk: Callable[[], ray.ObjectRef] | None = None
        self._ref: ray.ObjectRef | None = None

    def _bind(self, thunk: Callable[[], ray.ObjectRef]) -> None:
        self._thunk = thunk

    @property
    def _bound(self) -> bool:
        return self._thunk is not None or self._ref is not None

    def _resolve(self) -> ray.ObjectRef:
        if self._ref is None:
            if self._thunk is None:
                self._session.flush("a deferred reference's use")
            with quiet():  # irfront's own submissions are not the user's calls
                self._ref = self._thunk()  # the thunk stays: it names where it came from
        return self._ref

    def _answers(self) -> list | None:
        """For a reducer call answered on the resident path and not made real yet: its
        batch's executor answers (what tells it was applied); else None."""
        answer = getattr(self._thunk, "waitables", None)
        return answer() if self._ref is None and answer is not None else None

    def _waitables(self) -> list:
        """What a stream driver waits on for this result: a reducer call of the
        resident path is answered by its batch's executors (no Ray call made for it);
        anything else is its real reference."""
        if self._ref is None and self._thunk is None:
            self._session.flush("a deferred reference's use")
        got = self._answers()
        return got if got is not None else [self._resolve()]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._resolve(), name)

    def __reduce__(self) -> tuple:
        return _FIRST, ((self._resolve(),),)

    def __await__(self):
        return self._resolve().__await__()

    def __repr__(self) -> str:
        if self._ref is not None:
            return f"DeferredRef({self._ref.hex()})"
        return "DeferredRef(bound)" if self._thunk is not None else "DeferredRef(recorded)"


class DeferredActor:
    """An actor whose creation was recorded. Its methods' ``.remote()`` calls are recorded
    too; anything else resolves it to the real ``ActorHandle`` (creating the actor)."""

    __slots__ = ("_session", "_cls", "_methods", "_node", "_index", "_handle", "__weakref__")

    def __init__(self, session: Any, cls: Any, methods: frozenset[str]):
        self._session = session
        self._cls = cls
        self._methods = methods
        self._node: Any = None  # the InitActors node, once matched
        self._index = 0
        self._handle: Any = None

    def _bind(self, node: Any, index: int) -> None:
        self._node, self._index = node, index

    def _resolve(self) -> Any:
        if self._handle is None:
            if self._node is None:
                self._session.flush("a deferred actor's use")
            with quiet():  # creating the group is irfront's call, not the user's
                self._handle = self._node.eval()[self._index]
        return self._handle

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            # Ray's own actor methods (__ray_terminate__, __ray_ready__, __ray_call__)
            # are the real handle's; other dunders (pickle's probes) are not ours.
            if name.startswith("__ray_") and name != "__ray_metadata__" and hasattr(
                    self._cls.__ray_metadata__.modified_class, name):
                return getattr(self._resolve(), name)
            raise AttributeError(name)
        if name in self._methods:
            return DeferredMethod(self, name)
        return getattr(self._resolve(), name)

    def __reduce__(self) -> tuple:
        return _FIRST, ((self._resolve(),),)

    def __repr__(self) -> str:
        state = "created" if self._handle is not None else (
            "bound" if self._node is not None else "recorded")
        return f"DeferredActor({self._cls.__ray_metadata__.class_name}, {state})"


class DeferredMethod:
    """``actor.method`` of a deferred actor: ``.remote()`` and ``.options().remote()``."""

    __slots__ = ("actor", "name", "opts")

    def __init__(self, actor: DeferredActor, name: str, opts: dict | None = None):
        self.actor, self.name, self.opts = actor, name, opts or {}

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self.actor._session.method(self.actor, self.name, args, kwargs, self.opts)

    def options(self, **options: Any) -> "DeferredMethod":
        return DeferredMethod(self.actor, self.name, {**self.opts, **options})


def is_deferred(x: Any) -> bool:
    """Whether ``x`` is a deferred reference or actor (recorded under ``irfront.infer``)."""
    return type(x) in (DeferredRef, DeferredActor)


def _holds(x: Any, leaf: Callable[[Any], bool], depth: int) -> bool:
    """Whether ``x`` is a ``leaf`` or holds one, ``depth`` levels into lists, tuples,
    sets and dicts."""
    if leaf(x):
        return True
    t = type(x)
    if depth and t in (list, tuple, set, frozenset):
        return any(_holds(v, leaf, depth - 1) for v in x)
    if depth and t is dict:
        return any(_holds(v, leaf, depth - 1) for v in x.values())
    return False


def has_deferred(x: Any, depth: int = 2) -> bool:
    """Whether ``x`` is or holds a deferred value (``depth`` levels into containers)."""
    return _holds(x, is_deferred, depth)


def realise(x: Any, depth: int = 8, keep_answers: bool = False) -> Any:
    """``x`` with every deferred value resolved to its real Ray object, looking ``depth``
    levels into lists, tuples, sets and dicts (deeper ones resolve when pickled).
    ``keep_answers``: a reducer call answered on the resident path stays deferred (a
    stream driver waits on its batch; any other use makes it real then)."""
    t = type(x)
    if t is DeferredRef and keep_answers and x._answers() is not None:
        return x
    if t is DeferredRef or t is DeferredActor:
        return x._resolve()
    if depth and t in (list, tuple, set, frozenset) and has_deferred(x, depth):
        return t(realise(v, depth - 1, keep_answers) for v in x)
    if depth and t is dict and has_deferred(x, depth):
        return {k: realise(v, depth - 1, keep_answers) for k, v in x.items()}
    return x


def _is_ref(x: Any) -> bool:
    return is_deferred(x) or isinstance(x, ray.ObjectRef)


def holds_ref(x: Any, depth: int = 2) -> bool:
    """Whether ``x`` is or holds (``depth`` levels into containers) a reference, deferred
    or real: such an argument is not a plain value."""
    return _holds(x, _is_ref, depth)
