"""``SlurmCluster``: a cluster that is one Slurm batch job.

    with SlurmCluster(nodes=4, cpus_per_node=16, partition="cpu", time="2:00:00") as cluster:
        rayipy.init(address=cluster.address, password=cluster.password)

Only Slurm's own commands are used: ``sbatch`` submits a job of one task per node,
whose script runs ``srun python -m rayipy.cluster.slurm_task JOB_DIR`` (see that module:
the head in the job's first task, an agent in each of the others, all in the
foreground, so the job lasts exactly as long as the cluster). ``.address`` comes from
``JOB_DIR/address``, which the first task writes once the head listens; ``JOB_DIR`` must
be on a file system the nodes share (the default, ``~/.rayipy/slurm/``, is, on the usual
cluster with shared home directories).

``adapt()`` (``Launcher.adapt``) grows the cluster by one more batch job per node (one
task: ``slurm_task JOB_DIR --join``, an agent joining this head) and shrinks it by
``scancel`` of an idle node's job; ``node_jobs`` maps those jobs to their nodes. The
first job is never shrunk.

``close()`` runs ``scancel`` (the added jobs first, then the first job) and waits until
Slurm says each ended; a ``scancel`` typed by hand stops the cluster the same way. The
password is written to ``JOB_DIR/password`` (0600) for the tasks to read, and removed by
``close()``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

from rayipy import exceptions
from rayipy.cluster import commands, slurm_task
from rayipy.cluster.base import Launcher
from rayipy.cluster.commands import SlurmRequest, StartOptions

START_TIMEOUT = 600.0   # for the job to leave the queue and its head to listen
STOP_TIMEOUT = 120.0    # for the job to end after scancel (Slurm's KillWait is 30 s by default)
GROW_WAIT = 60.0        # adapt waits this long for an added node's job to run and join
SQUEUE_EVERY = 5.0      # adapt asks squeue whether added jobs ended at most this often


class SlurmCluster(Launcher):
    """A rayipy cluster on ``nodes`` Slurm nodes, as one batch job.

    ``cpus_per_node``: CPUs asked of each node (``--cpus-per-task``), and offered there
    as rayipy's ``num_cpus`` (default: the site's default allocation; rayipy offers all
    the node's CPUs). ``partition``, ``time``, ``account``, ``job_name``: sbatch's.
    ``sbatch_options``: more sbatch options, as words. ``port``: the head's (default 0:
    any free port, so that two clusters can share a node). ``start_options``: more
    ``rayipy start`` options for every node. ``shared_dir``: where job directories go
    (default ``~/.rayipy/slurm``; every node must see it). ``python``: the Python on the
    nodes (default: this one's path). ``start_timeout``: seconds to wait for the head,
    queueing included.
    """

    provider = "slurm"

    def __init__(self, nodes: int = 1, *, cpus_per_node: int | None = None,
                 partition: str | None = None, time: str | None = None,
                 account: str | None = None, job_name: str = "rayipy",
                 sbatch_options: Sequence[str] = (), port: int | None = 0,
                 start_options: Sequence[str] = (),
                 shared_dir: str | os.PathLike[str] | None = None,
                 python: str | None = None, password: str | None = None,
                 start_timeout: float = START_TIMEOUT) -> None:
        from rayipy.node.connection import new_password, rayipy_home
        self.request = SlurmRequest(nodes=nodes, cpus_per_node=cpus_per_node, partition=partition,
                                    time=None if time is None else str(time), account=account,
                                    job_name=job_name, extra=tuple(sbatch_options))
        self.request.check()
        self.options = StartOptions(num_cpus=cpus_per_node, port=port, extra=tuple(start_options))
        self.options.check()
        if password is not None and (not password or "\n" in password):
            raise ValueError("password must be one non-empty line")
        super().__init__(password if password is not None else new_password())
        base = Path(shared_dir) if shared_dir is not None else rayipy_home() / "slurm"
        self.job_dir = (base / f"{job_name}-{uuid.uuid4().hex[:8]}").absolute()
        self.python = python or sys.executable
        self.job_id: str | None = None
        # adapt's jobs: job id -> the start of its node's id ("": not joined yet)
        self.node_jobs: dict[str, str] = {}
        self._max_nodes = 0
        self._next_squeue = 0.0
        self.start_timeout = start_timeout
        try:
            self._submit()
            self._wait_for_head(start_timeout)
        except BaseException:
            self.close()
            raise

    @property
    def output_file(self) -> Path:
        """The job's output (every task's ``rayipy start`` output)."""
        return self.job_dir / "job.out"

    def _submit(self) -> None:
        self.job_dir.mkdir(parents=True, exist_ok=False)
        self.job_dir.chmod(0o700)
        password = self.job_dir / slurm_task.PASSWORD_FILE
        fd = os.open(password, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.password + "\n")
        (self.job_dir / slurm_task.SPEC_FILE).write_text(json.dumps(
            {"python": self.python, "num_cpus": self.options.num_cpus, "port": self.options.port,
             "extra": list(self.options.extra), "start_timeout": self.start_timeout}))
        srun = commands.srun_argv(self.request, [self.python, "-m", "rayipy.cluster.slurm_task",
                                                 str(self.job_dir)])
        script = self.job_dir / "job.sh"
        script.write_text(commands.batch_script(srun))
        result = _run(commands.sbatch_argv(self.request, str(script), str(self.output_file)), 60)
        if result.returncode != 0:
            raise exceptions.ClusterLaunchError(f"sbatch refused the job: "
                                                f"{(result.stderr or result.stdout).strip()}")
        try:
            self.job_id = commands.parse_job_id(result.stdout)
        except ValueError as e:
            raise exceptions.ClusterLaunchError(str(e)) from None

    def state(self) -> str | None:
        """The job's state as Slurm says it (PENDING, RUNNING, CANCELLED...); None once
        Slurm has forgotten it."""
        return self._job_state(self.job_id) if self.job_id is not None else None

    @staticmethod
    def _job_state(job_id: str) -> str | None:
        result = _run(["scontrol", "show", "job", job_id], 30)
        return commands.job_state(result.stdout) if result.returncode == 0 else None

    def _wait_for_head(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        address_file = self.job_dir / slurm_task.ADDRESS_FILE
        next_check = 0.0
        while not address_file.exists():
            now = time.monotonic()
            if now > deadline:
                raise exceptions.ClusterLaunchError(
                    f"Slurm job {self.job_id}: no rayipy head after {timeout:g} s (state "
                    f"{self.state()}); its output: {self.output_file}\n{self._output_tail()}")
            if now >= next_check:   # scontrol costs the controller: once a second
                state = self.state()
                if state is None or state in commands.ENDED_STATES:
                    raise exceptions.ClusterLaunchError(
                        f"Slurm job {self.job_id} ended ({state or 'gone'}) before its rayipy "
                        f"head started; its output:\n{self._output_tail()}")
                next_check = now + 1.0
            time.sleep(0.1)
        self._address = address_file.read_text().strip()

    def _output_tail(self) -> str:
        return _tail(self.output_file)

    def _stop(self) -> None:
        """``scancel`` the nodes ``adapt`` added, then the cluster's job (a head cancelled
        first would leave their agents waiting for it), and wait until each has ended;
        remove the password file."""
        try:
            try:
                self._cancel(list(self.node_jobs))
            finally:
                if self.job_id is not None:
                    self._cancel([self.job_id])
            self.node_jobs.clear()
        finally:
            try:
                (self.job_dir / slurm_task.PASSWORD_FILE).unlink()
            except OSError:
                pass

    # -- adapting (Launcher.adapt): one Slurm job per added node ------------------------------
    def adapt(self, minimum: int | bool = 1, maximum: int | None = None, **settings: Any) -> None:
        """``Launcher.adapt``, the Slurm way: each node added is a batch job of its own
        (one node, one task: ``rayipy start --address`` joining this cluster's head,
        with the cluster's partition, time limit, account and CPUs per node), and a node
        retired is its job's ``scancel``. ``maximum`` is required: Slurm has no list of
        machines to count; the queue decides when an added job runs, and a job still
        queued counts towards ``maximum`` until it runs or ends. The nodes of the first
        job (the head's) are never retired: only the whole job can end."""
        if minimum is not False and maximum is None:
            raise ValueError("SlurmCluster.adapt needs maximum=: how many nodes at most "
                             "(Slurm's queue, not a list of machines, limits them)")
        super().adapt(minimum, maximum, **settings)

    def _capacity(self) -> int | None:
        return None

    def _prepare_adapting(self, policy: Any) -> None:
        self._max_nodes = policy.maximum

    def _node_template(self) -> dict[str, float] | None:
        cpus = self.request.cpus_per_node
        return {"CPU": float(cpus)} if cpus is not None else None

    def _spare(self) -> int:
        """Nodes ``adapt`` may still ask Slurm for: ``maximum`` less the first job's
        nodes and the added jobs queued or running (ended ones are forgotten first)."""
        self._forget_ended_node_jobs()
        return max(0, self._max_nodes - self.request.nodes - len(self.node_jobs))

    def _retirable(self, node: dict[str, Any]) -> bool:
        return self._job_of(node["node_id"]) is not None

    def _job_of(self, node_id: str) -> str | None:
        self._read_node_ids()
        return next((job for job, start in self.node_jobs.items()
                     if start and node_id.startswith(start)), None)

    def _read_node_ids(self) -> None:
        for job_id, node_id in self.node_jobs.items():
            if not node_id:
                try:
                    self.node_jobs[job_id] = (self.job_dir / slurm_task.NODES_DIR
                                              / job_id).read_text().strip()
                except OSError:   # not joined yet
                    pass

    def _grow(self, count: int) -> None:
        """``sbatch`` ``count`` one-node jobs, then wait (``GROW_WAIT``) for their nodes
        to join. A job still queued then stays submitted and joins when Slurm runs it;
        a job that ended before joining is an error, with its output."""
        submitted = [self._submit_node_job() for _ in range(count)]
        deadline = time.monotonic() + GROW_WAIT
        while not self._closed and time.monotonic() < deadline:
            self._read_node_ids()
            waiting = [job for job in submitted if job in self.node_jobs
                       and not self.node_jobs[job]]
            if not waiting:
                break
            self._forget_ended_node_jobs()
            ended = [job for job in waiting if job not in self.node_jobs]
            if ended:
                raise exceptions.ClusterLaunchError(
                    f"Slurm job {ended[0]} (a node added by adapt) ended before its node "
                    f"joined; its output:\n{_tail(self._node_output(ended[0]))}")
            time.sleep(0.5)

    def _submit_node_job(self) -> str:
        script = self.job_dir / "node.sh"
        if not script.exists():
            script.write_text(commands.batch_script(
                [self.python, "-m", "rayipy.cluster.slurm_task", str(self.job_dir),
                 slurm_task.JOIN]))
        request = commands.node_job_request(self.request)
        result = _run(commands.sbatch_argv(request, str(script),
                                           str(self.job_dir / "node-%j.out")), 60)
        if result.returncode != 0:
            raise exceptions.ClusterLaunchError(f"sbatch refused a node's job: "
                                                f"{(result.stderr or result.stdout).strip()}")
        try:
            job_id = commands.parse_job_id(result.stdout)
        except ValueError as e:
            raise exceptions.ClusterLaunchError(str(e)) from None
        self.node_jobs[job_id] = ""
        return job_id

    def _node_output(self, job_id: str) -> Path:
        return self.job_dir / f"node-{job_id}.out"

    def _forget_ended_node_jobs(self) -> None:
        """Drop the added jobs Slurm says ended (a time limit, a node failure, a
        ``scancel`` by hand): their nodes no longer count. ``squeue`` at most every
        ``SQUEUE_EVERY`` seconds: it costs the controller."""
        if not self.node_jobs or time.monotonic() < self._next_squeue:
            return
        self._next_squeue = time.monotonic() + SQUEUE_EVERY
        jobs = list(self.node_jobs)
        result = _run(commands.squeue_argv(jobs), 30)
        if result.returncode == 0:
            states = commands.queued_states(result.stdout)
            ended = [job for job in jobs
                     if states.get(job, "COMPLETED") in commands.ENDED_STATES]
        elif "Invalid job id" in result.stderr:   # one Slurm forgot: ask for each
            ended = [job for job in jobs if self._job_state(job) in commands.ENDED_STATES | {None}]
        else:   # the controller did not answer: nothing is known to have ended
            return
        for job in ended:
            del self.node_jobs[job]

    def _retire(self, node_id: str) -> None:
        """``scancel`` the node's job (its agent gets SIGTERM and tells the head it
        leaves), and wait until Slurm says the job ended."""
        job = self._job_of(node_id)
        if job is None:
            raise exceptions.ClusterLaunchError(f"node {node_id[:8]} is not one adapt added: "
                                                f"it cannot be retired alone")
        self._cancel([job])
        self.node_jobs.pop(job, None)

    def _cancel(self, jobs: list[str]) -> None:
        """``scancel jobs``, then wait until each has ended."""
        if not jobs:
            return
        result = _run(["scancel", *jobs], 60)
        if result.returncode != 0 and any(self._job_state(j) not in commands.ENDED_STATES | {None}
                                          for j in jobs):
            raise exceptions.ClusterLaunchError(
                f"scancel {' '.join(jobs)} failed: {(result.stderr or result.stdout).strip()}")
        deadline = time.monotonic() + STOP_TIMEOUT
        for job in jobs:
            while (state := self._job_state(job)) not in commands.ENDED_STATES | {None}:
                if time.monotonic() > deadline:
                    raise exceptions.ClusterLaunchError(
                        f"Slurm job {job} still {state} {STOP_TIMEOUT:g} s after scancel")
                time.sleep(0.2)

    def record(self) -> dict[str, Any]:
        return {"provider": self.provider, "address": self._address, "job_id": self.job_id,
                "job_dir": str(self.job_dir), "node_jobs": dict(self.node_jobs)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], password: str = "") -> "SlurmCluster":
        """The launcher of a job ``record()`` described; its ``close()`` cancels the job."""
        self = cls.__new__(cls)
        Launcher.__init__(self, password)
        self.job_id = record["job_id"]
        self.job_dir = Path(record["job_dir"])
        self.node_jobs = dict(record.get("node_jobs", {}))
        self._max_nodes = 0
        self._next_squeue = 0.0
        self._address = record.get("address")
        return self


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output yet)"


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise exceptions.ClusterLaunchError(f"no `{argv[0]}` command here: Slurm's client "
                                            f"commands must be on PATH") from None
    except subprocess.TimeoutExpired:
        raise exceptions.ClusterLaunchError(f"`{' '.join(argv[:3])}` did not answer in "
                                            f"{timeout:g} s") from None
