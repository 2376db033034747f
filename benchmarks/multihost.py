#!/usr/bin/env python3
"""multihost.py -- rayipy across two hosts (network namespaces), against one host.

Needs root (it makes network namespaces, as tests/multihost/ does: one namespace per
host, a veth pair between them, each host with its own address and host name).

  seed  the seed's third program's workload (10,000 tasks of time.sleep(0.001) that
        return the host's IP) on
          two hosts  hostA runs `rayipy start --head --num-cpus 1`, hostB joins with
                     `--num-cpus 1`, the driver runs on hostA
          one host   hostA alone, `rayipy start --head --num-cpus 2`
        wall seconds of submit + get (the cluster started and warmed up first), median of
        --reps; goal: two hosts within 1.3x of one host
  fetch a 100 MB object (numpy, 100 * 2**20 bytes) fetched from the other host:
          A->B  the driver on hostA puts it; a task on hostB gets it (timed in the task)
          B->A  a task on hostB puts it and returns the ref; the driver on hostA gets it
        and the same two on one host, for reference. MB/s (10**6 bytes), median of --reps;
        goal >= 1000 MB/s across hosts
  broadcast  a 100 MB array put by the driver on hostA, read by 10 tasks at once on hostB:
        wall time of the 10 tasks, the MB/s that makes for one transfer, and how many
        times hostB's object store pulled it (goal: once, at >= 1500 MB/s)

Everything a run starts is stopped by `rayipy stop` and then by killing whatever is left
in the namespaces, which are deleted at the end, whatever happens.

    sudo .venv/bin/python benchmarks/multihost.py            # 3 reps
    sudo .venv/bin/python benchmarks/multihost.py --reps 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

PASSWORD = "5241590000000000"

SEED_WORKLOAD = """
import json, socket, sys, time
from collections import Counter
import rayipy as ray
ray.init(address="auto")

@ray.remote
def f():
    time.sleep(0.001)
    # Return IP address.
    return socket.gethostbyname(socket.gethostname())

ray.get([f.remote() for _ in range(200)])      # warm up: workers started, function shipped
times, spread = [], {}
for _ in range(REPS):
    start = time.perf_counter()
    object_ids = [f.remote() for _ in range(10000)]
    ip_addresses = ray.get(object_ids)
    times.append(time.perf_counter() - start)
    spread = dict(Counter(ip_addresses))
print(json.dumps({"times": times, "spread": spread, "cpus": ray.cluster_resources()["CPU"]}))
"""

FETCH_WORKLOAD = """
import json, time
import numpy as np
import rayipy as ray
ray.init(address="auto")
SIZE = 100 * 2**20

@ray.remote(resources={"OTHER": 1})
def fetch(refs, size):
    start = time.perf_counter()
    value = ray.get(refs[0])
    took = time.perf_counter() - start
    assert value.nbytes == size
    return took

@ray.remote(resources={"OTHER": 1})
def make():
    return [ray.put(np.ones(SIZE, dtype=np.uint8))]

ray.get(fetch.remote([ray.put(np.ones(1, dtype=np.uint8))], 1))   # warm up
to_other, from_other = [], []
for _ in range(REPS):
    mine = ray.put(np.ones(SIZE, dtype=np.uint8))
    to_other.append(ray.get(fetch.remote([mine], SIZE)))
    del mine
    inner = ray.get(make.remote())[0]
    start = time.perf_counter()
    value = ray.get(inner)
    from_other.append(time.perf_counter() - start)
    assert value.nbytes == SIZE
    del value, inner
print(json.dumps({"to_other": to_other, "from_other": from_other}))
"""


BROADCAST_WORKLOAD = """
import json, time
import numpy as np
import rayipy as ray
from rayipy.core.object_ref import current_runtime
from rayipy.node.store_client import list_store
ray.init(address="auto")
SIZE = 100 * 2**20

@ray.remote(resources={"OTHER": 0.1})
def read(array):
    return float(array[::4096].sum())

def pulls_elsewhere():
    runtime = current_runtime()
    mine = runtime.access.store().address
    return sum(list_store(a, runtime.signer)[0]["pulled"]
               for a in runtime.request("stores") if a != mine)

ray.get(read.remote(np.ones(8)))       # warm up: the function is shipped
times, pulls = [], []
for _ in range(REPS):
    ref = ray.put(np.ones(SIZE, dtype=np.uint8))
    before = pulls_elsewhere()
    start = time.perf_counter()
    ray.get([read.remote(ref) for _ in range(10)])
    times.append(time.perf_counter() - start)
    pulls.append(pulls_elsewhere() - before)
    del ref
print(json.dumps({"times": times, "pulls": pulls}))
"""


class Host:
    def __init__(self, name: str, netns: str, ip: str, home: Path) -> None:
        self.name, self.netns, self.ip, self.home = name, netns, ip, home
        self.env = dict(os.environ, RAYIPY_HOME=str(home))
        self.env.pop("RAYIPY_ADDRESS", None)

    def run(self, *command: str, timeout: float = 600) -> subprocess.CompletedProcess:
        argv = ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c",
                'hostname "$0" && exec "$@"', self.name, *command]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                env=self.env, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)[:80]} on {self.name} failed:\n{result.stderr}")
        return result

    def rayipy(self, *args: str) -> None:
        self.run(sys.executable, "-m", "rayipy", *args, timeout=120)

    def driver(self, source: str, reps: int) -> dict:
        out = self.run(sys.executable, "-c", textwrap.dedent(source).replace("REPS", str(reps)))
        return json.loads(out.stdout.strip().splitlines()[-1])

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]


def make_hosts(root: Path) -> list[Host]:
    tag = uuid.uuid4().hex[:6]
    hosts = [Host(name, f"rb{tag}{i}", f"10.213.0.{i + 1}", root / name)
             for i, name in enumerate(("hostA", "hostB"))]
    hosts_file = "127.0.0.1 localhost\n" + "".join(f"{h.ip} {h.name}\n" for h in hosts)
    links = [f"{h.netns}v" for h in hosts]
    for host in hosts:
        subprocess.run(["ip", "netns", "add", host.netns], check=True)
        etc = Path("/etc/netns") / host.netns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(hosts_file)
    subprocess.run(["ip", "link", "add", links[0], "type", "veth", "peer", "name", links[1]], check=True)
    for host, link in zip(hosts, links):
        for args in (["link", "set", link, "netns", host.netns],
                     ["-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", link],
                     ["-n", host.netns, "link", "set", link, "up"],
                     ["-n", host.netns, "link", "set", "lo", "up"]):
            subprocess.run(["ip", *args], check=True)
    return hosts


def remove_hosts(hosts: list[Host]) -> None:
    for host in hosts:
        try:
            if (host.home / host.name / "cluster.json").exists():
                host.run(sys.executable, "-m", "rayipy", "stop", "--force", timeout=60)
        except Exception:
            pass
        for pid in host.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", host.netns])
        shutil.rmtree(Path("/etc/netns") / host.netns, ignore_errors=True)


def start(a: Host, b: Host | None, cpus_a: int, resources_b: str = "{}") -> None:
    a.rayipy("start", "--head", "--node-ip-address", a.ip, "--num-cpus", str(cpus_a),
             "--password", PASSWORD, *(() if b else ("--resources", '{"OTHER": 2}')))
    if b is not None:
        b.rayipy("start", f"--address={a.ip}:6379", "--password", PASSWORD, "--num-cpus", "1",
                 "--resources", resources_b)


def stop(*hosts: Host) -> None:
    for host in hosts:
        host.rayipy("stop")


def mbps(seconds: list[float]) -> float:
    return 100 * 2**20 / statistics.median(seconds) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("--only", choices=("seed", "fetch", "broadcast"),
                        help="run one of the two workloads (both by default)")
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print("multihost.py needs root and the `ip` command (iproute2)", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="rayipy-multihost-"))
    hosts = make_hosts(root)
    a, b = hosts
    results: dict = {}
    try:
        workloads = [(name, source) for name, source in
                     (("seed", SEED_WORKLOAD), ("fetch", FETCH_WORKLOAD),
                      ("broadcast", BROADCAST_WORKLOAD))
                     if args.only in (None, name)]
        start(a, b, 1, '{"OTHER": 2}')
        for name, source in workloads:
            results[f"{name}_two_hosts"] = a.driver(source, args.reps)
        stop(b, a)
        start(a, None, 2)
        for name, source in workloads:
            results[f"{name}_one_host"] = a.driver(source, args.reps)
        stop(a)
    finally:
        remove_hosts(hosts)
        shutil.rmtree(root, ignore_errors=True)

    rows = []
    if "seed_two_hosts" in results:
        two = statistics.median(results["seed_two_hosts"]["times"])
        one = statistics.median(results["seed_one_host"]["times"])
        rows += [
            ("seed program 3, 2 hosts x 1 CPU (s)", f"{two:.2f}",
             f"spread {results['seed_two_hosts']['spread']}"),
            ("seed program 3, 1 host x 2 CPUs (s)", f"{one:.2f}", f"ideal 5.0"),
            ("ratio two hosts / one host", f"{two / one:.2f}", "goal <= 1.3"),
        ]
    if "fetch_two_hosts" in results:
        fetch = [("A->B, across hosts", results["fetch_two_hosts"]["to_other"], "goal >= 1000"),
                 ("B->A, across hosts", results["fetch_two_hosts"]["from_other"], "goal >= 1000"),
                 ("same host, to a task", results["fetch_one_host"]["to_other"], "reference"),
                 ("same host, from a task", results["fetch_one_host"]["from_other"], "reference")]
        rows += [(f"100 MB {what} (MB/s)", f"{mbps(times):.0f}", note)
                 for what, times, note in fetch]
    if "broadcast_two_hosts" in results:
        two = results["broadcast_two_hosts"]
        one = results["broadcast_one_host"]
        rows += [
            ("100 MB put on hostA, read by 10 tasks on hostB at once (s)",
             f"{statistics.median(two['times']):.3f}",
             f"{mbps(two['times']):.0f} MB/s for one copy; pulls per run {two['pulls']}"),
            ("the same on one host (s)", f"{statistics.median(one['times']):.3f}",
             "reference: no transfer"),
        ]
    print(f"rayipy across hosts (network namespaces), median of {args.reps}\n")
    print("| figure | value | note |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
