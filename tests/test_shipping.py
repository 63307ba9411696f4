"""ray_patch.shipping: arguments packed into one plus top-level refs, and functions
pickled once, give the call what the unpacked call would have got (no cluster needed)."""
from __future__ import annotations

import pickle

import ray
from hypothesis import given, settings, strategies as st

from ray_patch.shipping import Inline, pack, packed_invoke, unpack

REFS = [ray.ObjectRef(bytes([i]) * 28) for i in range(3)]

_values = st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.text(max_size=4),
                    st.tuples(st.integers(), st.sampled_from(REFS)))  # a nested ref
_args = st.lists(st.one_of(_values, st.sampled_from(REFS)), max_size=12)


@settings(max_examples=200, deadline=None)
@given(_args)
def test_pack_round_trip(args):
    spec, refs = pack(args)
    top = [a for a in args if isinstance(a, ray.ObjectRef)]
    assert len(refs) == len(set(top)), "each distinct top-level ref once"
    assert all(isinstance(r, ray.ObjectRef) for r in refs)
    # Only top-level refs leave the spec: refs nested in containers travel in it.
    assert not any(isinstance(v, ray.ObjectRef) for v in spec[0])
    # What the worker sees once Ray resolved the top-level refs into their values.
    resolved = {r: f"value of {r.hex()[:4]}" for r in REFS}
    got = unpack(pickle.loads(pickle.dumps(spec)), tuple(resolved[r] for r in refs))
    want = [resolved[a] if isinstance(a, ray.ObjectRef) else a for a in args]
    assert list(got) == want


def test_inline_unpickles_to_the_function():
    def twice(x):
        return 2 * x

    f = Inline(twice)
    assert f(4) == 8
    g = pickle.loads(pickle.dumps(f))
    assert not isinstance(g, Inline) and g(5) == 10
    assert pickle.dumps(f) == pickle.dumps(f), "the bytes are made once"


def test_packed_invoke_runs_on_the_actor_with_the_unpacked_arguments():
    class Actor:
        def add(self, *xs):
            return sum(xs)

    def invoke(self, method, *args):
        return getattr(self, method)(*args)

    args = ("add", 1, REFS[0], 2, REFS[0], REFS[1])
    spec, refs = pack(args)
    shim = pickle.loads(pickle.dumps(packed_invoke(invoke)))
    assert shim(Actor(), spec, 10, 20) == 1 + 10 + 2 + 10 + 20
    assert packed_invoke(invoke) is packed_invoke(invoke), "made once per function"
