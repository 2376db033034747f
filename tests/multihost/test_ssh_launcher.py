"""``SSHCluster`` on three netns hosts, each running a real ``sshd`` with keys made here.

The driver (a notebook's place) runs on hostA and launches the cluster over ssh on
hostA (head), hostB and hostC; the seed's third program then runs on it with
``init(address=...)`` as its only change. All the while, ``ps`` is read over and over
(the hosts share this machine's process table) and must never show the password.
``close()`` must leave no rayipy process on any host.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from helpers import wait_until
from sshd import SSHServers, sshd_unavailable

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def ssh_hosts(three_hosts, tmp_path):
    why = sshd_unavailable()
    if why:
        pytest.skip(f"the SSH launcher tests need OpenSSH's server: {why}")
    servers = SSHServers(three_hosts, tmp_path / "ssh")
    try:
        servers.start()
        yield three_hosts, servers
    finally:
        servers.stop()


class PsWatch:
    """Reads ``ps`` (every process's full command line) until stopped; keeps the lines
    that contain ``secret``."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.seen: list[str] = []
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(["ps", "-A", "-ww", "-o", "pid=,args="], capture_output=True,
                                 text=True).stdout
            self.seen += [line for line in out.splitlines() if self.secret in line]
            self.reads += 1
            self._stop.wait(0.05)

    def __enter__(self) -> "PsWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def rayipy_processes(hosts) -> list[str]:
    """rayipy's processes (``-m rayipy``, its node and launcher modules) on ``hosts``."""
    found = []
    for host in hosts:
        for pid in host.pids():
            try:
                args = " ".join(psutil.Process(pid).cmdline())
            except psutil.NoSuchProcess:
                continue
            if re.search(r"-m rayipy\b|rayipy\.(node|cluster)", args):
                found.append(f"{host.name}: {pid} {args}")
    return found


DRIVER = """
import os, sys
from rayipy.cluster import SSHCluster
cluster = SSHCluster(["hostA", "hostB", "hostC"], num_cpus=1, password=os.environ["TEST_PW"],
                     ssh_options=["-F", {config!r}])
print("ADDRESS", cluster.address, flush=True)
sys.stdin.readline()          # the test says when to stop
cluster.close()
print("CLOSED", flush=True)
"""


def seed_program(address: str) -> str:
    """examples/seed_cluster.py with its ``init`` given this cluster's address, nothing else."""
    source = (REPO / "examples" / "seed_cluster.py").read_text()
    changed, count = re.subn(r"^ray\.init\(.*\)$", f"ray.init(address={address!r})", source,
                             flags=re.MULTILINE)
    assert count == 1
    return changed


def test_seed_program_runs_on_an_ssh_launched_cluster(ssh_hosts, tmp_path):
    hosts, servers = ssh_hosts
    hostA = hosts[0]
    password = os.urandom(16).hex()
    driver = subprocess.Popen(
        hostA.argv(sys.executable, "-c", DRIVER.format(config=str(servers.config))),
        env=dict(hostA.env, TEST_PW=password, PYTHONPATH=str(REPO)), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with PsWatch(password) as watch:
            first = driver.stdout.readline()
            assert first.startswith("ADDRESS "), f"{first}{driver.stderr.read()}"
            address = first.split()[1]
            assert address.startswith("10.213.0.1:"), address
            seed = tmp_path / "seed.py"
            seed.write_text(seed_program(address))
            run = subprocess.run(hostA.argv(sys.executable, str(seed)), capture_output=True,
                                 text=True, timeout=180,
                                 env=dict(hostA.env, RAYIPY_PASSWORD=password,
                                          PYTHONPATH=str(REPO)))
            assert run.returncode == 0, run.stdout + run.stderr
            assert "3 nodes in total" in run.stdout, run.stdout
            assert "3.0 CPU resources in total" in run.stdout, run.stdout
            counts = {ip: int(n) for n, ip in re.findall(r"(\d+) tasks on (\S+)", run.stdout)}
            assert sum(counts.values()) == 10000, run.stdout
            assert set(counts) == {h.ip for h in hosts}, run.stdout
            driver.stdin.write("stop\n")
            driver.stdin.flush()
            assert driver.stdout.readline().strip() == "CLOSED", driver.stderr.read()
        assert watch.reads >= 5
        assert watch.seen == [], f"the password shows in ps: {watch.seen}"
        assert driver.wait(30) == 0, driver.stderr.read()
        wait_until(lambda: not rayipy_processes(hosts), timeout=20,
                   message=f"rayipy processes left after close(): {rayipy_processes(hosts)}")
        for host in hosts:
            assert not (host.home / host.name / "cluster.json").exists(), host.name
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(10)


def test_a_host_that_refuses_the_key_fails_clearly_and_the_others_are_stopped(ssh_hosts):
    hosts, servers = ssh_hosts
    hostA = hosts[0]
    script = """
import json
from rayipy import exceptions
from rayipy.cluster import SSHCluster
try:
    SSHCluster(["hostA", "hostB", "nosuchuser@hostC"], num_cpus=1,
               ssh_options=["-F", {config!r}])
except exceptions.ClusterLaunchError as e:
    print(json.dumps(str(e)))
""".format(config=str(servers.config))
    result = subprocess.run(hostA.argv(sys.executable, "-c", script), capture_output=True,
                            text=True, timeout=180, env=dict(hostA.env, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr
    message = json.loads(result.stdout.strip().splitlines()[-1])
    assert "nosuchuser@hostC" in message and "ssh could not run it" in message, message
    # hostA and hostB had started: the failed launch stopped them again.
    wait_until(lambda: not rayipy_processes(hosts), timeout=20,
               message=f"rayipy processes left after a failed launch: {rayipy_processes(hosts)}")


def test_rayipy_up_and_down_with_a_cluster_file(ssh_hosts, tmp_path):
    hosts, servers = ssh_hosts
    hostA = hosts[0]
    spec = tmp_path / "lab.json"
    spec.write_text(json.dumps({"provider": "ssh", "hosts": ["hostA", "hostB"], "num_cpus": 1,
                                "ssh_options": ["-F", str(servers.config)]}))
    env = dict(hostA.env, PYTHONPATH=str(REPO))
    up = subprocess.run(hostA.argv(sys.executable, "-m", "rayipy", "up", str(spec)),
                        capture_output=True, text=True, timeout=180, env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    address = re.search(r"head at (\S+)\.", up.stdout).group(1)
    password = re.search(r"password: (\S+)", up.stdout).group(1)
    again = subprocess.run(hostA.argv(sys.executable, "-m", "rayipy", "up", str(spec)),
                           capture_output=True, text=True, timeout=60, env=env)
    assert again.returncode == 1 and "already up" in again.stderr, again.stderr
    nodes = subprocess.run(
        hostA.argv(sys.executable, "-c", f"import rayipy; rayipy.init(address={address!r}); "
                   f"print(len(rayipy.nodes()))"),
        capture_output=True, text=True, timeout=60, env=dict(env, RAYIPY_PASSWORD=password))
    assert nodes.stdout.strip() == "2", nodes.stdout + nodes.stderr
    down = subprocess.run(hostA.argv(sys.executable, "-m", "rayipy", "down", str(spec)),
                          capture_output=True, text=True, timeout=120, env=env)
    assert down.returncode == 0 and "is down" in down.stdout, down.stdout + down.stderr
    wait_until(lambda: not rayipy_processes(hosts), timeout=20,
               message=f"rayipy processes left after down: {rayipy_processes(hosts)}")
    twice = subprocess.run(hostA.argv(sys.executable, "-m", "rayipy", "down", str(spec)),
                           capture_output=True, text=True, timeout=60, env=env)
    assert twice.returncode == 1 and "no cluster 'lab' is up" in twice.stderr, twice.stderr


MAGIC = """
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "rayipy")
ctx = shell.run_line_magic("cluster", "start --ssh hostA,hostB,hostC -n 1 --ssh-config {config}")
import rayipy
@rayipy.remote
def where():
    import socket
    return socket.gethostbyname(socket.gethostname())
spread = where.options(scheduling_strategy="SPREAD")   # every host, whatever its speed
print("NODES", len(rayipy.nodes()), sorted(set(rayipy.get([spread.remote() for _ in range(60)]))))
shell.run_line_magic("cluster", "stop")
"""


def test_cluster_magic_starts_over_ssh_and_stop_frees_the_hosts(ssh_hosts):
    hosts, servers = ssh_hosts
    hostA = hosts[0]
    result = subprocess.run(hostA.argv(sys.executable, "-c", MAGIC.format(config=servers.config)),
                            capture_output=True, text=True, timeout=180,
                            env=dict(hostA.env, PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NODES 3 ['10.213.0.1', '10.213.0.2', '10.213.0.3']" in result.stdout, result.stdout
    assert "Stopped the ssh cluster at 10.213.0.1:" in result.stdout, result.stdout
    wait_until(lambda: not rayipy_processes(hosts), timeout=20,
               message=f"rayipy processes left after %cluster stop: {rayipy_processes(hosts)}")
