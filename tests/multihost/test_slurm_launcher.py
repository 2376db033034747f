"""``SlurmCluster`` against a real Slurm: slurmctld on hostA, a slurmd on each of three
netns hosts, munged, all configured and started by the test (``slurm_daemons.py``).

The driver runs on hostA (a login node's place) and submits the cluster with
``sbatch``; the seed's third program runs on it with ``init(address=...)`` as its only
change, with tasks on all three nodes. Then ``close()`` (``scancel``), or a ``scancel``
typed by hand, must end the job and leave no rayipy process on any host.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import wait_until
from slurm_daemons import SlurmDaemons, slurm_unavailable
from test_ssh_launcher import rayipy_processes, seed_program

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def slurm(three_hosts, tmp_path):
    why = slurm_unavailable()
    if why:
        pytest.skip(f"the Slurm launcher tests need Slurm and munge: {why}")
    daemons = SlurmDaemons(three_hosts, tmp_path / "slurm")
    try:
        daemons.start()
        yield three_hosts, daemons
    finally:
        daemons.stop()


DRIVER = """
import sys
from rayipy.cluster import SlurmCluster
cluster = SlurmCluster(nodes=3, cpus_per_node=1, time="10:00", shared_dir={shared!r})
print("ADDRESS", cluster.address, cluster.job_id, cluster.password, flush=True)
print("NODES", cluster.wait_for_nodes(3, timeout=60), flush=True)
if sys.stdin.readline().strip() == "close":
    cluster.close()
    print("CLOSED", cluster.state(), flush=True)
else:   # the job was cancelled by hand: close() finds it ended and does nothing more
    cluster.close()
    print("CLOSED", cluster.state(), flush=True)
"""


def start_driver(hostA, daemons, shared: Path) -> subprocess.Popen:
    return subprocess.Popen(hostA.argv(sys.executable, "-c", DRIVER.format(shared=str(shared))),
                            env=dict(hostA.env, PYTHONPATH=str(REPO), **daemons.env),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def read_started(driver: subprocess.Popen) -> tuple[str, str, str]:
    line = driver.stdout.readline()
    assert line.startswith("ADDRESS "), line + driver.stderr.read()
    _, address, job_id, password = line.split()
    nodes = driver.stdout.readline()
    assert nodes.strip() == "NODES 3", nodes + driver.stderr.read()
    return address, job_id, password


def job_state(daemons, host, job_id: str) -> str:
    out = daemons.run(host, "scontrol", "show", "job", job_id).stdout
    return next((w.split("=", 1)[1] for w in out.split() if w.startswith("JobState=")), "")


def test_seed_program_runs_on_a_slurm_job_and_close_cancels_it(slurm, tmp_path):
    hosts, daemons = slurm
    hostA = hosts[0]
    driver = start_driver(hostA, daemons, tmp_path / "shared")
    try:
        address, job_id, password = read_started(driver)
        assert job_state(daemons, hostA, job_id) == "RUNNING"
        seed = tmp_path / "seed.py"
        seed.write_text(seed_program(address))
        run = subprocess.run(hostA.argv(sys.executable, str(seed)), capture_output=True, text=True,
                             timeout=180, env=dict(hostA.env, RAYIPY_PASSWORD=password,
                                                   PYTHONPATH=str(REPO)))
        assert run.returncode == 0, run.stdout + run.stderr
        assert "3 nodes in total" in run.stdout, run.stdout
        counts = {ip: int(n) for n, ip in re.findall(r"(\d+) tasks on (\S+)", run.stdout)}
        assert sum(counts.values()) == 10000 and set(counts) == {h.ip for h in hosts}, run.stdout
        driver.stdin.write("close\n")
        driver.stdin.flush()
        closed = driver.stdout.readline().split()
        assert closed == ["CLOSED", "CANCELLED"], f"{closed} {driver.stderr.read()}"
        assert driver.wait(30) == 0, driver.stderr.read()
        wait_until(lambda: not rayipy_processes(hosts), timeout=30,
                   message=f"rayipy processes left after close(): {rayipy_processes(hosts)}")
        password_files = list((tmp_path / "shared").glob("*/password"))
        assert password_files == [], password_files
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(10)


def test_scancel_by_hand_stops_the_cluster(slurm, tmp_path):
    hosts, daemons = slurm
    hostA = hosts[0]
    driver = start_driver(hostA, daemons, tmp_path / "shared")
    try:
        address, job_id, _ = read_started(driver)
        assert rayipy_processes(hosts)
        cancelled = daemons.run(hostA, "scancel", job_id)
        assert cancelled.returncode == 0, cancelled.stderr
        # Every rayipy process on every host ends, except the driver (which only waits).
        wait_until(lambda: [p for p in rayipy_processes(hosts) if p.split()[1] != str(driver.pid)]
                   == [], timeout=60, interval=0.2,
                   message=f"rayipy processes left after scancel: {rayipy_processes(hosts)}")
        wait_until(lambda: job_state(daemons, hostA, job_id) == "CANCELLED", timeout=30)
        driver.stdin.write("done\n")
        driver.stdin.flush()
        assert driver.stdout.readline().split() == ["CLOSED", "CANCELLED"]
        assert driver.wait(30) == 0, driver.stderr.read()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(10)
