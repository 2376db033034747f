"""``SSHCluster.adapt``: a burst of tasks grows the cluster from 1 to 3 hosts over ssh,
and it shrinks back to 1 once idle (issue 16, Autoscaling).

Three netns hosts, each with a real ``sshd``. The driver (a notebook's place) runs on
hostA and starts the cluster there with ``initial=1``: hostB and hostC are spare. Twelve
tasks of 2 s, each needing one CPU of the one-CPU hosts, wait at the head for more than
``wait_s``; the adapt thread starts both spare hosts, which take work. Once idle for
``idle_s``, they are retired (``rayipy stop`` over ssh) and no rayipy process is left on
them, while the head's host keeps running.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from helpers import wait_until
from test_ssh_launcher import REPO, rayipy_processes, ssh_hosts  # noqa: F401 (a fixture)

pytestmark = pytest.mark.timeout(150)

DRIVER = """
import json, sys, time
import rayipy
from rayipy.cluster import SSHCluster

cluster = SSHCluster(["hostA", "hostB", "hostC"], num_cpus=1, initial=1,
                     ssh_options=["-F", {config!r}])
try:
    rayipy.init(address=cluster.address, password=cluster.password)

    def live():
        return sum(1 for n in rayipy.nodes() if n["Alive"])

    print("START", live(), flush=True)
    cluster.adapt(minimum=1, maximum=3, wait_s=1.0, idle_s=3.0)

    @rayipy.remote(num_cpus=1)
    def work(i):
        import socket, time
        time.sleep(2)
        return socket.gethostname()

    began = time.monotonic()
    refs = [work.remote(i) for i in range(12)]
    peak, targets = live(), set()
    while True:
        done, pending = rayipy.wait(refs, num_returns=len(refs), timeout=0.25)
        peak = max(peak, live())
        targets.add(cluster.adapt_status()["target"])
        if not pending:
            break
    ran_on = sorted(set(rayipy.get(refs)))
    print("BURST", json.dumps({{"peak": peak, "hosts": ran_on, "targets": sorted(targets),
                               "seconds": time.monotonic() - began}}), flush=True)
    deadline = time.monotonic() + 45
    # the head sees the nodes leave before each `rayipy stop` has returned, and the
    # adapt thread's figures are those of its last look (once a second)
    while ((live() > 1 or len(cluster.started) > 1 or cluster.adapt_status()["current"] > 1)
           and time.monotonic() < deadline):
        time.sleep(0.2)
    from rayipy.jupyter import cluster as magic, lab
    print("SHRUNK", json.dumps({{"live": live(), "status": cluster.adapt_status(),
                                "started": cluster.started, "sidebar": lab.status()["adapt"],
                                "magic": repr(magic.status({{}}))}}), flush=True)
    sys.stdin.readline()          # the test looks at the hosts, then says go on
finally:
    rayipy.shutdown()
    cluster.close()
print("CLOSED", flush=True)
"""


def test_a_burst_grows_the_cluster_from_1_to_3_hosts_and_it_shrinks_back_when_idle(ssh_hosts):
    hosts, servers = ssh_hosts
    hostA, hostB, hostC = hosts
    began = time.monotonic()
    driver = subprocess.Popen(
        hostA.argv(sys.executable, "-c", DRIVER.format(config=str(servers.config))),
        env=dict(hostA.env, PYTHONPATH=str(REPO)), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def line(prefix: str) -> str:
            text = driver.stdout.readline()
            assert text.startswith(prefix), f"{text}{driver.stderr.read()}"
            return text[len(prefix):].strip()

        assert line("START").strip() == "1"
        burst = json.loads(line("BURST"))
        assert burst["peak"] == 3, burst
        assert burst["hosts"] == ["hostA", "hostB", "hostC"], burst
        assert 3 in burst["targets"], burst
        shrunk = json.loads(line("SHRUNK"))
        assert shrunk["live"] == 1, shrunk
        assert shrunk["started"] == ["hostA"], shrunk
        assert shrunk["status"]["current"] == 1 and shrunk["status"]["target"] == 1, shrunk
        assert shrunk["status"]["adapting"] and shrunk["status"]["error"] == "", shrunk
        assert shrunk["sidebar"] == shrunk["status"], shrunk          # the JupyterLab sidebar's
        assert "Adapting: 1 node(s) now, target 1 (1 to 3)" in shrunk["magic"], shrunk  # %cluster status
        # retired for real: nothing of rayipy left on hostB and hostC, the head still runs
        wait_until(lambda: not rayipy_processes([hostB, hostC]), timeout=20,
                   message=f"left on retired hosts: {rayipy_processes([hostB, hostC])}")
        assert any("rayipy.node.head" in p for p in rayipy_processes([hostA])), \
            f"the head stopped: {rayipy_processes([hostA])}"
        assert time.monotonic() - began < 90, time.monotonic() - began
        driver.stdin.write("go on\n")
        driver.stdin.flush()
        assert line("CLOSED") == ""
        assert driver.wait(30) == 0, driver.stderr.read()
        wait_until(lambda: not rayipy_processes(hosts), timeout=20,
                   message=f"rayipy processes left after close(): {rayipy_processes(hosts)}")
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(10)
