"""Pure: the head's job records (``rayipy job``, Ray Jobs) and how their states change.

A job is an entrypoint command run by a node agent, as a driver of the cluster that
outlives the client that submitted it. The head keeps one ``JobRecord`` per job in a
``JobTable``; the head's handlers turn messages into its events and send what it says::

    submit ─> PENDING ─placed─> PENDING ─started(pid)─> PENDING ─running()─> RUNNING ─exited(0)─> SUCCEEDED
              (a job with resources                                       └─exited(≠0)─> FAILED
               waits here for a node)
    PENDING or RUNNING ── stop / node lost / exited before running / unschedulable ──> STOPPED / FAILED

PENDING lasts while the job waits for a node with its entrypoint resources (``node_id``
is empty then, until ``placed``: ``core/job_placement.py`` chooses the node; a stop
then ends it at once, and ``unschedulable`` fails it), while the agent starts the
process and while its bootstrap fetches the working directory; RUNNING starts when the
bootstrap hands over to the entrypoint. A stop asked for while the job runs makes its
end STOPPED whatever its exit code. No sockets here: ``tests/unit/test_job_records.py``
and ``test_job_placement.py`` drive it with plain calls.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

PENDING = "PENDING"
RUNNING = "RUNNING"
STOPPED = "STOPPED"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
TERMINAL = frozenset({STOPPED, SUCCEEDED, FAILED})

# Ray's form of a generated id; a given one may use letters, digits and -_. only, since
# it names a directory on the node that runs the job.
ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,128}")


class JobNotFoundError(ValueError):
    """No job has this submission id (never submitted, or deleted)."""


class JobStateError(ValueError):
    """The job is not in a state that allows this (e.g. deleting a running job)."""


def new_submission_id() -> str:
    """A fresh id in Ray's form, ``raysubmit_`` and 16 random letters and digits."""
    alphabet = "ABCDEFGHIJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz123456789"
    return "raysubmit_" + "".join(secrets.choice(alphabet) for _ in range(16))


@dataclass
class JobRecord:
    """One job as the head knows it."""

    submission_id: str
    entrypoint: str
    node_id: bytes                       # the node whose agent runs it; b"": not placed yet
    start_time: float                    # when submitted (seconds since the epoch)
    metadata: dict[str, str] = field(default_factory=dict)
    runtime_env: dict[str, Any] = field(default_factory=dict)
    status: str = PENDING
    message: str = "Job is waiting for its node agent to start it."
    end_time: float | None = None
    driver_pid: int | None = None
    exit_code: int | None = None
    stop_requested: bool = False
    # Ray's entrypoint_num_cpus... as resource name -> amount ("CPU", "GPU", "memory", custom
    # names): held on its node while it runs (core/job_placement.py).
    resources: dict[str, float] = field(default_factory=dict)
    package: str = ""                    # the working directory's object id (hex), or ""

    def info(self) -> dict[str, Any]:
        """Ray's ``JobDetails`` fields (times in milliseconds, as Ray gives them)."""
        return {"type": "SUBMISSION", "submission_id": self.submission_id,
                "job_id": None, "status": self.status, "entrypoint": self.entrypoint,
                "message": self.message, "metadata": dict(self.metadata),
                "runtime_env": dict(self.runtime_env),
                "start_time": int(self.start_time * 1000),
                "end_time": None if self.end_time is None else int(self.end_time * 1000),
                "driver_node_id": self.node_id.hex(), "driver_exit_code": self.exit_code,
                "driver_info": None if self.driver_pid is None else {"pid": self.driver_pid},
                "entrypoint_num_cpus": self.resources.get("CPU"),
                "entrypoint_num_gpus": self.resources.get("GPU"),
                "entrypoint_memory": (None if "memory" not in self.resources
                                      else int(self.resources["memory"])),
                "entrypoint_resources": {k: v for k, v in self.resources.items()
                                         if k not in ("CPU", "GPU", "memory")} or None}


class JobTable:
    """Every job the head knows, by submission id; each method is one event."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}

    def submit(self, entrypoint: str, node_id: bytes, now: float, submission_id: str | None = None,
               metadata: dict[str, str] | None = None,
               runtime_env: dict[str, Any] | None = None,
               resources: dict[str, float] | None = None, package: str = "") -> JobRecord:
        """A new PENDING job, checked: a non-empty entrypoint, a new and well-formed id,
        string metadata. ``node_id`` b"": it waits for a node (``placed`` later)."""
        if not isinstance(entrypoint, str) or not entrypoint.strip():
            raise ValueError("a job needs an entrypoint: the shell command to run, e.g. "
                             "'python script.py'")
        if submission_id is None:
            submission_id = new_submission_id()
            while submission_id in self.jobs:
                submission_id = new_submission_id()
        elif not isinstance(submission_id, str) or not ID_PATTERN.fullmatch(submission_id):
            raise ValueError(f"a submission id is 1 to 128 letters, digits and '-_.', got "
                             f"{submission_id!r}")
        elif submission_id in self.jobs:
            raise ValueError(f"a job with submission id {submission_id!r} exists already")
        metadata = dict(metadata or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError(f"job metadata maps strings to strings, got {metadata!r}")
        record = JobRecord(submission_id, entrypoint, node_id, now, metadata,
                           dict(runtime_env or {}), resources=dict(resources or {}),
                           package=package)
        self.jobs[submission_id] = record
        return record

    def waiting(self) -> list[JobRecord]:
        """The jobs waiting for a node (PENDING, not placed), oldest first."""
        return sorted((r for r in self.jobs.values() if r.status == PENDING and not r.node_id),
                      key=lambda r: r.start_time)

    def waiting_for(self, submission_id: str, message: str) -> bool:
        """Say why the job waits for a node; whether the message changed."""
        record = self.jobs.get(submission_id)
        if record is None or record.status != PENDING or record.node_id or \
                record.message == message:
            return False
        record.message = message
        return True

    def placed(self, submission_id: str, node_id: bytes) -> None:
        """A waiting job got its node (its agent is told to start it)."""
        record = self.jobs.get(submission_id)
        if record is not None and record.status == PENDING and not record.node_id:
            record.node_id = node_id
            record.message = "Job is waiting for its node agent to start it."

    def unschedulable(self, submission_id: str, reason: str, now: float) -> None:
        """A waiting job fails: no live node could ever hold its resources, for too long."""
        record = self.jobs.get(submission_id)
        if record is not None and record.status == PENDING and not record.node_id:
            record.status, record.message, record.end_time = FAILED, reason, now

    def get(self, submission_id: str) -> JobRecord:
        """The job with this id; ``JobNotFoundError`` if there is none."""
        record = self.jobs.get(submission_id)
        if record is None:
            raise JobNotFoundError(f"no job with submission id {submission_id!r} (see `rayipy "
                                   f"job list`)")
        return record

    def started(self, submission_id: str, pid: int) -> None:
        """The agent started the job's process (its bootstrap, still PENDING)."""
        record = self.jobs.get(submission_id)
        if record is not None and record.status == PENDING:
            record.driver_pid = pid
            record.message = "Job's working directory is being fetched and unpacked."

    def running(self, submission_id: str) -> None:
        """The bootstrap handed over to the entrypoint."""
        record = self.jobs.get(submission_id)
        if record is not None and record.status == PENDING:
            record.status = RUNNING
            record.message = "Job is currently running."

    def exited(self, submission_id: str, code: int, now: float, reason: str = "") -> None:
        """The job's process ended with ``code`` (a negative one: killed by that signal);
        ``reason``: what the agent knows (e.g. it could not start the process)."""
        record = self.jobs.get(submission_id)
        if record is None or record.status in TERMINAL:
            return
        record.exit_code = code
        record.end_time = now
        if record.stop_requested:
            record.status, record.message = STOPPED, "Job was intentionally stopped."
        elif code == 0 and record.status == RUNNING:
            record.status, record.message = SUCCEEDED, "Job finished successfully."
        else:
            was_running = record.status == RUNNING
            record.status = FAILED
            if reason:
                record.message = reason
            elif was_running:
                record.message = f"Job entrypoint command failed with exit code {code}."
            else:
                record.message = (f"Job failed before its entrypoint started (exit code {code}): "
                                  f"see its logs.")

    def stop(self, submission_id: str, now: float) -> bool:
        """A stop is asked for: whether the agent must be told (False: it ended already,
        or it was waiting for a node, and is STOPPED now)."""
        record = self.get(submission_id)
        if record.status in TERMINAL:
            return False
        record.stop_requested = True
        if not record.node_id:
            record.status, record.message = STOPPED, "Job was stopped before it got a node."
            record.end_time = now
            return False
        return True

    def node_lost(self, node_id: bytes, why: str, now: float) -> list[str]:
        """The node running these jobs is gone: they fail (their processes went with it)."""
        lost = []
        for record in self.jobs.values():
            if node_id and record.node_id == node_id and record.status not in TERMINAL:
                record.status = STOPPED if record.stop_requested else FAILED
                record.message = f"Job's node was lost: {why}."
                record.end_time = now
                lost.append(record.submission_id)
        return lost

    def delete(self, submission_id: str) -> None:
        """Forget a job that has ended (its log stays on its node)."""
        record = self.get(submission_id)
        if record.status not in TERMINAL:
            raise JobStateError(f"job {submission_id!r} is {record.status}: stop it first "
                                f"(`rayipy job stop {submission_id}`), then delete it")
        del self.jobs[submission_id]

    def listing(self) -> list[dict[str, Any]]:
        """Every job's ``info()``, oldest first."""
        return [r.info() for r in sorted(self.jobs.values(), key=lambda r: r.start_time)]
