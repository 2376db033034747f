"""Jobs (`rayipy job`, rayipy.job.JobClient) on a cluster that `rayipy start` started.

The cluster runs in a rayipy directory of its own (test_cli.py's `machines` fixture, which
kills whatever is left, jobs included: they inherit its $RAYIPY_HOME). Scripts that must
be seen running wait for a flag file the test writes, so no step depends on a sleep.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from helpers import wait_until
from rayipy.job import JobClient, JobStatus
from test_cli import machines, ok  # noqa: F401  (the fixture)

PASSWORD = "pw-one"

TASKS_SCRIPT = """
    import os, sys, time
    import rayipy
    from helper_module import square      # shipped in the working directory
    rayipy.init()
    print("job says hello", flush=True)
    print("squares", rayipy.get([square.remote(i) for i in range(4)]), flush=True)
    flag = sys.argv[1] if len(sys.argv) > 1 else ""
    while flag and not os.path.exists(flag):
        time.sleep(0.02)
    print("job done", flush=True)
"""

HELPER_MODULE = """
    import rayipy

    @rayipy.remote
    def square(x):
        return x * x
"""

LONG_SCRIPT = """
    import os, time
    import rayipy
    rayipy.init()

    @rayipy.remote
    class Keeper:
        def pid(self):
            return os.getpid()

    @rayipy.remote
    def forever():
        time.sleep(3600)

    keeper = Keeper.remote()
    print("actor pid", rayipy.get(keeper.pid.remote()), flush=True)
    running = forever.remote()
    time.sleep(3600)
"""


def working_dir(tmp_path: Path, **files: str) -> Path:
    directory = tmp_path / "wd"
    directory.mkdir(exist_ok=True)
    for name, source in files.items():
        (directory / name).write_text(textwrap.dedent(source))
    return directory


@pytest.fixture
def head(machines):  # noqa: F811
    machine = machines()
    address = machine.start_head("--num-cpus", "2", "--include-dashboard", "false",
                                 password=PASSWORD)
    client = JobClient(address, password=PASSWORD)
    try:
        yield machine, address, client
    finally:
        client.close()


def statuses_until_done(client: JobClient, job_id: str, timeout: float = 60.0,
                        on_status=None) -> list[JobStatus]:
    """The distinct states the job passes through, in order, until it ends."""
    seen: list[JobStatus] = []

    def ended() -> bool:
        status = client.get_job_status(job_id)
        if not seen or seen[-1] is not status:
            seen.append(status)
            if on_status is not None:
                on_status(status)
        return status.is_terminal()

    wait_until(ended, timeout=timeout, interval=0.02, message=f"job {job_id} to end: {seen}")
    return seen


def test_a_submitted_job_runs_tasks_outlives_its_client_and_shows_its_output(head, tmp_path):
    machine, address, client = head
    directory = working_dir(tmp_path, **{"script.py": TASKS_SCRIPT,
                                         "helper_module.py": HELPER_MODULE})
    flag = tmp_path / "go"
    # The client is a separate process that exits at once (--no-wait).
    out = ok(machine.rayipy("job", "submit", "--address", address, "--working-dir",
                            str(directory), "--submission-id", "squares", "--no-wait", "--",
                            "python", "script.py", str(flag)))
    assert "Job 'squares' submitted successfully" in out
    # Its client has exited; the job runs on, and ends once we let it.
    wait_until(lambda: client.get_job_status("squares") is JobStatus.RUNNING, timeout=30)
    wait_until(lambda: "squares [0, 1, 4, 9]" in client.get_job_logs("squares"), timeout=30)
    flag.write_text("")
    assert statuses_until_done(client, "squares")[-1] is JobStatus.SUCCEEDED
    logs = client.get_job_logs("squares")
    assert "job says hello" in logs and "job done" in logs
    info = client.get_job_info("squares")
    assert info.driver_exit_code == 0 and info.end_time >= info.start_time
    # The command line sees the same (the key from this machine's connection file).
    assert "job done" in ok(machine.rayipy("job", "logs", "squares"))
    assert "SUCCEEDED" in ok(machine.rayipy("job", "status", "squares"))


def test_status_goes_pending_running_succeeded_and_logs_follow(head, tmp_path):
    machine, address, client = head
    directory = working_dir(tmp_path, **{"script.py": TASKS_SCRIPT,
                                         "helper_module.py": HELPER_MODULE})
    flag = tmp_path / "go"
    # No working dir to ship: submit_job returns at once, the job still PENDING.
    job_id = client.submit_job(entrypoint=f"cd {directory} && python script.py {flag}",
                               metadata={"who": "test"})
    tail = client.tail_job_logs(job_id)

    def release(status: JobStatus) -> None:
        if status is JobStatus.RUNNING:
            flag.write_text("")

    seen = statuses_until_done(client, job_id, on_status=release)
    assert seen == [JobStatus.PENDING, JobStatus.RUNNING, JobStatus.SUCCEEDED]
    text = "".join(tail)   # ends by itself: the job has ended
    assert text.index("job says hello") < text.index("job done")
    assert client.get_job_info(job_id).metadata == {"who": "test"}


def test_a_failing_script_is_failed_with_its_exit_code(head, tmp_path):
    machine, address, client = head
    directory = working_dir(tmp_path, **{"fail.py": """
        import sys
        print("about to fail", flush=True)
        sys.exit(3)
    """})
    result = machine.rayipy("job", "submit", "--working-dir", str(directory), "--",
                            "python", "fail.py")
    assert result.returncode == 1, result.stdout + result.stderr   # it followed the log
    assert "about to fail" in result.stdout and "exit code 3" in result.stdout
    (job,) = client.list_jobs()
    assert job.status is JobStatus.FAILED and job.driver_exit_code == 3
    assert "exit code 3" in job.message


def test_stop_ends_a_long_job_its_tasks_and_its_actor(head, tmp_path):
    machine, address, client = head
    directory = working_dir(tmp_path, **{"long.py": LONG_SCRIPT})
    job_id = client.submit_job(entrypoint="python long.py",
                               runtime_env={"working_dir": str(directory),
                                            "env_vars": {"JOB_MARK": "1"}})
    wait_until(lambda: "actor pid" in client.get_job_logs(job_id), timeout=30)
    actor_pid = int(client.get_job_logs(job_id).split("actor pid")[1].split()[0])
    assert os.path.exists(f"/proc/{actor_pid}")
    out = ok(machine.rayipy("job", "stop", job_id))
    assert f"Job '{job_id}' is STOPPED" in out
    info = client.get_job_info(job_id)
    assert info.status is JobStatus.STOPPED and info.driver_exit_code is not None
    # Its actor's process exits, and the head lists the actor dead: sooner than the
    # head would drop a silent driver (10 s), so the stop did it.
    wait_until(lambda: not os.path.exists(f"/proc/{actor_pid}"), timeout=5,
               message="the job's actor to stop")

    def actor_states() -> list[str]:
        rows = json.loads(ok(machine.rayipy("list", "actors", "--format", "json")))
        return [row["state"] for row in rows]
    wait_until(lambda: actor_states() == ["DEAD"], timeout=15)
    # Its task is no longer running anywhere: every worker is idle again (the test's
    # JobClient is a driver: not counted).
    def worker_states() -> list[str]:
        rows = json.loads(ok(machine.rayipy("list", "workers", "--detail", "--format", "json")))
        return [row["state"] for row in rows if row["worker_type"] == "WORKER"]
    try:
        wait_until(lambda: set(worker_states()) == {"IDLE"}, timeout=15)
    except AssertionError:
        raise AssertionError(f"not every worker is idle: {worker_states()}") from None
    assert client.stop_job(job_id) is False       # ended already
    assert client.delete_job(job_id) is True
    assert job_id not in [job.submission_id for job in client.list_jobs()]


def test_list_shows_every_job_and_bad_requests_say_why(head, tmp_path):
    machine, address, client = head
    first = client.submit_job(entrypoint="echo one", submission_id="one")
    second = client.submit_job(entrypoint="echo two")
    for job_id in (first, second):
        assert statuses_until_done(client, job_id)[-1] is JobStatus.SUCCEEDED
    listing = ok(machine.rayipy("job", "list"))
    assert "one" in listing and second in listing and listing.count("SUCCEEDED") == 2
    assert client.get_job_logs(second) == "two\n"
    missing = machine.rayipy("job", "status", "nope")
    assert missing.returncode == 1 and "no job with submission id 'nope'" in missing.stderr
    with pytest.raises(ValueError, match="exists already"):
        client.submit_job(entrypoint="true", submission_id="one")
    with pytest.raises(ValueError, match="not pip"):
        client.submit_job(entrypoint="true", runtime_env={"pip": ["numpy"]})
    no_dir = machine.rayipy("job", "submit", "--working-dir", str(tmp_path / "absent"), "--",
                            "true")
    assert no_dir.returncode == 1 and "is not a directory" in no_dir.stderr
