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

``close()`` runs ``scancel`` and waits until Slurm says the job ended; a ``scancel``
typed by hand stops the cluster the same way. The password is written to
``JOB_DIR/password`` (0600) for the tasks to read, and removed by ``close()``.
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
                 start_options: Sequence[str] = (), shared_dir: str | os.PathLike | None = None,
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
        if self.job_id is None:
            return None
        result = _run(["scontrol", "show", "job", self.job_id], 30)
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

    def _output_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.output_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no output yet)"

    def _stop(self) -> None:
        """``scancel``, then wait until the job has ended; remove the password file."""
        try:
            if self.job_id is not None:
                result = _run(["scancel", self.job_id], 60)
                if result.returncode != 0 and self.state() not in commands.ENDED_STATES | {None}:
                    raise exceptions.ClusterLaunchError(
                        f"scancel {self.job_id} failed: {(result.stderr or result.stdout).strip()}")
                deadline = time.monotonic() + STOP_TIMEOUT
                while (state := self.state()) is not None and state not in commands.ENDED_STATES:
                    if time.monotonic() > deadline:
                        raise exceptions.ClusterLaunchError(
                            f"Slurm job {self.job_id} still {state} {STOP_TIMEOUT:g} s after "
                            f"scancel")
                    time.sleep(0.2)
        finally:
            try:
                (self.job_dir / slurm_task.PASSWORD_FILE).unlink()
            except OSError:
                pass

    def adapt(self, minimum: int | bool = 1, maximum: int | None = None, **settings: Any) -> None:
        """Not yet for Slurm: a node more would be a job more (one ``sbatch`` of one
        ``rayipy start --address`` task), and a node less its ``scancel``. Until then,
        ask for the nodes at the start (``SlurmCluster(nodes=maximum)``), or adapt on
        machines reached by ``ssh`` (``SSHCluster(hosts, initial=1).adapt(...)``).
        ``adapt(False)`` is allowed: nothing is adapting."""
        if minimum is False and maximum is None and not settings:
            self.stop_adapting()
            return
        raise NotImplementedError(
            "SlurmCluster cannot adapt yet (each node added would be a Slurm job of its "
            "own): ask for the nodes at the start with SlurmCluster(nodes=...), or use "
            "SSHCluster(hosts, initial=1).adapt(minimum=, maximum=) on machines you reach "
            "with ssh")

    def record(self) -> dict[str, Any]:
        return {"provider": self.provider, "address": self._address, "job_id": self.job_id,
                "job_dir": str(self.job_dir)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], password: str = "") -> "SlurmCluster":
        """The launcher of a job ``record()`` described; its ``close()`` cancels the job."""
        self = cls.__new__(cls)
        Launcher.__init__(self, password)
        self.job_id = record["job_id"]
        self.job_dir = Path(record["job_dir"])
        self._address = record.get("address")
        return self


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise exceptions.ClusterLaunchError(f"no `{argv[0]}` command here: Slurm's client "
                                            f"commands must be on PATH") from None
    except subprocess.TimeoutExpired:
        raise exceptions.ClusterLaunchError(f"`{' '.join(argv[:3])}` did not answer in "
                                            f"{timeout:g} s") from None
