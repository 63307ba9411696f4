"""Static inference (``irfront.inference.analyze``): plain Ray code read from its AST, never
run, reported as the 2018 IR's nodes. No Ray cluster: remote functions are only defined."""
from __future__ import annotations

import importlib.util
import inspect
import textwrap

import time as clock

import pytest
import ray

from irfront.inference.analyze import Analysis, analyze
from corpus.programs import prog_map_reduce


def line_of(source: str, text: str, nth: int = 1) -> int:
    """The 1-based line of the nth occurrence of ``text`` in ``source``."""
    hits = [i for i, line in enumerate(source.splitlines(), 1) if text in line]
    assert len(hits) >= nth, f"{text!r} not in the source"
    return hits[nth - 1]


def by_name(a: Analysis, kind: str, name: str):
    found = [n for n in a.nodes if n.kind == kind and n.name == name]
    assert len(found) == 1, f"{kind}[{name}] found {len(found)} times in\n{a}"
    return found[0]


# ---- the seed's streaming application, in plain Ray -----------------------------------------
STREAMING = textwrap.dedent('''
    import time

    import numpy as np
    import ray

    NUM_CPUS = 4


    @ray.remote
    def generate_dependencies(data_size):
        return np.random.rand(data_size)


    @ray.remote
    def map_step(start_time, batch):
        return batch


    @ray.remote
    def shuffle(num_reducers, batch):
        return [batch[i::num_reducers] for i in range(num_reducers)]


    @ray.remote
    class Reducer:
        def __init__(self, index):
            self.index = index

        def reduce(self, *partitions):
            pass

        def get_latencies(self):
            return []


    def main(num_nodes, num_maps, num_reducers, num_iterations, data_size):
        dependencies = generate_dependencies.remote(data_size)
        reducers = [Reducer.remote(i) for i in range(num_reducers)]
        for _ in range(num_iterations):
            start = time.time()
            map_ins = [dependencies for _ in range(num_nodes * NUM_CPUS)]
            for _ in range(num_maps):
                map_ins = [map_step.remote(start, batch) for batch in map_ins]
            shuffled = [shuffle.options(num_returns=num_reducers).remote(num_reducers, b)
                        for b in map_ins]
            for i, r in enumerate(reducers):
                r.reduce.remote(*[s[i] for s in shuffled])
            time.sleep(0.1)
        return ray.get([r.get_latencies.remote() for r in reducers])
''')


def test_seed_streaming_app_is_inferred_as_the_2018_ir():
    a = analyze(STREAMING)
    assert a.kinds() == ["Broadcast", "InitActors", "Map", "Map", "ReduceActors"]
    assert [n.name for n in a.nodes] == ["generate_dependencies", "Reducer", "map_step",
                                         "shuffle", "Reducer.reduce"]
    bcast, actors, step, shuf, reduce = a.nodes
    assert bcast.lineno == line_of(STREAMING, "generate_dependencies.remote(")
    assert bcast.details["count"] == "num_nodes * NUM_CPUS"
    assert actors.details["count"] == "num_reducers"
    # map_step: a chain of num_maps Maps over the broadcast, `start` as the per-task arg
    assert step.inputs == [bcast.index]
    assert step.details["repeat"] == "num_maps"
    assert step.details["args"] == ["start"]
    # shuffle: a Map with one return per reducer, over the last map_step
    assert shuf.inputs == [step.index]
    assert shuf.details["num_returns"] == "num_reducers" and shuf.details["shuffle"]
    # the reducers read the i-th return of every shuffle task
    assert reduce.inputs == [actors.index, shuf.index]
    assert reduce.details["shuffle"] is True
    loop = line_of(STREAMING, "for _ in range(num_iterations)")
    assert reduce.details["per_iteration"] == loop
    assert "per_iteration" not in bcast.details
    assert a.gave_up == []


def test_seed_streaming_app_evaluation_points():
    a = analyze(STREAMING)
    sleep = line_of(STREAMING, "time.sleep(0.1)")
    loop = line_of(STREAMING, "for _ in range(num_iterations)")
    assert (sleep, "time.sleep") in a.evaluation_points
    # the loop's body ends with the sleep: its end is the evaluation point, once
    assert (sleep, f"end of each iteration of the loop at line {loop}") in a.evaluation_points
    assert (line_of(STREAMING, "return ray.get("), "ray.get") in a.evaluation_points
    # the chain loop over num_maps is not an evaluation point: its Maps are one chain
    inner = line_of(STREAMING, "for _ in range(num_maps)")
    assert not any(f"line {inner}" in what for _, what in a.evaluation_points)
    assert len(a.evaluation_points) == 3


def test_report_reads_one_node_per_line_with_its_inputs():
    a = analyze(STREAMING)
    text = str(a)
    step = line_of(STREAMING, "map_step.remote(")
    assert f"Map[map_step]  line {step}  <- Broadcast[generate_dependencies]" in text
    assert "ReduceActors[Reducer.reduce]" in text and "<- InitActors[Reducer], Map[shuffle]" \
        in text
    assert "gave up: none" in text


INDEXED = textwrap.dedent('''
    import time
    import ray

    @ray.remote
    def generate_dependencies(data_size):
        return data_size

    @ray.remote
    def map_step(start_time, batch):
        return batch

    @ray.remote
    def shuffle(num_reducers, batch):
        return [batch] * num_reducers

    @ray.remote
    class Reducer:
        def __init__(self, index):
            pass
        def reduce(self, *partitions):
            pass

    reducers = []
    for i in range(num_reducers):
        reducers.append(Reducer.remote(i))
    dependencies = generate_dependencies.remote(data_size)
    for _ in range(iterations):
        start = time.time()
        batches = [map_step.remote(start, dependencies) for _ in range(num_partitions)]
        for _ in range(num_maps - 1):
            batches = [map_step.remote(start, b) for b in batches]
        shuffled = []
        for b in batches:
            shuffled.append(shuffle.remote(num_reducers, b))
        for i, r in enumerate(reducers):
            r.reduce.remote(*[s[i] for s in shuffled])
        time.sleep(0.1)
''')


def test_shuffle_indexed_per_reducer_and_loops_that_append():
    a = analyze(INDEXED)
    assert a.kinds() == ["InitActors", "Broadcast", "Map", "Map", "Map", "ReduceActors"]
    actors, bcast, first, chain, shuf, reduce = a.nodes
    assert actors.details["count"] == "num_reducers"
    assert bcast.details["count"] == "num_partitions"
    assert first.inputs == [bcast.index] and "repeat" not in first.details
    assert chain.inputs == [first.index] and chain.details["repeat"] == "num_maps - 1"
    # no num_returns in the code: s[i] per reducer makes it a shuffle into num_reducers
    assert shuf.name == "shuffle" and shuf.inputs == [chain.index]
    assert shuf.details["shuffle"] and shuf.details["indexed"]
    assert shuf.details["num_returns"] == "num_reducers"
    assert reduce.inputs == [actors.index, shuf.index]
    assert (line_of(INDEXED, "time.sleep"), "time.sleep") in a.evaluation_points


ACTORS = textwrap.dedent('''
    import ray

    @ray.remote(num_returns=4)
    def split(x):
        return x, x, x, x

    @ray.remote
    def step(x):
        return x

    @ray.remote
    class Worker:
        def add(self, x):
            pass
        def merge(self, tag, *xs):
            pass

    workers = [Worker.options(num_cpus=1).remote() for _ in range(4)]
    xs = [step.remote(i) for i in range(4)]
    for _ in range(3):
        xs = [step.remote(x) for x in xs]
    parts = [split.remote(x) for x in xs]
    added: list = [w.add.remote(x) for w, x in zip(workers, xs)]
    merged = [w.merge.remote("all", *xs) for w in workers]
    print(ray.get(added), ray.wait(merged))
    after = [step.remote(y) for y in added]
    for i in range(4):
        workers[i].merge.remote("part", *[p[i] for p in parts])
    for w in workers:
        each = w.merge.remote("each", *xs)
''')


def test_map_actors_reduce_actors_and_literal_chains():
    a = analyze(ACTORS)
    assert a.kinds() == ["InitActors", "Map", "Map", "Map", "MapActors", "ReduceActors",
                         "Map", "ReduceActors", "ReduceActors"]
    workers, first, chain, split, added, merged, after, by_index, each = a.nodes
    assert after.inputs == [added.index]
    # workers[i] under range(4), reading return i of every split task
    assert by_index.inputs == [workers.index, split.index] and by_index.details["shuffle"]
    # a loop over the actors is a group of calls, not a driver loop
    assert each.inputs == [workers.index, chain.index] and each.details["args"] == ["'each'"]
    assert first.details["over"] == "range(4)" and first.inputs == []
    assert chain.details["repeat"] == 3            # a literal stays an int
    assert split.details["num_returns"] == 4 and split.details["shuffle"]
    assert added.name == "Worker.add" and added.inputs == [workers.index, chain.index]
    assert merged.name == "Worker.merge" and merged.inputs == [workers.index, chain.index]
    assert merged.details["args"] == ["'all'"] and merged.details["shuffle"] is False
    line = line_of(ACTORS, "print(ray.get(")
    assert [(line, "ray.get"), (line, "ray.wait")] == a.evaluation_points
    assert a.gave_up == [] and a.notes == []


JOINS = textwrap.dedent('''
    import ray

    @ray.remote
    def split(k, x):
        return tuple(range(k))

    @ray.remote
    def gather(*parts):
        return sum(parts)

    @ray.remote
    def add(a, b):
        return a + b

    @ray.remote
    def load(i):
        return i

    maps = [split.options(num_returns=3).remote(3, x) for x in range(4)]
    reduced = [gather.remote(*[m[j] for m in maps]) for j in range(3)]
    refs = [load.remote(i) for i in range(8)]
    pairs = [add.remote(refs[i], refs[i + 1]) for i in range(0, 8, 2)]
    totals = [gather.remote(*refs) for _ in range(2)]
    mixed = [add.remote(refs[i], maps[i][0]) for i in range(3)]
    swapped = [add.remote(refs[i], 1, refs[i + 1]) for i in range(3)]
    print(ray.get(reduced), ray.get(pairs))
''')


def test_joins_are_inferred_as_the_runtime_matches_them():
    """A fan-out whose tasks read several objects of one stage, last: a Join (the
    matcher's pattern, inference/match.py), whatever picks them."""
    a = analyze(JOINS)
    assert a.kinds() == ["Map", "Join", "Map", "Join", "Join"]
    maps, reduced, loads, pairs, totals = a.nodes
    assert reduced.inputs == [maps.index] and \
        reduced.details["picks"] == "return i of every task"
    assert pairs.inputs == [loads.index] and pairs.details["picks"] == "2 objects"
    assert totals.inputs == [loads.index] and totals.details["picks"] == "every object"
    reasons = dict(a.gave_up)
    assert "more than one stage" in reasons[line_of(JOINS, "mixed =")]
    assert "not its last positional" in reasons[line_of(JOINS, "swapped =")]
    assert "each task joins 2 objects" in str(a)


def test_the_corpus_map_reduce_is_a_map_then_a_join():
    a = analyze(prog_map_reduce)
    assert a.kinds() == ["Map", "Join"] and a.gave_up == []


# ---- where it gives up -----------------------------------------------------------------------
BRANCHING = textwrap.dedent('''
    import ray

    @ray.remote
    def f(x):
        return x

    @ray.remote
    def g(x):
        return x

    x = f.remote(1)
    if ray.get(x) > 0:
        ys = [g.remote(x) for _ in range(4)]
    else:
        ys = [f.remote(x) for _ in range(4)]
    if ray.get(x) > 5:
        print("big")
''')


def test_gives_up_on_branching_on_results():
    a = analyze(BRANCHING)
    branch = line_of(BRANCHING, "if ray.get(x) > 0:")
    assert len(a.gave_up) == 1
    line, reason = a.gave_up[0]
    assert line == branch
    assert "data-dependent branch" in reason and f"fetched at line {branch}" in reason
    # nothing inside the branch is reported as inferred
    assert a.nodes == []
    # a branch on a result that submits no task is no reason to give up
    assert line_of(BRANCHING, "if ray.get(x) > 5:") not in [ln for ln, _ in a.gave_up]
    assert f"line {branch}  data-dependent branch" in str(a)


FAN_OUT = textwrap.dedent('''
    import ray

    @ray.remote
    def count(x):
        return 3

    @ray.remote
    def f(i):
        return i

    n = ray.get(count.remote(0))
    refs = [f.remote(i) for i in range(n)]
    more = []
    for i in range(2 * n):
        more.append(f.remote(i))
    fixed = [f.remote(i) for i in range(8)]
''')


def test_gives_up_on_a_fan_out_computed_from_a_result():
    a = analyze(FAN_OUT)
    fetched = line_of(FAN_OUT, "n = ray.get(")
    assert [ln for ln, _ in a.gave_up] == [line_of(FAN_OUT, "refs = ["),
                                           line_of(FAN_OUT, "for i in range(2 * n)")]
    assert all("dynamic fan-out" in r and f"fetched at line {fetched}" in r
               for _, r in a.gave_up)
    # the fixed fan-out after it is still inferred
    assert a.kinds() == ["Map"] and a.nodes[0].lineno == line_of(FAN_OUT, "fixed = [")


HIDDEN = textwrap.dedent('''
    import ray

    @ray.remote
    def f(a, b):
        return a

    @ray.remote
    def fib(n):
        return fib.remote(n - 1)

    xs = [f.remote(1, i) for i in range(4)]
    as_kw = [f.remote(1, b=x) for x in xs]
    in_list = [f.remote(1, [x]) for x in xs]
    first = [f.remote(x, 1) for x in xs]
    unknown = [obj.method.remote(x) for x in xs]
    assumed = [g.remote(x) for x in xs]
''')


def test_gives_up_on_refs_in_containers_keywords_order_and_unresolved_calls():
    a = analyze(HIDDEN)
    reasons = dict(a.gave_up)
    assert "keyword argument `b`" in reasons[line_of(HIDDEN, "as_kw =")]
    assert "inside a container (`[x]`)" in reasons[line_of(HIDDEN, "in_list =")]
    assert "not the last positional argument" in reasons[line_of(HIDDEN, "first =")]
    assert "cannot resolve `obj.method`" in reasons[line_of(HIDDEN, "unknown =")]
    nested = reasons[line_of(HIDDEN, "return fib.remote(")]
    assert "(recursive)" in nested and "plain Ray inside tasks" in nested
    assert len(a.gave_up) == 5
    # a name the code does not define, called with .remote(): assumed a remote function
    assert a.kinds() == ["Map", "Map"] and a.nodes[1].name == "g"
    assert a.nodes[1].inputs == [0]
    assert any("`g` is not defined" in t for _, t in a.notes)


def test_analysis_never_runs_the_code():
    a = analyze("import ray\nraise SystemExit(1)\n1 / 0\nray.get(ray.put(1))\n")
    assert a.evaluation_points == [(4, "ray.get")] and a.nodes == []


# ---- function and module objects -----------------------------------------------------------
@ray.remote
def produce(size):
    return size


@ray.remote
def transform(scale, x):
    return x * scale


@ray.remote
class Sink:
    def __init__(self, i):
        self.i = i

    def take(self, *xs):
        return len(xs)


def driver(n, k, rounds):                   # analysed, never called
    seed = produce.remote(10)
    sinks = [Sink.remote(i) for i in range(k)]
    for _ in range(rounds):
        xs = [transform.remote(2, seed) for _ in range(n)]
        [s.take.remote(*xs) for s in sinks]
        clock.sleep(0.1)                    # `time` under another name
    return ray.get(xs)


def test_a_function_object_resolves_its_globals_and_keeps_file_lines():
    a = analyze(driver)
    assert a.kinds() == ["Broadcast", "InitActors", "Map", "ReduceActors"]
    assert [n.name for n in a.nodes] == ["produce", "Sink", "transform", "Sink.take"]
    src, first = inspect.getsourcelines(driver)
    text = "".join(src)
    assert a.nodes[2].lineno == first - 1 + line_of(text, "transform.remote(")
    assert a.nodes[3].inputs == [1, 2] and a.nodes[3].details["shuffle"] is False
    assert a.notes == [] and a.gave_up == []     # every name resolved from the globals
    sleep = first - 1 + line_of(text, "clock.sleep(")
    assert (sleep, "time.sleep") in a.evaluation_points
    assert (sleep, f"end of each iteration of the loop at line "
                   f"{first - 1 + line_of(text, 'for _ in range(rounds)')}") \
        in a.evaluation_points
    assert a.source == "driver"


def test_a_nested_function_object_is_dedented():
    @ray.remote(num_returns=2)
    def pair(x):
        return x, x

    def inner(xs):
        return [pair.remote(x) for x in xs]

    a = analyze(inner)
    assert a.kinds() == ["Map"] and a.nodes[0].details["num_returns"] == 2
    assert a.nodes[0].details["over"] == "xs"


def test_a_module_object(tmp_path):
    path = tmp_path / "streaming_mod.py"
    path.write_text(STREAMING.replace("import numpy as np\n", ""))
    spec = importlib.util.spec_from_file_location("streaming_mod", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    a = analyze(mod)
    assert a.kinds() == analyze(STREAMING).kinds()
    assert a.nodes[2].lineno == line_of(path.read_text(), "map_step.remote(")


# ---- bad input ------------------------------------------------------------------------------
def test_bad_input_is_refused_clearly():
    with pytest.raises(TypeError, match=r"source text \(a str\), a function or a module; "
                                         r"got int"):
        analyze(42)
    with pytest.raises(TypeError, match="not a driver"):
        analyze(produce)
    with pytest.raises(ValueError, match="does not parse: .* at line 3"):
        analyze("x = 1\n\ndef broken(:\n    pass\n")
    scope: dict = {}
    exec("def made():\n    return 1\n", scope)
    with pytest.raises(ValueError, match="cannot read the source of made"):
        analyze(scope["made"])


def test_remote_made_by_wrapping_a_function_under_an_alias():
    src = ("import ray as r\n"
           "def plain(x):\n    return x\n"
           "wrapped = r.remote(plain)\n"
           "xs = [wrapped.options(num_returns=2).remote(i) for i in range(3)]\n")
    a = analyze(src)
    assert a.kinds() == ["Map"] and a.nodes[0].name == "plain"
    assert a.nodes[0].details["num_returns"] == 2
    assert a.gave_up == [] and a.notes == []
