"""The resident path's own listeners against an attacker on the cluster's network
(tests/adversary.py): nothing runs a stranger's code, no process dies, and the streams
stay exact; with Ray's token authentication on as well as off."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from adversary import actor_pids, alive, attack, listening_ports, resident_pids
from conftest import needs_core
from streams import exact_resident_stream

pytestmark = needs_core
HERE = os.path.dirname(os.path.abspath(__file__))


def test_no_listener_runs_a_strangers_code(cluster, tmp_path):
    first = exact_resident_stream(8, seed=1)
    assert first["exact"] and first["plain_exact"], first
    assert first["fed"] > 0, "the attack must meet the feeds that are in use"
    pids = actor_pids(first["handles"]) + resident_pids()
    assert len(listening_ports(pids)) > len(pids), "our listeners beside Ray's"
    marker = str(tmp_path / "pwned")
    done = attack(pids, marker, seed=3)
    assert done["sent"] >= 5 * len(pids)
    assert not os.path.exists(marker), "a listener ran the attacker's pickle"
    assert alive(pids) == pids, "an attack killed a process"
    # the reducers' listeners saw the attack and refused it
    import ray
    refused = ray.get([h.__ray_call__.remote(
        lambda self: getattr(self.__dict__.get("_irf_chan"), "refused", 0))
        for h in first["handles"]])
    assert sum(refused) >= 4 * len(first["handles"])
    again = exact_resident_stream(8, seed=2)
    assert again["exact"] and again["plain_exact"], again
    assert not os.path.exists(marker)


@pytest.mark.timeout(240)
def test_token_auth_cluster_runs_the_resident_path_and_refuses_strangers():
    """Its own 2-node cluster with RAY_AUTH_MODE=token (a subprocess)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    p = subprocess.run([sys.executable, os.path.join(HERE, "adversary.py")],
                       capture_output=True, text=True, timeout=220, env=env)
    line = [x for x in p.stdout.splitlines() if x.startswith("{")]
    assert p.returncode == 0 and line, p.stdout[-2000:] + p.stderr[-4000:]
    out = json.loads(line[-1])
    assert out["token_auth"], "Ray's token auth was not on"
    assert out["first"]["exact"] and out["first"]["plain_exact"], out
    assert out["first"]["fed"] > 0, out
    assert out["attack"]["sent"] > 0 and out["alive"], out
    assert not out["code_ran"], out
    assert out["second"]["exact"] and out["second"]["plain_exact"], out
