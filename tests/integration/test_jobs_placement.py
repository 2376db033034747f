"""Jobs' entrypoint resources on a cluster of two nodes, and jobs on a local cluster.

Two "machines" on loopback (test_cli.py's `machines` fixture: each a rayipy directory
of its own, everything left killed at the end): the head's with 1 CPU, and one that
joins with 1 CPU and a custom resource. Scripts that must be seen running wait for a
flag file the test writes.
"""

from __future__ import annotations

import logging
import os
import signal
import textwrap

import pytest

import rayipy
from helpers import stop_cluster, wait_until
from rayipy.core.unschedulable import TIMEOUT_ENVIRONMENT
from rayipy.job import JobClient, JobStatus
from test_cli import machines, ok  # noqa: F401  (the fixture)

PASSWORD = "pw-place"

WAITING_SCRIPT = """
    import os, sys, time
    print("job runs in", os.environ["RAYIPY_HOME"], flush=True)
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.02)
    print("job done", flush=True)
"""


@pytest.fixture
def two_nodes(machines):  # noqa: F811
    a, b = machines(), machines()
    a.env[TIMEOUT_ENVIRONMENT] = "3"   # the head's: jobs no node could hold fail soon
    address = a.start_head("--num-cpus", "1", "--include-dashboard", "false", password=PASSWORD)
    b.env["RAYIPY_PASSWORD"] = PASSWORD
    ok(b.rayipy("start", f"--address={address}", "--num-cpus", "1", "--resources",
                '{"special": 2}'))
    client = JobClient(address, password=PASSWORD)
    try:
        wait_until(lambda: len(client._request("nodes")) == 2, timeout=30,
                   message="the second node to join")
        yield a, b, address, client
    finally:
        client.close()


def test_a_job_runs_on_the_node_with_its_resources_and_holds_them_while_it_runs(
        two_nodes, tmp_path):
    a, b, address, client = two_nodes
    script = tmp_path / "wait.py"
    script.write_text(textwrap.dedent(WAITING_SCRIPT))
    flag = tmp_path / "go"
    job = client.submit_job(entrypoint=f"python {script} {flag}", entrypoint_num_cpus=1,
                            entrypoint_resources={"special": 1})
    wait_until(lambda: client.get_job_status(job) is JobStatus.RUNNING, timeout=30)
    wait_until(lambda: "job runs in" in client.get_job_logs(job), timeout=30)
    assert f"job runs in {b.home}" in client.get_job_logs(job)     # B's node, not the head's
    info = client.get_job_info(job)
    assert info.driver_node_id == b.cluster_file()["node_id"]
    assert info.entrypoint_num_cpus == 1 and info.entrypoint_resources == {"special": 1}

    rayipy.init(address=address, password=PASSWORD)
    try:
        # B's only CPU is the job's: the cluster shows it taken, and a task that needs
        # it (special is only on B) waits, while one that fits the head's node runs.
        assert rayipy.available_resources().get("CPU") == 1.0

        @rayipy.remote(num_cpus=1, resources={"special": 1})
        def on_b() -> str:
            return os.environ["RAYIPY_HOME"]

        @rayipy.remote(num_cpus=1)
        def anywhere() -> int:
            return 1

        held_back = on_b.remote()
        assert rayipy.get(anywhere.remote(), timeout=30) == 1
        ready, _ = rayipy.wait([held_back], timeout=1.5)
        assert ready == [], "a task took the CPU the job holds"
        # A second job asking for the same waits for the first, PENDING, saying why.
        second = client.submit_job(entrypoint="echo second", entrypoint_num_cpus=1,
                                   entrypoint_resources={"special": 1})
        info = client.get_job_info(second)
        assert info.status is JobStatus.PENDING and info.driver_node_id == ""
        assert "waiting for a node with CPU=1, special=1 free" in info.message
        # The first ends: its CPU goes to the waiting job first, then to the task.
        flag.write_text("")
        wait_until(lambda: client.get_job_status(job) is JobStatus.SUCCEEDED, timeout=30)
        wait_until(lambda: client.get_job_status(second) is JobStatus.SUCCEEDED, timeout=30)
        assert client.get_job_logs(second) == "second\n"
        assert client.get_job_info(second).driver_node_id == b.cluster_file()["node_id"]
        assert rayipy.get(held_back, timeout=30) == str(b.home)
        wait_until(lambda: rayipy.available_resources().get("CPU") == 2.0, timeout=10,
                   message="both CPUs free once the jobs ended")
    finally:
        stop_cluster()


def test_a_job_no_node_could_hold_fails_after_the_timeout_and_bad_requests_say_why(
        two_nodes, tmp_path, caplog):
    a, b, address, client = two_nodes
    # From the command line, with Ray's option names.
    out = ok(b.rayipy("job", "submit", "--address", address, "--no-wait",
                      "--entrypoint-resources", '{"nowhere": 1}', "--", "true"))
    job = out.split("'")[1]
    info = client.get_job_info(job)
    assert info.status is JobStatus.PENDING
    assert "no live node has nowhere=1 (the largest live node has 0)" in info.message
    wait_until(lambda: client.get_job_status(job) is JobStatus.FAILED, timeout=30)
    message = client.get_job_info(job).message
    assert f"job '{job}' asks for nowhere=1" in message and "Add a node" in message
    # Shipping a directory, submit_job serves it until the job has it: here, until the
    # job fails, having never found a node (it says why it waits, once).
    directory = tmp_path / "wd"
    directory.mkdir()
    (directory / "x.py").write_text("")
    with caplog.at_level(logging.WARNING, logger="rayipy.job"):
        shipped = client.submit_job(entrypoint="python x.py", entrypoint_num_gpus=1,
                                    runtime_env={"working_dir": str(directory)})
    assert client.get_job_status(shipped) is JobStatus.FAILED
    assert f"job {shipped} waits for a node" in caplog.text and "GPU=1" in caplog.text
    # A job waiting for a node can be stopped at once (no agent has it).
    waiting = client.submit_job(entrypoint="true", entrypoint_num_cpus=2)
    assert client.get_job_status(waiting) is JobStatus.PENDING
    assert client.stop_job(waiting) is True
    assert client.get_job_status(waiting) is JobStatus.STOPPED
    with pytest.raises(ValueError, match="entrypoint_num_gpus must be a number >= 0"):
        client.submit_job(entrypoint="true", entrypoint_num_gpus=-1)
    with pytest.raises(ValueError, match="use entrypoint_num_cpus="):
        client.submit_job(entrypoint="true", entrypoint_resources={"CPU": 1})
    with pytest.raises(ValueError, match="rayipy nodes have no labels"):
        client.submit_job(entrypoint="true", entrypoint_label_selector={"zone": "a"})
    bad = b.rayipy("job", "submit", "--address", address, "--entrypoint-resources", "[1]",
                   "--", "true")
    assert bad.returncode == 1 and "--entrypoint-resources must be a JSON object" in bad.stderr


LOCAL_PROGRAM = """
    import subprocess, sys
    import rayipy
    from rayipy.job import JobClient

    ctx = rayipy.init(num_cpus=1)
    entrypoint = ("python -c \\"import rayipy; rayipy.init(); "
                  "f = rayipy.remote(lambda: 6 * 7); print('answer', rayipy.get(f.remote()))\\"")
    with JobClient() as client:                 # this process's local cluster
        job = client.submit_job(entrypoint=entrypoint)
        for text in client.tail_job_logs(job):
            print(text, end="")
        print("status", client.get_job_info(job).status)
    with JobClient("http://" + ctx.dashboard_url) as by_url:   # Ray's habit: the dashboard
        print("by url", by_url.address == ctx.address, by_url.list_jobs()[0].status)
    # Another process has no key for it: the error says what to do.
    other = subprocess.run([sys.executable, "-c", "from rayipy.job import JobClient; "
                            f"JobClient({ctx.address_info['address']!r})"],
                           capture_output=True, text=True)
    print("other", other.returncode, other.stderr.strip().splitlines()[-1])
    rayipy.shutdown()
"""


def test_a_local_cluster_takes_jobs_from_the_process_that_started_it(machines):  # noqa: F811
    machine = machines()
    out = ok(machine.python(LOCAL_PROGRAM, timeout=120))
    assert "answer 42" in out and "status SUCCEEDED" in out, out
    assert "by url True SUCCEEDED" in out
    other = next(line for line in out.splitlines() if line.startswith("other"))
    assert other.startswith("other 1") and "local cluster that rayipy.init() started" in other
    assert "make the JobClient there" in other


def test_a_restarted_head_holds_a_running_jobs_resources_again(machines, tmp_path):  # noqa: F811
    machine = machines()
    address = machine.start_head("--num-cpus", "2", "--include-dashboard", "false",
                                 password=PASSWORD)
    script = tmp_path / "wait.py"
    script.write_text(textwrap.dedent(WAITING_SCRIPT))
    flag = tmp_path / "go"
    with JobClient(address, password=PASSWORD) as client:
        job = client.submit_job(entrypoint=f"python {script} {flag}", entrypoint_num_cpus=1)
        wait_until(lambda: client.get_job_status(job) is JobStatus.RUNNING, timeout=30)
        assert client._request("available_resources")["CPU"] == 1.0
    old = next(p["pid"] for p in machine.cluster_file()["processes"] if p["role"] == "head")
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: not os.path.exists(f"/proc/{old}"), 10)
    assert "restarted it from its journal" in ok(machine.rayipy(
        "start", "--head", "--num-cpus", "2", "--include-dashboard", "false"))
    address = machine.cluster_file()["address"]
    with JobClient(address, password=PASSWORD) as client:
        # The job lived on; once its node is back, its CPU is held again.
        wait_until(lambda: client._request("available_resources").get("CPU") == 1.0,
                   timeout=30, message="the job's CPU held again after the restart")
        assert client.get_job_status(job) is JobStatus.RUNNING
        flag.write_text("")
        wait_until(lambda: client.get_job_status(job) is JobStatus.SUCCEEDED, timeout=30)
        wait_until(lambda: client._request("available_resources").get("CPU") == 2.0,
                   timeout=10, message="the CPU given back when the job ended")
