#!/usr/bin/env python3
"""launch.py -- from nothing running to the first result on three hosts: the SSH launcher
(`%cluster start --ssh`) beside a cluster started by hand.

Needs root and OpenSSH's server (it makes three hosts of network namespaces on one
bridge, as tests/multihost/ does, and runs a real sshd on each with keys it makes:
tests/multihost/sshd.py). One Python process on hostA (a notebook's place), with
rayipy and IPython already imported, times, per repetition:

  ssh     `%cluster start --ssh hostA,hostB,hostC -n 1` in a real InteractiveShell, then
          get(f.remote()): seconds to the first result; then `%cluster stop` (timed too)
  hand    what a person runs on each machine, with no typing time: `rayipy start --head
          --num-cpus 1` on hostA, then `rayipy start --address=... --num-cpus 1` on hostB
          and on hostC (one after the other, as from one terminal), then init(address=...)
          and get(f.remote()): seconds to the first result; then `rayipy stop` on each

The median of --reps for each, with the part until the driver is connected ("up") and
the time to stop everything. Everything started is stopped, and the namespaces are
deleted at the end, whatever happens.

    sudo .venv/bin/python benchmarks/launch.py [--reps 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "multihost")]

import importlib.util  # noqa: E402

# tests/multihost/conftest.py by its path: tests/conftest.py has the same module name.
_spec = importlib.util.spec_from_file_location("multihost_conftest",
                                               REPO / "tests" / "multihost" / "conftest.py")
_hosts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_hosts)
SUBNET, Host, _ip, _remove = _hosts.SUBNET, _hosts.Host, _hosts._ip, _hosts._remove
namespaces_unavailable = _hosts.namespaces_unavailable
from sshd import SSHServers, sshd_unavailable  # noqa: E402

DRIVER = r"""
import json, os, subprocess, sys, time
from IPython.core.interactiveshell import InteractiveShell
import rayipy
plan = json.loads(sys.argv[1])
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "rayipy")

def where():
    import socket
    return socket.gethostname()

out = {}
if plan["mode"] == "ssh":
    t0 = time.perf_counter()
    shell.run_line_magic("cluster", "start --ssh hostA,hostB,hostC -n 1 --ssh-config " + plan["config"])
    t_started = time.perf_counter()
    rayipy.get(rayipy.remote(where).remote())
    t1 = time.perf_counter()
    out["nodes"] = len(rayipy.nodes())
    shell.run_line_magic("cluster", "stop")
    out.update(first_result=t1 - t0, start=t_started - t0, stop=time.perf_counter() - t1)
else:
    env = dict(os.environ, RAYIPY_PASSWORD=plan["password"])
    t0 = time.perf_counter()
    head = subprocess.run(plan["head"], env=env, capture_output=True, text=True, check=True)
    address = head.stdout.split("rayipy head started at ", 1)[1].split(",", 1)[0]
    for argv in plan["agents"]:
        subprocess.run([a.replace("ADDRESS", address) for a in argv], env=env,
                       capture_output=True, text=True, check=True)
    rayipy.init(address=address, password=plan["password"])
    t_started = time.perf_counter()
    rayipy.get(rayipy.remote(where).remote())
    t1 = time.perf_counter()
    out["nodes"] = len(rayipy.nodes())
    rayipy.shutdown()
    for argv in plan["stops"]:
        subprocess.run(argv, capture_output=True, check=True)
    out.update(first_result=t1 - t0, start=t_started - t0, stop=time.perf_counter() - t1)
print("RESULT " + json.dumps(out), flush=True)
"""


@contextlib.contextmanager
def three_hosts(directory: Path):
    """hostA..hostC on one bridge, as tests/multihost/conftest.py's fixture makes them."""
    tag = uuid.uuid4().hex[:6]
    switch = f"ry{tag}s"
    hosts = [Host(name, f"ry{tag}{name[-1].lower()}", f"{SUBNET}.{i + 1}", directory / name)
             for i, name in enumerate(("hostA", "hostB", "hostC"))]
    hosts_file = "127.0.0.1 localhost\n" + "".join(f"{h.ip} {h.name}\n" for h in hosts)
    try:
        _ip("netns", "add", switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        for host in hosts:
            _ip("netns", "add", host.netns)
            etc = Path("/etc/netns") / host.netns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts_file)
            inside, port = f"{host.netns}h", f"{host.netns}p"
            _ip("link", "add", inside, "type", "veth", "peer", "name", port)
            _ip("link", "set", inside, "netns", host.netns)
            _ip("link", "set", port, "netns", switch)
            _ip("-n", switch, "link", "set", port, "master", "br0")
            _ip("-n", switch, "link", "set", port, "up")
            _ip("-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", inside)
            _ip("-n", host.netns, "link", "set", inside, "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")
        yield hosts
    finally:
        _remove(hosts)
        _ip("netns", "del", switch, check=False)


def run_driver(hostA: Host, plan: dict) -> dict:
    result = subprocess.run(hostA.argv(sys.executable, "-c", DRIVER, json.dumps(plan)),
                            capture_output=True, text=True, timeout=300,
                            env=dict(hostA.env, PYTHONPATH=str(REPO)))
    line = next((l for l in result.stdout.splitlines() if l.startswith("RESULT ")), None)
    if result.returncode != 0 or line is None:
        raise SystemExit(f"the driver failed:\n{result.stdout}\n{result.stderr}")
    figures = json.loads(line[len("RESULT "):])
    if figures["nodes"] != 3:
        raise SystemExit(f"expected 3 nodes, got {figures['nodes']}")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    why = namespaces_unavailable() or sshd_unavailable()
    if why:
        print(f"launch.py cannot run here: {why}", file=sys.stderr)
        return 2
    results: dict[str, list[dict]] = {"ssh": [], "hand": []}
    with tempfile.TemporaryDirectory(prefix="rayipy-launch-") as tmp, three_hosts(Path(tmp)) as hosts:
        servers = SSHServers(hosts, Path(tmp) / "ssh")
        try:
            servers.start()
            py = sys.executable
            hand = {"mode": "hand", "password": uuid.uuid4().hex,
                    "head": hosts[0].argv(py, "-m", "rayipy", "start", "--head", "--node-ip-address",
                                          hosts[0].ip, "--num-cpus", "1"),
                    "agents": [h.argv("env", f"RAYIPY_HOME={h.home}", f"PYTHONPATH={REPO}", py, "-m",
                                      "rayipy", "start", "--address=ADDRESS", "--num-cpus", "1")
                               for h in hosts[1:]],
                    "stops": [h.argv("env", f"RAYIPY_HOME={h.home}", py, "-m", "rayipy", "stop")
                              for h in hosts]}
            for rep in range(args.reps):   # interleaved, so that drift hits both alike
                results["ssh"].append(run_driver(hosts[0], {"mode": "ssh",
                                                            "config": str(servers.config)}))
                results["hand"].append(run_driver(hosts[0], hand))
                print(f"rep {rep + 1}: ssh {results['ssh'][-1]['first_result']:.2f} s, "
                      f"by hand {results['hand'][-1]['first_result']:.2f} s", flush=True)
        finally:
            servers.stop()
    print("\nfrom nothing running to the first result, 3 hosts x 1 CPU "
          f"(median of {args.reps}):")
    print(f"{'':34}{'first result':>14}{'of it: up':>14}{'stop':>8}")
    for mode, label in (("ssh", "%cluster start --ssh (launcher)"), ("hand", "by hand (rayipy start x3)")):
        rows = results[mode]
        med = {k: statistics.median(r[k] for r in rows) for k in ("first_result", "start", "stop")}
        print(f"{label:34}{med['first_result']:>12.2f} s{med['start']:>12.2f} s{med['stop']:>6.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
