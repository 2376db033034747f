"""One task of a ``SlurmCluster`` job: ``python -m rayipy.cluster.slurm_task JOB_DIR``.

The job's one ``srun`` starts this on each allocated node. Task 0 (the job's first
task) runs ``rayipy start --head --block`` and, once the head prints its address,
writes it to ``JOB_DIR/address`` (the launcher and the other tasks read it there: the
directory is on a file system every node shares). Every other task waits for that file
and runs ``rayipy start --address=... --block``. ``--block`` keeps each in the
foreground for as long as rayipy runs on its node, so the job lasts as long as the
cluster, and ``scancel`` (SIGTERM to the job's processes) stops it; a head or agent that
exits ends its task, and ``srun --kill-on-bad-exit`` then ends the job.

``python -m rayipy.cluster.slurm_task JOB_DIR --join`` is the one task of a job that
``SlurmCluster.adapt`` submits to add a node: it runs ``rayipy start --address=...
--block`` and, once the node has joined, writes the node id ``rayipy start`` printed to
``JOB_DIR/nodes/JOB_ID`` (``$SLURM_JOB_ID``): the launcher reads there which node each
job is, to ``scancel`` the job of an idle node (SIGTERM: the agent says it leaves).

The password is read from ``JOB_DIR/password`` (0600), never a command line; the start
options from ``JOB_DIR/spec.json``, written by ``SlurmCluster``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from rayipy.cluster import commands
from rayipy.cluster.commands import StartOptions

ADDRESS_FILE = "address"
PASSWORD_FILE = "password"
SPEC_FILE = "spec.json"
NODES_DIR = "nodes"      # JOB_DIR/nodes/JOB_ID: the node id of an added node's job
JOIN = "--join"


def head_node_ip() -> str | None:
    """This node's address as Slurm names it (``$SLURMD_NODENAME`` resolved), if that is
    not a loopback address; else None, and ``rayipy start`` guesses from the routes."""
    name = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    try:
        ip = socket.gethostbyname(name)
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


def write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def wait_for_address(job_dir: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    path = job_dir / ADDRESS_FILE
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"rayipy slurm task: no head address in {path} after {timeout:g} s")
        time.sleep(0.1)
    return path.read_text().strip()


def run(argv: list[str], env: dict[str, str],
        on_line: Callable[[str], None] | None = None) -> int:
    """Run ``argv``, echo its output, pass SIGTERM/SIGINT on to it; its exit code."""
    child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)

    def forward(signum: int, frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    assert child.stdout is not None
    for line in child.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if on_line is not None:
            on_line(line)
    return child.wait()


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2) or (len(argv) == 2 and argv[1] != JOIN):
        print(f"usage: python -m rayipy.cluster.slurm_task JOB_DIR [{JOIN}]", file=sys.stderr)
        return 2
    job_dir = Path(argv[0])
    joining = len(argv) == 2
    spec = json.loads((job_dir / SPEC_FILE).read_text())
    options = StartOptions(num_cpus=spec["num_cpus"], port=spec["port"], extra=tuple(spec["extra"]))
    env = dict(os.environ, RAYIPY_HOME=str(job_dir / "home"))
    env.pop(commands.PASSWORD_ENV, None)
    password_file = str(job_dir / PASSWORD_FILE)
    python = spec["python"]
    rank = int(os.environ.get("SLURM_PROCID", "0"))
    if joining:
        return join(job_dir, spec, options, env, password_file)
    if rank == 0:
        command = commands.start_head_argv(python, options, node_ip=head_node_ip(), block=True,
                                           password_file=password_file)
        output: list[str] = []

        def on_line(line: str) -> None:
            output.append(line)
            if not (job_dir / ADDRESS_FILE).exists():
                try:
                    address = commands.head_address("".join(output))
                except ValueError:
                    return
                write_atomically(job_dir / ADDRESS_FILE, address + "\n")
        return run(command, env, on_line)
    address = wait_for_address(job_dir, float(spec["start_timeout"]))
    return run(commands.start_agent_argv(python, address, options, block=True,
                                         password_file=password_file), env)


def join(job_dir: Path, spec: dict[str, Any], options: StartOptions, env: dict[str, str],
         password_file: str) -> int:
    """An added node's task: join the head, and say under which node id."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        print("rayipy slurm task: --join runs in a Slurm job ($SLURM_JOB_ID unset)",
              file=sys.stderr)
        return 2
    nodes = job_dir / NODES_DIR
    nodes.mkdir(exist_ok=True)
    address = wait_for_address(job_dir, float(spec["start_timeout"]))
    output: list[str] = []

    def on_line(line: str) -> None:
        output.append(line)
        if not (nodes / job_id).exists():
            try:
                node_id = commands.joined_node("".join(output))
            except ValueError:
                return
            write_atomically(nodes / job_id, node_id + "\n")
    return run(commands.start_agent_argv(spec["python"], address, options, block=True,
                                         password_file=password_file), env, on_line)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
