"""Joins: the IR's ``Join`` node (tasks that read several objects of one stage) and its
recognition from plain Ray code under ``irfront.infer`` (``add.remote(a, b)``,
``f.remote(*refs)``), checked against plain Ray on the same input."""
from __future__ import annotations

import numpy as np
import pytest
import ray
from hypothesis import HealthCheck, given, settings, strategies as st

import irfront
from irfront import IRError, Join, Map, Objects
from corpus.programs import CORPUS, apply_map, apply_reduce


@ray.remote
def load(i):
    return np.arange(16, dtype=np.int64) + i


@ray.remote
def add(a, b):
    return a + b


@ray.remote
def total(scale, *xs):
    return scale * int(sum(int(x.sum()) for x in xs))


def tree_reduce(n):
    refs = [load.remote(i) for i in range(n)]
    while len(refs) > 1:
        refs = [add.remote(refs[i], refs[i + 1]) for i in range(0, len(refs), 2)]
    return int(ray.get(refs[0]).sum())


def map_reduce(n, k):
    """The corpus's map-reduce (Ray's example) over its first ``n`` texts."""
    maps = [apply_map.options(num_returns=k).remote(t, k) for t in CORPUS[:n]]
    reduced = [apply_reduce.remote(*[m[j] for m in maps]) for j in range(k)]
    return ray.get(reduced)


# ---- the IR node ---------------------------------------------------------------------------
def test_join_checks_its_picks_and_its_task(cluster):
    xs = Map(load, Objects(list(range(4))))
    with pytest.raises(IRError, match=r"picks\[1\] = \(3, 4\).*0 to 3"):
        Join(add, xs, [(0, 1), (3, 4)])
    with pytest.raises(IRError, match="3 objects it picks"):
        Join(add, xs, [(0, 1, 2)])
    with pytest.raises(IRError, match="non-empty list"):
        Join(add, xs, [])
    with pytest.raises(IRError, match="one per task"):
        Join(total, xs, [(0, 1)], args=[(1,), (2,)])


def test_join_evaluates_as_plain_ray_and_is_one_group(cluster):
    xs = Map(load, Objects(list(range(8))))
    level = xs
    while len(level) > 1:
        level = Join(add, level, [(2 * i, 2 * i + 1) for i in range(len(level) // 2)])
    assert int(level.get()[0].sum()) == tree_reduce(8)
    both = Join(total, xs, [tuple(range(8)), (7, 0)], args=[(1,), (10,)])
    assert both.get() == ray.get([total.remote(1, *[load.remote(i) for i in range(8)]),
                                  total.remote(10, load.remote(7), load.remote(0))])
    assert both.group_id is not None and both.placement() is not None


# ---- recognised under irfront.infer -----------------------------------------------------------
def test_a_tree_reduction_and_a_reduce_into_tasks_are_joins(cluster):
    f = irfront.infer(tree_reduce)
    assert f(8) == tree_reduce(8)
    assert f.session.kinds().count("Join") == 3, f.explain()
    assert f.session.tasks_grouped == f.session.tasks, f.explain()
    g = irfront.infer(map_reduce)
    assert g(6, 3) == map_reduce(6, 3)
    assert g.session.kinds() == ["Map", "Join"], g.explain()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 6), picks=st.lists(st.lists(st.integers(0, 5), min_size=1,
                                                     max_size=4), min_size=1, max_size=4),
       outside=st.booleans())
def test_random_joins_match_plain_ray(cluster, n, picks, outside):
    """Joins over one stage picking objects in any order, repeats included; over refs
    made in the block or before it (differential against plain Ray)."""
    picks = [[j % n for j in p] for p in picks]

    def prog(pre):
        xs = pre if pre is not None else [load.remote(i) for i in range(n)]
        return ray.get([total.remote(t + 1, *[xs[j] for j in p])
                        for t, p in enumerate(picks)])

    pre = [load.remote(i) for i in range(n)] if outside else None
    want = prog(pre)
    f = irfront.infer(prog)
    assert f(pre) == want
    if any(len(p) > 1 for p in picks):  # one object: a Map
        assert "Join" in f.session.kinds(), f.explain()
