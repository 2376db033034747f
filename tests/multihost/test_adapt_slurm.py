"""``SlurmCluster.adapt``: a burst of tasks grows the cluster from 1 node to 3 by
submitting one-node Slurm jobs, and it shrinks back to 1 once idle by ``scancel`` of
those jobs (issue 16, Autoscaling on Slurm).

A real Slurm (``slurm_daemons.py``): slurmctld on hostA, one slurmd of 1 CPU on each of
three netns hosts, munged. The driver (a login node's place) runs on hostA and submits
``SlurmCluster(nodes=1, cpus_per_node=1)``: one job, one node, the head's. Twelve tasks
of 2 s wait at the head for more than ``wait_s``; the adapt thread submits two more jobs
(``sbatch``, one node each), whose agents join; once idle for ``idle_s`` their jobs are
cancelled, the head's job runs on, and ``squeue`` lists only it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from helpers import wait_until
from test_slurm_launcher import REPO, slurm  # noqa: F401 (a fixture)
from test_ssh_launcher import rayipy_processes

pytestmark = pytest.mark.timeout(240)

DRIVER = """
import json, sys, time
import rayipy
from rayipy.cluster import SlurmCluster

cluster = SlurmCluster(nodes=1, cpus_per_node=1, time="10:00", shared_dir={shared!r})
try:
    rayipy.init(address=cluster.address, password=cluster.password)

    def live():
        return sum(1 for n in rayipy.nodes() if n["Alive"])

    print("START", json.dumps({{"live": live(), "job": cluster.job_id}}), flush=True)
    cluster.adapt(minimum=1, maximum=3, wait_s=1.0, idle_s=3.0)

    @rayipy.remote(num_cpus=1)
    def work(i):
        import socket, time
        time.sleep(2)
        return socket.gethostname()

    began = time.monotonic()
    refs = [work.remote(i) for i in range(12)]
    peak, targets, jobs = live(), set(), set()
    while True:
        done, pending = rayipy.wait(refs, num_returns=len(refs), timeout=0.25)
        peak = max(peak, live())
        targets.add(cluster.adapt_status()["target"])
        jobs.update(cluster.node_jobs)
        if not pending:
            break
    ran_on = sorted(set(rayipy.get(refs)))
    print("BURST", json.dumps({{"peak": peak, "hosts": ran_on, "targets": sorted(targets),
                               "jobs": sorted(jobs), "seconds": time.monotonic() - began}}),
          flush=True)
    deadline = time.monotonic() + 60
    while ((live() > 1 or cluster.node_jobs or cluster.adapt_status()["current"] > 1)
           and time.monotonic() < deadline):
        time.sleep(0.2)
    from rayipy.jupyter import cluster as magic, lab
    print("SHRUNK", json.dumps({{"live": live(), "status": cluster.adapt_status(),
                                "node_jobs": cluster.node_jobs, "sidebar": lab.status()["adapt"],
                                "magic": repr(magic.status({{}}))}}), flush=True)
    sys.stdin.readline()          # the test looks at Slurm and the hosts, then says go on
finally:
    rayipy.shutdown()
    cluster.close()
print("CLOSED", cluster.state(), flush=True)
"""


def squeue(daemons, host) -> dict[str, str]:
    out = daemons.run(host, "squeue", "--noheader", "--format=%i %T").stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def test_a_burst_grows_the_slurm_cluster_by_jobs_and_it_shrinks_back_by_scancel(slurm, tmp_path):
    hosts, daemons = slurm
    hostA = hosts[0]
    began = time.monotonic()
    driver = subprocess.Popen(
        hostA.argv(sys.executable, "-c", DRIVER.format(shared=str(tmp_path / "shared"))),
        env=dict(hostA.env, PYTHONPATH=str(REPO), **daemons.env), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def line(prefix: str) -> str:
            text = driver.stdout.readline()
            assert text.startswith(prefix), f"{text}{driver.stderr.read()}\n{daemons.logs()}"
            return text[len(prefix):].strip()

        start = json.loads(line("START"))
        assert start["live"] == 1, start
        head_job = start["job"]
        burst = json.loads(line("BURST"))
        assert burst["peak"] == 3, burst
        assert burst["hosts"] == sorted(h.name for h in hosts), burst
        assert 3 in burst["targets"], burst
        assert len(burst["jobs"]) == 2 and head_job not in burst["jobs"], burst   # one job a node
        shrunk = json.loads(line("SHRUNK"))
        assert shrunk["live"] == 1 and shrunk["node_jobs"] == {}, shrunk
        assert shrunk["status"]["current"] == 1 and shrunk["status"]["target"] == 1, shrunk
        assert shrunk["status"]["adapting"] and shrunk["status"]["error"] == "", shrunk
        assert shrunk["sidebar"] == shrunk["status"], shrunk           # the JupyterLab sidebar's
        assert "Adapting: 1 node(s) now, target 1 (1 to 3)" in shrunk["magic"], shrunk
        # Slurm's view: the added jobs were cancelled, the head's job still runs
        for job in burst["jobs"]:
            state = daemons.run(hostA, "scontrol", "show", "job", job).stdout
            assert "JobState=CANCELLED" in state, state
        assert squeue(daemons, hostA) == {head_job: "RUNNING"}
        head_host = [h for h in hosts
                     if any("rayipy.node.head" in p for p in rayipy_processes([h]))]
        assert len(head_host) == 1, rayipy_processes(hosts)
        others = [h for h in hosts if h is not head_host[0]]
        def left_on_retired() -> list[str]:   # the driver (`python -c`) may run on one
            return [p for p in rayipy_processes(others) if "SlurmCluster(" not in p]
        wait_until(lambda: not left_on_retired(), timeout=30,
                   message=f"left on retired hosts: {left_on_retired()}")
        assert time.monotonic() - began < 150, time.monotonic() - began
        driver.stdin.write("go on\n")
        driver.stdin.flush()
        assert line("CLOSED") == "CANCELLED"
        assert driver.wait(30) == 0, driver.stderr.read()
        wait_until(lambda: squeue(daemons, hostA) == {}, timeout=30)
        wait_until(lambda: not rayipy_processes(hosts), timeout=30,
                   message=f"rayipy processes left after close(): {rayipy_processes(hosts)}")
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(10)
        subprocess.run(hostA.argv("scancel", "--name=rayipy"), env=dict(hostA.env, **daemons.env),
                       capture_output=True, timeout=30)
