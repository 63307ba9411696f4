#!/usr/bin/env python3
"""A multi-host Ray cluster on one machine: one network namespace per host, on a bridge.

    sudo .venv/bin/python scripts/netcluster.py up --hosts 4 --cpus 1 --rate 1gbit
    sudo .venv/bin/python scripts/netcluster.py exec -- .venv/bin/python bench/stream.py \
        --address "$IRF_NETCLUSTER_ADDRESS"
    sudo .venv/bin/python scripts/netcluster.py counters      # bytes per host (JSON)
    sudo .venv/bin/python scripts/netcluster.py down          # idempotent

``up`` creates, for host i (0 = the head): a namespace ``{prefix}h{i}``, a veth pair
whose inside end is ``eth0`` (address ``{subnet}.{i+1}/24``) and whose outside end
``{prefix}v{i}`` is enslaved to a bridge ``{prefix}br`` created for the cluster. The
bridge has no address and there is no route or NAT anywhere: the hosts reach each
other and nothing else (the machine's own namespace cannot reach them either). With
``--rate`` each host's link is shaped with tc tbf in both directions (the inside eth0's
egress: what the host sends; the outside veth's egress: what it receives). This kernel
has no netem: bandwidth is shaped, delay is not emulated.

Then ``ray start`` runs in each namespace (head first) with its CPUs, object store and
its own --temp-dir, with ``PYTHONPATH`` holding the checkout's python/ and root, so
workers import irfront and ray_patch. A state file (``--state``, default
/tmp/{prefix}netcluster.json) records every namespace, link and directory as soon as it
is created, so ``down`` works after a crash. ``down`` ends exactly the processes inside
the cluster's namespaces (``ip netns pids``: SIGTERM, then SIGKILL after a grace
period), deletes the namespaces (their veth pairs go with them) and the bridge, and
removes the temp dirs; with no state file it finds the names by prefix. It never kills
by name and never runs ``ray stop``.

``exec [--host I] -- CMD``: runs CMD inside a host's namespace (default the head) with
``IRF_NETCLUSTER_ADDRESS`` (head:port), ``IRF_NETCLUSTER_STATE`` (the state file) and
``PYTHONPATH`` set. ``kill-raylet --host I``: kills that host's raylet by pid (found
among the namespace's pids), a host failure. ``counters``: rx/tx bytes of every host's
eth0 as JSON (read from /proc/PID/net/dev of a process inside each namespace, so it
works from inside the head namespace too).

Refuses, naming what is missing: not root; ``ip``/``tc`` not installed (``apt-get
install iproute2``, done by scripts/install_system_deps.sh); a namespace or link name
already in use; a state file of a cluster that is still up.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PREFIX = "irf-"
DEFAULT_SUBNET = "10.213.0"
RAY_PORT = 6379


class Refusal(SystemExit):
    """A precondition is not met: exits with status 2 and the reason."""

    def __init__(self, msg: str):
        super().__init__(2)
        self.msg = msg


# ---- small helpers ---------------------------------------------------------------------
def sh(*cmd: str, check: bool = True, capture: bool = True,
       timeout: float = 60) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), capture_output=capture, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {' '.join(cmd)}\n"
                           f"{(r.stderr or '').strip()}")
    return r


def log(msg: str) -> None:
    print(f"[netcluster] {msg}", flush=True)


def state_path(prefix: str) -> str:
    return f"/tmp/{prefix}netcluster.json"


def names(prefix: str, i: int) -> dict:
    return {"ns": f"{prefix}h{i}", "veth": f"{prefix}v{i}"}


def bridge_name(prefix: str) -> str:
    return f"{prefix}br"


def check_prefix(prefix: str) -> None:
    if not re.fullmatch(r"[a-z][a-z0-9]{1,6}-", prefix):
        raise Refusal(f"--prefix must be 2-7 lowercase letters/digits and a '-' "
                      f"(e.g. irf-); got {prefix!r}")


def check_tools(need_tc: bool) -> None:
    missing = [t for t in (("ip", "tc") if need_tc else ("ip",)) if shutil.which(t) is None]
    if missing:
        raise Refusal(f"{' and '.join(missing)} not installed: apt-get install iproute2 "
                      "(scripts/install_system_deps.sh installs it)")


def check_root() -> None:
    if os.geteuid() != 0:
        raise Refusal("must run as root (network namespaces, veths, a bridge and tc "
                      "need CAP_NET_ADMIN): run with sudo")


def list_netns() -> list[str]:
    r = sh("ip", "netns", "list", check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}") or \
        sh("ip", "link", "show", "dev", name, check=False).returncode == 0


def ns_pids(ns: str) -> list[int]:
    r = sh("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in r.stdout.split() if p.strip().isdigit()]


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def read_state(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_state(path: str, st: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(st, f, indent=1)
    os.replace(tmp, path)


def host_env(st: dict) -> dict:
    """The environment of every process started in the cluster: the checkout on the
    path (workers import irfront, ray_patch), Ray free to use the host's own address."""
    env = dict(os.environ)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # loopback-only switch: not here
    env.pop("RAY_ADDRESS", None)
    paths = [os.path.join(st["root"], "python"), st["root"]]
    old = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in paths]
    env["PYTHONPATH"] = os.pathsep.join(paths + old)
    # On a loaded machine a node's dashboard agent may take long to start; the raylet
    # aborts when it has not written its port files within this (Ray's default: 30 s).
    env.setdefault("RAY_agent_register_timeout_ms", "180000")
    # Ray 2.60's `ray start --head` turns token authentication on when it finds a token
    # (~/.ray/auth_token, which a local ray.init() may have written), while a joining
    # node's `ray start --address` does not send it: the hosts could not join. The
    # cluster lives on a bridge nothing else reaches; its hosts and drivers run without.
    env["RAY_AUTH_MODE"] = "disabled"
    env["IRF_NETCLUSTER_ADDRESS"] = st["address"]
    env["IRF_NETCLUSTER_STATE"] = st["state_file"]
    return env


# ---- up ----------------------------------------------------------------------------------
def shape(ns: str | None, dev: str, rate: str) -> None:
    pre = ("ip", "netns", "exec", ns) if ns else ()
    sh(*pre, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate,
       "burst", "256kb", "latency", "50ms")


def make_host(st: dict, i: int, path: str) -> None:
    prefix, br = st["prefix"], st["bridge"]
    n = names(prefix, i)
    addr = f"{st['subnet']}.{i + 1}"
    host = {"index": i, "ns": n["ns"], "veth": n["veth"], "addr": addr,
            "temp_dir": os.path.join(st["temp_root"], f"h{i}")}
    st["hosts"].append(host)
    write_state(path, st)  # recorded before it exists: down removes half-made hosts too
    sh("ip", "netns", "add", n["ns"])
    sh("ip", "link", "add", n["veth"], "type", "veth", "peer", "name", "eth0",
       "netns", n["ns"])
    sh("ip", "link", "set", n["veth"], "master", br)
    sh("ip", "link", "set", n["veth"], "up")
    sh("ip", "-n", n["ns"], "addr", "add", f"{addr}/24", "dev", "eth0")
    sh("ip", "-n", n["ns"], "link", "set", "eth0", "up")
    sh("ip", "-n", n["ns"], "link", "set", "lo", "up")
    if st["rate"]:
        shape(n["ns"], "eth0", st["rate"])  # what the host sends
        shape(None, n["veth"], st["rate"])  # what it receives


def ray_start(st: dict, host: dict, head: bool) -> subprocess.Popen:
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    if not os.path.exists(ray_bin):
        raise Refusal(f"no ray executable beside {sys.executable}: run with the venv's "
                      "python (.venv/bin/python scripts/netcluster.py ...)")
    os.makedirs(host["temp_dir"], exist_ok=True)
    cmd = ["ip", "netns", "exec", host["ns"], ray_bin, "start",
           "--node-ip-address", host["addr"], "--num-cpus", str(st["cpus"]),
           "--object-store-memory", str(st["object_store_mb"] * 1024 * 1024),
           "--temp-dir", host["temp_dir"], "--disable-usage-stats"]
    if head:
        cmd += ["--head", "--port", str(RAY_PORT), "--include-dashboard=false"]
    else:
        cmd += ["--address", st["address"]]
    out = open(os.path.join(st["temp_root"], f"ray_start_h{host['index']}.log"), "w")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=host_env(st))


WAIT_NODES = r"""
import sys, time
from ray._raylet import GcsClient
want, deadline = int(sys.argv[2]), time.time() + float(sys.argv[3])
c = GcsClient(address=sys.argv[1])
while True:
    alive = [n for n in c.get_all_node_info(timeout=10).values() if n.state == 0]
    if len(alive) >= want or time.time() > deadline:
        print(len(alive)); break
    time.sleep(0.5)
"""


def wait_nodes(st: dict, want: int, timeout_s: float) -> int:
    head = st["hosts"][0]["ns"]
    r = sh("ip", "netns", "exec", head, sys.executable, "-c", WAIT_NODES, st["address"],
           str(want), str(timeout_s), timeout=timeout_s + 30, check=False)
    try:
        return int(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"could not read the node table: {r.stderr.strip()[-800:]}")


def cmd_up(a) -> int:
    check_root()
    check_prefix(a.prefix)
    check_tools(need_tc=bool(a.rate))
    if not 1 <= a.hosts <= 32:
        raise Refusal(f"--hosts must be 1..32; got {a.hosts}")
    if not re.fullmatch(r"10\.\d{1,3}\.\d{1,3}", a.subnet):
        raise Refusal(f"--subnet must be the first three octets of a 10/8 net (e.g. "
                      f"10.213.0); got {a.subnet!r}")
    path = a.state or state_path(a.prefix)
    old = read_state(path)
    if old is not None:
        raise Refusal(f"a cluster state file exists ({path}): the cluster "
                      f"{old.get('address')} may still be up; run `down` first")
    taken = set(list_netns())
    clash = [names(a.prefix, i)["ns"] for i in range(a.hosts)
             if names(a.prefix, i)["ns"] in taken]
    clash += [n for n in [bridge_name(a.prefix)] + [names(a.prefix, i)["veth"]
                                                     for i in range(a.hosts)]
              if link_exists(n)]
    if clash:
        raise Refusal(f"names already in use: {', '.join(clash)}; pick another --prefix "
                      f"or remove them (`down --prefix {a.prefix}` if they are ours)")
    st = {"prefix": a.prefix, "bridge": bridge_name(a.prefix), "subnet": a.subnet,
          "cpus": a.cpus, "object_store_mb": a.object_store_mb, "rate": a.rate,
          "root": ROOT, "state_file": path, "hosts": [], "started": time.time(),
          "temp_root": f"/tmp/{a.prefix}nc", "address": f"{a.subnet}.1:{RAY_PORT}",
          "python": sys.executable}
    write_state(path, st)
    shutil.rmtree(st["temp_root"], ignore_errors=True)  # logs of an earlier failed up
    try:
        sh("ip", "link", "add", st["bridge"], "type", "bridge")
        sh("ip", "link", "set", st["bridge"], "up")
        os.makedirs(st["temp_root"], exist_ok=True)
        for i in range(a.hosts):
            make_host(st, i, path)
        log(f"{a.hosts} hosts on bridge {st['bridge']}: "
            + ", ".join(f"{h['ns']}={h['addr']}" for h in st["hosts"])
            + (f"; links shaped to {a.rate} (tbf, both directions; no delay emulated)"
               if a.rate else "; links not shaped"))
        t0 = time.time()
        for h in st["hosts"]:  # head first, then one at a time: less of a load spike
            p = ray_start(st, h, head=h["index"] == 0)
            if p.wait(timeout=240) != 0:
                # `ray start` waits 30 s (fixed) for its raylet to register; on a loaded
                # machine the raylet may register later (it first waits for its dashboard
                # agent): give it time before calling the host failed.
                if h["index"] == 0 or wait_nodes(st, h["index"] + 1, timeout_s=150) \
                        <= h["index"]:
                    raise RuntimeError(f"ray start in {h['ns']} failed; see "
                                       f"{st['temp_root']}/ray_start_h{h['index']}.log")
                log(f"ray start in {h['ns']} gave up waiting, but its node joined")
        alive = wait_nodes(st, a.hosts, timeout_s=90)
        if alive < a.hosts:
            raise RuntimeError(f"only {alive} of {a.hosts} Ray nodes joined")
        st["up_s"] = time.time() - t0
        write_state(path, st)
    except BaseException as e:
        for h in st["hosts"]:  # what ray start said, before the temp dir goes
            lp = os.path.join(st["temp_root"], f"ray_start_h{h['index']}.log")
            if isinstance(e, RuntimeError) and f"ray_start_h{h['index']}.log" in str(e) \
                    and os.path.exists(lp):
                with open(lp) as f:
                    print(f"--- {lp} (last lines) ---\n" + "".join(f.readlines()[-25:]),
                          file=sys.stderr)
        log(f"up failed ({e}); tearing down what was made (logs kept in "
            f"{st['temp_root']})")
        st["keep_logs"] = True
        teardown(st, path)
        if isinstance(e, RuntimeError):
            print(str(e), file=sys.stderr)
            return 1
        raise
    log(f"Ray cluster up in {st['up_s']:.1f} s: {a.hosts} nodes x {a.cpus} CPUs, "
        f"{a.object_store_mb} MB object store each")
    log(f"state file: {path}")
    print(st["address"], flush=True)
    return 0


# ---- down ---------------------------------------------------------------------------------
def end_pids(nss: list[str], grace_s: float = 10.0) -> int:
    """SIGTERM every process inside the namespaces, SIGKILL what is left after grace_s.
    Returns how many processes were signalled."""
    me = os.getpid()
    pids = {p for ns in nss for p in ns_pids(ns) if p != me}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in sorted(pids):
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + (grace_s if sig == signal.SIGTERM else 5.0)
        while time.time() < deadline:
            pids = {p for ns in nss for p in ns_pids(ns) if p != me}
            if not pids:
                break
            time.sleep(0.2)
        if not pids:
            break
    return len(pids)


def teardown(st: dict, path: str | None) -> list[str]:
    prefix = st["prefix"]
    nss = {h["ns"] for h in st.get("hosts", [])}
    nss |= {n for n in list_netns() if re.fullmatch(re.escape(prefix) + r"h\d+", n)}
    nss &= set(list_netns())
    done = []
    if nss:
        left = end_pids(sorted(nss))
        if left:
            log(f"warning: {left} processes did not exit after SIGKILL")
    for ns in sorted(nss):
        sh("ip", "netns", "del", ns, check=False)
        done.append(ns)
    veths = {h["veth"] for h in st.get("hosts", [])}
    try:
        veths |= {n for n in os.listdir("/sys/class/net")
                  if re.fullmatch(re.escape(prefix) + r"v\d+", n)}
    except OSError:
        pass
    for v in sorted(veths):  # normally gone with their namespace's end
        if link_exists(v):
            sh("ip", "link", "del", v, check=False)
            done.append(v)
    br = st.get("bridge") or bridge_name(prefix)
    if link_exists(br):
        sh("ip", "link", "del", br, check=False)
        done.append(br)
    tr = st.get("temp_root")  # None without a state file: keep a failed up's logs
    if tr and os.path.isdir(tr) and not st.get("keep_logs"):
        shutil.rmtree(tr, ignore_errors=True)
    if path and os.path.exists(path):
        os.remove(path)
    return done


def cmd_down(a) -> int:
    check_root()
    check_prefix(a.prefix)
    check_tools(need_tc=False)
    path = a.state or state_path(a.prefix)
    st = read_state(path) or {"prefix": a.prefix}
    st["keep_logs"] = a.keep_logs
    done = teardown(st, path)
    log("removed: " + (", ".join(done) if done else "nothing (already down)"))
    return 0


# ---- exec, counters, kill-raylet, status -----------------------------------------------------
def load(a) -> dict:
    path = a.state or state_path(a.prefix)
    st = read_state(path)
    if st is None:
        raise Refusal(f"no cluster state file at {path}: run `up` first")
    return st


def host_of(st: dict, i: int) -> dict:
    if not 0 <= i < len(st["hosts"]):
        raise Refusal(f"--host must be 0..{len(st['hosts']) - 1}; got {i}")
    return st["hosts"][i]


def cmd_exec(a) -> int:
    check_root()
    st = load(a)
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        raise Refusal("exec needs a command: exec -- CMD ARGS...")
    h = host_of(st, a.host)
    p = subprocess.Popen(["ip", "netns", "exec", h["ns"], *cmd], env=host_env(st))
    try:
        return p.wait()
    except KeyboardInterrupt:
        p.send_signal(signal.SIGINT)
        try:
            return p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            return 130


def net_counters(st: dict) -> dict:
    """Per host: eth0's rx_bytes/tx_bytes, read through a process inside its namespace
    (/proc/PID/net/dev shows that process's namespace). Hosts with no process: None."""
    out = {}
    for h in st["hosts"]:
        val = None
        for pid in ns_pids(h["ns"]):
            try:
                with open(f"/proc/{pid}/net/dev") as f:
                    for line in f:
                        name, _, rest = line.partition(":")
                        if name.strip() == "eth0":
                            v = rest.split()
                            val = {"rx_bytes": int(v[0]), "tx_bytes": int(v[8])}
                break
            except OSError:
                continue
        out[h["ns"]] = val
    return out


def raylet_pid(st: dict, i: int) -> int | None:
    h = host_of(st, i)
    for pid in ns_pids(h["ns"]):
        argv0 = cmdline(pid).split(" ", 1)[0]
        if argv0.endswith("/raylet"):
            return pid
    return None


def cmd_counters(a) -> int:
    print(json.dumps(net_counters(load(a)), indent=1))
    return 0


def cmd_kill_raylet(a) -> int:
    check_root()
    st = load(a)
    if a.host == 0:
        raise Refusal("--host 0 is the head (GCS with it): kill a worker host's raylet")
    pid = raylet_pid(st, a.host)
    if pid is None:
        raise Refusal(f"no raylet among the processes of {host_of(st, a.host)['ns']}")
    os.kill(pid, signal.SIGKILL)
    log(f"killed the raylet of {host_of(st, a.host)['ns']} (pid {pid})")
    print(pid)
    return 0


def cmd_status(a) -> int:
    st = load(a)
    print(json.dumps({"address": st["address"], "rate": st["rate"], "cpus": st["cpus"],
                      "object_store_mb": st["object_store_mb"],
                      "hosts": [{**h, "pids": len(ns_pids(h["ns"]))} for h in st["hosts"]]},
                     indent=1))
    return 0


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prefix", default=DEFAULT_PREFIX,
                    help="name prefix of namespaces (PREFIXh0..), veths (PREFIXv0..), "
                         "the bridge (PREFIXbr) and the temp dir (/tmp/PREFIXnc)")
    ap.add_argument("--state", default=None, help="state file (default /tmp/PREFIXnetcluster.json)")
    sub = ap.add_subparsers(dest="what", required=True)
    up = sub.add_parser("up", help="create the hosts and start Ray")
    up.add_argument("--hosts", type=int, default=4)
    up.add_argument("--cpus", type=int, default=1, help="CPUs per host")
    up.add_argument("--object-store-mb", type=int, default=300, help="per host")
    up.add_argument("--rate", default="1gbit",
                    help="tc tbf rate of each host's link, both directions (e.g. 1gbit, "
                         "500mbit); 'none' or '' leaves links unshaped")
    up.add_argument("--subnet", default=DEFAULT_SUBNET, help="hosts get SUBNET.1, .2, ...")
    down = sub.add_parser("down", help="end the cluster's processes, remove its links")
    down.add_argument("--keep-logs", action="store_true", help="keep /tmp/PREFIXnc")
    ex = sub.add_parser("exec", help="run a command in a host's namespace")
    ex.add_argument("--host", type=int, default=0)
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    sub.add_parser("counters", help="eth0 rx/tx bytes per host, JSON")
    kr = sub.add_parser("kill-raylet", help="kill a host's raylet by pid (a host failure)")
    kr.add_argument("--host", type=int, required=True)
    sub.add_parser("status", help="the state file and processes per host")
    a = ap.parse_args(argv)
    if getattr(a, "rate", None) in ("none", "0"):
        a.rate = ""
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    fn = {"up": cmd_up, "down": cmd_down, "exec": cmd_exec, "counters": cmd_counters,
          "kill-raylet": cmd_kill_raylet, "status": cmd_status}[a.what]
    try:
        return fn(a)
    except Refusal as r:
        print(f"netcluster {a.what}: refused: {r.msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
