"""A node agent's jobs: their processes, their log files, stopping them.

The agent (``node/agent.py``) owns one ``JobRunner`` and calls it from its loop's thread
only: ``start`` for ``JOB_START``, ``stop`` for ``JOB_STOP``, ``read_log`` for
``JOB_LOGS``, ``check`` on every turn of its loop (at least every 250 ms: exits are
reaped and late stops escalated to SIGKILL), and ``stop_all`` when the agent stops.

Each job gets a directory ``$RAYIPY_HOME/HOSTNAME/jobs/ID/`` holding ``driver.log`` (the
process's stdout and stderr, in one file, unbuffered) and ``working_dir/`` when one was
shipped. Its process (``bootstrap.py``, which becomes the entrypoint) leads a process
group of its own, so a stop reaches everything the entrypoint started: SIGTERM to the
group, SIGKILL to what is left after ``STOP_GRACE`` seconds. Before the SIGTERM, the
group's pids go to the head (``stopping``), which drops the drivers among them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

LOG_NAME = "driver.log"
STOP_GRACE = 3.0            # seconds from SIGTERM to SIGKILL (Ray waits 3 s too)
MAX_LOG_CHUNK = 1 << 20     # at most this much of a log per JOB_LOGS answer

Report = Callable[[str, str, object], None]   # (submission_id, event, value)


@dataclass
class JobProcess:
    """One job started here."""

    submission_id: str
    popen: subprocess.Popen[bytes]
    log: Path
    kill_at: float | None = None   # after a stop: when to SIGKILL the group


def group_pids(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (Linux's /proc; the leader alone
    elsewhere)."""
    if not os.path.isdir("/proc"):
        return [pgid]
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        if fields[0] != b"Z" and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class JobRunner:
    """The jobs this node runs (one agent thread uses it)."""

    def __init__(self, jobs_dir: Path, key: bytes, report: Report) -> None:
        self.jobs_dir = jobs_dir
        self.key = key
        self.report = report
        self.jobs: dict[str, JobProcess] = {}

    def job_dir(self, submission_id: str) -> Path:
        return self.jobs_dir / submission_id

    def start(self, submission_id: str, entrypoint: str, env_vars: dict[str, str], package: str,
              head_address: str) -> None:
        """Start the job's process; report ``started`` (its pid), or ``exited`` with the
        reason if it cannot start."""
        if submission_id in self.jobs or "/" in submission_id or submission_id in (".", ".."):
            self.report(submission_id, "exited", (-1, f"Job {submission_id!r} cannot start: "
                                                      f"its id is taken or unusable on this node."))
            return
        directory = self.job_dir(submission_id)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=False)
            log = directory / LOG_NAME
            # `python` in the entrypoint is the cluster's own Python (as in Ray, whose
            # jobs run in the environment the cluster runs in), unless env_vars say else.
            path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
            env = dict(os.environ, PATH=path, **env_vars, RAYIPY_CLUSTER_KEY=self.key.hex(),
                       RAYIPY_ADDRESS=head_address, RAYIPY_JOB_ID=submission_id,
                       RAYIPY_JOB_PACKAGE=package, PYTHONUNBUFFERED="1")
            with open(log, "ab") as out:
                popen = subprocess.Popen([sys.executable, "-m", "rayipy.job.bootstrap", entrypoint],
                                         cwd=directory, env=env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        except OSError as e:
            self.report(submission_id, "exited", (-1, f"Job could not start on this node: {e}"))
            return
        self.jobs[submission_id] = JobProcess(submission_id, popen, log)
        self.report(submission_id, "started", popen.pid)

    def stop(self, submission_id: str, grace: float = STOP_GRACE) -> None:
        """SIGTERM the job's process group (its pids reported first); SIGKILL later."""
        job = self.jobs.get(submission_id)
        if job is None or job.kill_at is not None:
            return
        pgid = job.popen.pid
        self.report(submission_id, "stopping", group_pids(pgid))
        _signal_group(pgid, signal.SIGTERM)
        job.kill_at = time.monotonic() + grace

    def check(self) -> None:
        """Reap the jobs that ended (reporting ``exited``); SIGKILL stopped ones past their
        grace period."""
        now = time.monotonic()
        for job in list(self.jobs.values()):
            code = job.popen.poll()
            if code is not None:
                if job.kill_at is not None:   # what the entrypoint left behind goes too
                    _signal_group(job.popen.pid, signal.SIGKILL)
                del self.jobs[job.submission_id]
                self.report(job.submission_id, "exited", (code, ""))
            elif job.kill_at is not None and now >= job.kill_at:
                _signal_group(job.popen.pid, signal.SIGKILL)

    def read_log(self, submission_id: str, offset: int, limit: int) -> tuple[bytes, int, bool]:
        """Up to ``limit`` bytes of the job's log from ``offset``: (data, next offset,
        whether the job has ended here, so nothing will follow)."""
        if not isinstance(offset, int) or offset < 0 or not isinstance(limit, int) or limit <= 0:
            raise ValueError(f"a log read needs an offset >= 0 and a limit > 0, got {offset}, {limit}")
        path = self.job_dir(submission_id) / LOG_NAME
        running = submission_id in self.jobs
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(min(limit, MAX_LOG_CHUNK))
        except FileNotFoundError:
            raise ValueError(f"job {submission_id!r} has no log on this node ({path})") from None
        return data, offset + len(data), not running

    def stop_all(self, grace: float = STOP_GRACE) -> None:
        """The agent stops: every job's group gets SIGTERM, then SIGKILL."""
        for job in self.jobs.values():
            _signal_group(job.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for job in self.jobs.values():
            try:
                job.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(job.popen.pid, signal.SIGKILL)
            try:
                job.popen.wait(2.0)
            except subprocess.TimeoutExpired:
                pass
        self.jobs.clear()
