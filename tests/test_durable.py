"""Durable exactly-once state: reducer checkpoints in a directory (DirectoryStore),
reducers as named detached actors, and a driver that resumes a stream whose driver was
SIGKILLed mid-stream. The final reducer totals must equal plain Python's sums over the
whole source: nothing lost, nothing counted twice."""
from __future__ import annotations

import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import ray
from hypothesis import given
from hypothesis import strategies as hst

import durable_driver as dd
from conftest import ROOT, TESTS, needs_core
from irfront import SumReducerBase
from irfront.drivers import DirectoryStore, MicroBatchStream, StreamFinishedError

DRIVER = os.path.join(TESTS, "durable_driver.py")
STREAM = "durable-test"  # durable_driver.STREAM
NAMESPACE = f"irfront-{STREAM}"
NUM_BATCHES = 40  # durable_driver.NUM_BATCHES
REDUCERS = 3
KILL_AFTER = 8  # batches submitted by the first driver before it is killed


# ---- the store on its own ------------------------------------------------------------------
def test_directory_store_roundtrip_and_listing(tmp_path):
    st = DirectoryStore(tmp_path / "ck")
    assert os.path.isdir(tmp_path / "ck")
    st.save("s/reducers/A/0/000000000003", {"seq": 2, "state": [1, 2]})
    st.save("s/reducers/A/0/000000000001", {"seq": 0})
    st.save("s/manifest", {"groups": {"A": 1}})
    assert st.load("s/reducers/A/0/000000000003") == {"seq": 2, "state": [1, 2]}
    assert st.list("s/reducers/") == ["s/reducers/A/0/000000000001",
                                      "s/reducers/A/0/000000000003"]
    assert st.list() == ["s/manifest", "s/reducers/A/0/000000000001",
                         "s/reducers/A/0/000000000003"]
    st.save("s/manifest", {"groups": {"A": 2}})  # replaces
    assert st.load("s/manifest") == {"groups": {"A": 2}}
    assert st.delete("s/reducers/A/0/000000000001") is True
    assert st.delete("s/reducers/A/0/000000000001") is False
    with pytest.raises(KeyError):
        st.load("s/nothing")
    # Values are cloudpickled: a lambda (defined here, not importable) round-trips.
    st.save("s/fn", lambda x: x + 1)
    assert st.load("s/fn")(1) == 2
    # No temp file is left behind by a write.
    leftovers = [f for _, _, fs in os.walk(tmp_path) for f in fs if f.endswith(".tmp")]
    assert leftovers == []


def test_directory_store_write_is_atomic(tmp_path, monkeypatch):
    st = DirectoryStore(tmp_path)
    st.save("k", "old")

    def broken_replace(src, dst):
        raise OSError("disk gone")  # the writer dies between writing and renaming

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        st.save("k", "new" * 1000)
    monkeypatch.undo()
    assert st.load("k") == "old"  # the old value, whole
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []
    # A writer killed mid-write leaves a hidden temp file: not listed, removed by cleanup.
    (tmp_path / ".k.ckpt.x1y2.tmp").write_bytes(b"partial")
    assert st.list() == ["k"]
    assert st.cleanup() == 1
    assert not (tmp_path / ".k.ckpt.x1y2.tmp").exists()
    assert st.load("k") == "old"


def test_directory_store_bad_paths_and_keys(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        DirectoryStore(f)
    with pytest.raises(ValueError, match="cannot create the checkpoint directory"):
        DirectoryStore(f / "sub")
    with pytest.raises(ValueError, match="create=False"):
        DirectoryStore(tmp_path / "missing", create=False)
    st = DirectoryStore(tmp_path / "ok")
    for bad in ("", "../x", "a//b", ".hidden", "a/b c", "/abs"):
        with pytest.raises(ValueError, match="checkpoint key"):
            st.save(bad, 1)
    with pytest.raises(ValueError, match="checkpoint_dir or store, not both"):
        MicroBatchStream(checkpoint_dir=str(tmp_path / "a"), store=st)
    with pytest.raises(ValueError, match="must be a CheckpointStore"):
        MicroBatchStream(store=str(tmp_path))


@given(hst.text(max_size=40))
def test_group_key_is_a_valid_store_key_for_any_class_name(name):
    """A reducer class defined in a function (``make.<locals>.Sum``) still gets a
    durable group name the store accepts, and valid names are kept as they are."""
    from irfront.drivers.checkpoints import check_key
    from irfront.drivers.durable import group_key
    key = group_key(name)
    assert check_key(key) == key
    if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", name):
        assert key == name
    assert group_key("make.<locals>.Sum") == "make._locals_.Sum"


# ---- a driver killed mid-stream, another one resuming ----------------------------------
def _env() -> dict:
    env = dict(os.environ)
    paths = [os.path.join(ROOT, "python"), ROOT, TESTS]
    old = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in old if p not in paths])
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return env


def _start(cluster, ckdir, out, log, finish=False) -> subprocess.Popen:
    # one batch every 0.1 s: 40 batches in about 4 s, and the kill still lands mid-stream
    # (after 8 batches and a checkpoint of every reducer, checked below)
    argv = [sys.executable, DRIVER, "--address", cluster.address, "--dir", str(ckdir),
            "--out", str(out), "--interval", "0.1"] + (["--finish"] if finish else [])
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=_env(),
                            cwd=ROOT)


def _tail(path, n=3000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def _progress(out) -> int:
    try:
        with open(str(out) + ".progress") as f:
            return int(f.read().strip() or -1)
    except (OSError, ValueError):
        return -1


def _reducer_files(ckdir) -> dict[int, list[str]]:
    st = DirectoryStore(ckdir)
    out: dict[int, list[str]] = {}
    for k in st.list(f"{STREAM}/reducers/"):
        i = int(k.split("/")[3])
        out.setdefault(i, []).append(k)
    return out


def _named(namespace=NAMESPACE) -> list[str]:
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a.get("namespace") == namespace)


def _kill_named(namespace=NAMESPACE) -> None:
    for name in _named(namespace):
        try:
            ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
        except ValueError:
            pass


def _stop(p: subprocess.Popen | None) -> None:
    if p is not None and p.poll() is None:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)


Orphan = ray.remote(SumReducerBase)


@needs_core
@pytest.mark.timeout(900)
# reducers-alive is in `make test-slow` (make test keeps reducers-gone, and test_chaos
# kills a durable driver three times with its reducers alive)
@pytest.mark.parametrize("lose_reducers", [
    pytest.param(False, marks=pytest.mark.slow, id="reducers-alive"),
    pytest.param(True, id="reducers-gone")])
def test_resume_after_driver_sigkill(cluster, tmp_path, lose_reducers):
    """Driver 1 runs the stream and is SIGKILLed after KILL_AFTER batches (checkpoints
    written); driver 2, on the same checkpoint directory, finds the detached reducers
    (or, with ``lose_reducers``, recreates them from the checkpoints), resumes the
    source at the stored position and runs it to the end."""
    assert (dd.NUM_BATCHES, dd.REDUCERS, dd.STREAM) == (NUM_BATCHES, REDUCERS, STREAM)
    ckdir, out1, out2 = tmp_path / "ckpt", tmp_path / "d1.json", tmp_path / "d2.json"
    log1, log2 = open(tmp_path / "d1.log", "w"), open(tmp_path / "d2.log", "w")
    orphan_name = f"{STREAM}.Leftover.0"
    p1 = p2 = None
    _kill_named()
    try:
        # -- driver 1: run until some checkpoints are on disk, then SIGKILL it
        p1 = _start(cluster, ckdir, out1, log1)
        deadline = time.monotonic() + 240
        while True:
            assert p1.poll() is None, f"driver 1 exited early: {_tail(tmp_path / 'd1.log')}"
            assert time.monotonic() < deadline, \
                f"driver 1 made no progress in 240 s: {_tail(tmp_path / 'd1.log')}"
            files = _reducer_files(ckdir) if ckdir.exists() else {}
            if _progress(out1) >= KILL_AFTER and len(files) == REDUCERS:
                break
            time.sleep(0.05)
        os.kill(p1.pid, signal.SIGKILL)
        t_kill = time.time()
        p1.wait(timeout=30)
        killed_at = _progress(out1)
        assert killed_at < NUM_BATCHES - 1, "driver 1 finished before it was killed"
        assert not out1.exists()
        alive = _named()
        assert alive == [f"{STREAM}.SumReducerBase.{i}" for i in range(REDUCERS)], alive
        st = DirectoryStore(ckdir)
        stored = {i: st.load(sorted(ks)[-1]) for i, ks in _reducer_files(ckdir).items()}
        positions = {i: r["cursor"]["batch"] for i, r in stored.items()}
        assert all(0 < b <= killed_at + 1 for b in positions.values()), positions

        # -- what a dead driver can leave behind, besides the reducers
        # (a) an older checkpoint (killed between writing the new one and deleting it)
        newest0 = sorted(_reducer_files(ckdir)[0])[-1]
        stale = newest0.rsplit("/", 1)[0] + "/000000000000"
        st.save(stale, st.load(newest0))
        # (b) a write cut short
        tmpfile = ckdir / STREAM / "reducers" / "SumReducerBase" / "1" / ".x.ckpt.dead.tmp"
        tmpfile.write_bytes(b"partial")
        # (c) a detached actor of the stream that no group of its manifest names
        orphan = Orphan.options(name=orphan_name, namespace=NAMESPACE,
                                lifetime="detached").remote(0)
        ray.get(orphan.get_total.remote(), timeout=60)
        if lose_reducers:  # the reducers die too: the new driver must recreate them
            for n in [n for n in _named() if n != orphan_name]:
                ray.kill(ray.get_actor(n, namespace=NAMESPACE), no_restart=True)
            t = time.monotonic()
            while [n for n in _named() if n != orphan_name] and time.monotonic() - t < 30:
                time.sleep(0.1)
            assert _named() == [orphan_name]

        # -- driver 2: resume and run to the end, then close the stream as finished
        t0 = time.monotonic()
        t_start2 = time.time()
        p2 = _start(cluster, ckdir, out2, log2, finish=True)
        try:
            rc = p2.wait(timeout=420)
        except subprocess.TimeoutExpired:
            pytest.fail(f"driver 2 did not finish in 420 s: {_tail(tmp_path / 'd2.log')}")
        wall2 = time.monotonic() - t0
        assert rc == 0, f"driver 2 failed (rc {rc}): {_tail(tmp_path / 'd2.log')}"
        res = json.loads(out2.read_text())
    finally:
        _stop(p1)
        _stop(p2)
        log1.close()
        log2.close()
        _kill_named()

    resumed, rep = res["resumed"], res["report"]
    dur = rep["durable"]
    print(f"\n[{'reducers gone' if lose_reducers else 'reducers alive'}] driver 1 killed "
          f"after {killed_at + 1} batches submitted; stored positions {positions}; "
          f"driver 2 resumed at batch {resumed['position']} with call numbers "
          f"{resumed['next_seq']} (connect {res['connect_s']:.1f} s, resume "
          f"{res['resume_s']:.2f} s, first batch {res['first_batch_s']:.1f} s after start, "
          f"run {res['run_s']:.1f} s, process {wall2:.1f} s; from its start to its first "
          f"batch {res['first_batch_at'] - t_start2:.1f} s, from the kill "
          f"{res['first_batch_at'] - t_kill:.1f} s, the test's leftovers planted in "
          f"between); adopted {dur['adopted']}, "
          f"recreated {dur['recreated']}; removed {resumed['removed_checkpoints']} "
          f"checkpoint(s), {resumed['removed_tmp']} temp file(s), orphans "
          f"{resumed['killed_orphans']}; reducer stats {res['reducer_stats']}; "
          f"{rep['checkpoints']} checkpoints, {dur['saved']} written in "
          f"{dur['save_s'] * 1e3:.1f} ms; finished: "
          f"{dur.get('finished')}")

    # Nothing lost, nothing counted twice.
    assert res["totals"] == res["expected"] == dd.expected()
    assert rep["lost_calls"] == 0
    # The replayed batches got the numbers they had: every reducer ends at call N - 1.
    assert [s["last"] for s in res["reducer_stats"]] == [NUM_BATCHES - 1] * REDUCERS
    # It resumed from the stored position (the least over the reducers), not from 0.
    assert resumed["position"] == min(positions.values()) > 0
    assert resumed["next_seq"] == {"SumReducerBase": resumed["position"]}
    assert rep["batches"] == NUM_BATCHES - resumed["position"]
    if lose_reducers:
        assert dur["adopted"] == [] and dur["recreated"] == ["SumReducerBase"]
    else:
        assert dur["adopted"] == ["SumReducerBase"] and dur["recreated"] == []
    # What the dead driver left: removed by the new one.
    assert resumed["removed_checkpoints"] >= 1
    assert resumed["removed_tmp"] >= 1 and not tmpfile.exists()
    assert resumed["killed_orphans"] == [orphan_name]
    # Closed as finished: reducers killed, checkpoints gone, stream marked finished.
    assert sorted(dur["finished"]["killed"]) == [f"{STREAM}.SumReducerBase.{i}"
                                                 for i in range(REDUCERS)]
    assert st.list(f"{STREAM}/reducers/") == []
    assert st.load(f"{STREAM}/manifest")["finished"] is True
    assert _named() == []
    with pytest.raises(StreamFinishedError, match="closed as finished"):
        MicroBatchStream(checkpoint_dir=str(ckdir), name=STREAM).resume()
    shutil.rmtree(ckdir, ignore_errors=True)
