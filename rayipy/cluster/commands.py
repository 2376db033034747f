"""The command lines the launchers run, and what they read back: pure, no processes.

Every launcher ends up running ``rayipy start`` somewhere (over ``ssh``, or in a Slurm
task); this module builds those argument lists and the ``ssh``/``sbatch``/``squeue``
ones around them, and parses their answers, so that all of it is tested without a
single machine (``tests/unit/test_cluster_commands.py``).

The cluster password is never in any of these lists: over ``ssh`` the remote shell
reads it from the channel's stdin into ``$RAYIPY_PASSWORD`` (``PASSWORD_PRELUDE``);
in a Slurm job it is read from a 0600 file in the job's directory.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Mapping, Sequence

PASSWORD_ENV = "RAYIPY_PASSWORD"
HOME_ENV = "RAYIPY_HOME"

# What ``rayipy start --head`` prints first (rayipy/cli.py, _head_message).
_HEAD_STARTED = re.compile(r"^rayipy head started at (\S+?),", re.MULTILINE)
# What ``rayipy start --address`` prints (rayipy/cli.py, start): the node id's first 8 digits.
_NODE_JOINED = re.compile(r"joined the rayipy cluster at \S+ as node ([0-9a-f]+) \(")

# The remote side of ``ssh``: read one line from the channel into $RAYIPY_PASSWORD, then
# run the command given after it. ``sh -c`` so that it works whatever the user's login
# shell is (csh, fish), and ``read`` so that it works whatever stdin is (sshd may hand
# the command a socket, which /dev/stdin cannot open).
PASSWORD_PRELUDE = (f'IFS= read -r {PASSWORD_ENV} || exit 97; export {PASSWORD_ENV}; '
                    f'exec "$0" "$@"')
PASSWORD_NOT_READ = 97   # the exit code when no password line came


@dataclass(frozen=True)
class StartOptions:
    """What every ``rayipy start`` of a launched cluster gets (``None``: rayipy's default)."""

    num_cpus: int | None = None
    port: int | None = None                 # the head's; 0: any free port
    extra: tuple[str, ...] = ()             # more ``rayipy start`` options, as words

    def check(self) -> None:
        """Raise ValueError for options ``rayipy start`` would refuse, before anything runs."""
        if self.num_cpus is not None and (not isinstance(self.num_cpus, int) or self.num_cpus < 0):
            raise ValueError(f"num_cpus must be a whole number >= 0, got {self.num_cpus!r}")
        if self.port is not None and (not isinstance(self.port, int) or not 0 <= self.port < 65536):
            raise ValueError(f"port must be 0..65535, got {self.port!r}")
        for word in self.extra:
            if not isinstance(word, str):
                raise ValueError(f"start options are strings, got {word!r}")
            name = word.split("=", 1)[0]
            if name in _OWN_OPTIONS:
                raise ValueError(f"{name} is set by the launcher; it cannot be among the extra "
                                 f"`rayipy start` options")


# Options the launcher sets itself: a second value would silently fight it.
_OWN_OPTIONS = frozenset({"--head", "--address", "--password", "--redis-password",
                          "--password-file", "--block", "--num-cpus", "--port"})


def start_head_argv(python: str, options: StartOptions, node_ip: str | None = None,
                    block: bool = False, password_file: str | None = None) -> list[str]:
    """``rayipy start --head`` for the head host (the password comes from
    ``$RAYIPY_PASSWORD``, or ``password_file``)."""
    argv = [python, "-m", "rayipy", "start", "--head"]
    if node_ip:
        argv += ["--node-ip-address", node_ip]
    if options.port is not None:
        argv += ["--port", str(options.port)]
    return argv + _common(options, block, password_file)


def start_agent_argv(python: str, address: str, options: StartOptions, block: bool = False,
                     password_file: str | None = None) -> list[str]:
    """``rayipy start --address`` for every other host."""
    argv = [python, "-m", "rayipy", "start", f"--address={address}"]
    return argv + _common(options, block, password_file)


def _common(options: StartOptions, block: bool, password_file: str | None) -> list[str]:
    argv: list[str] = []
    if options.num_cpus is not None:
        argv += ["--num-cpus", str(options.num_cpus)]
    if password_file is not None:
        argv += ["--password-file", password_file]
    if block:
        argv.append("--block")
    return argv + list(options.extra)


def stop_argv(python: str) -> list[str]:
    return [python, "-m", "rayipy", "stop"]


def with_env(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """``argv`` run with ``env`` added (``env NAME=VALUE ... argv``). Only for values that
    may be seen by anyone on the machine: they are on the command line."""
    for name in env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"not an environment variable name: {name!r}")
        if name == PASSWORD_ENV:
            raise ValueError(f"{PASSWORD_ENV} must not be set through env: it would be on a "
                             f"command line; the launcher sends the password itself")
    if not env:
        return list(argv)
    return ["env", *(f"{name}={value}" for name, value in env.items()), *argv]


def remote_command(argv: Sequence[str], with_password: bool) -> str:
    """The one string ``ssh`` hands the remote shell. With ``with_password``, the command
    first reads the password line from stdin (``PASSWORD_PRELUDE``)."""
    if with_password:
        return shlex.join(["sh", "-c", PASSWORD_PRELUDE, *argv])
    return shlex.join(list(argv))


@dataclass(frozen=True)
class SSHSettings:
    """How to run ``ssh``: the program, options before the host, and per-run defaults.

    ``BatchMode=yes`` makes a host that would ask for a password or a passphrase fail at
    once instead of waiting for typing nobody can do (a notebook has no terminal).
    """

    command: str = "ssh"
    options: tuple[str, ...] = ()
    connect_timeout: int = 10
    batch_mode: bool = True

    def argv(self, host: str, remote: str) -> list[str]:
        argv = [self.command]
        if self.batch_mode:
            argv += ["-o", "BatchMode=yes"]
        argv += ["-o", f"ConnectTimeout={self.connect_timeout}", *self.options, "-T", "--",
                 check_host(host), remote]
        return argv

    def config_argv(self, host: str) -> list[str]:
        """``ssh -G host``: the configuration ssh would use for ``host``, resolved."""
        return [self.command, *self.options, "-G", "--", check_host(host)]


def check_host(host: str) -> str:
    """A host as ssh takes it (``name``, ``user@name``); not an option in disguise."""
    if not isinstance(host, str) or not host or host.startswith("-") or any(c.isspace() for c in host):
        raise ValueError(f"not a host name for ssh: {host!r}")
    return host


def parse_hosts(text: str) -> list[str]:
    """``host1,host2`` (as ``%cluster start --ssh`` takes it) as a list."""
    hosts = [h.strip() for h in text.split(",") if h.strip()]
    if not hosts:
        raise ValueError("give at least one host: --ssh host1,host2,...")
    return [check_host(h) for h in hosts]


def check_distinct(hosts: Sequence[str]) -> None:
    """One rayipy per machine (``rayipy start`` refuses a second): a host twice is an error."""
    seen: set[str] = set()
    for host in hosts:
        if host in seen:
            raise ValueError(f"{host} is listed twice: rayipy runs one node per machine")
        seen.add(host)


def ssh_config_hostname(config: str) -> str | None:
    """The ``hostname`` line of ``ssh -G``'s output: the name or address ssh connects to."""
    for line in config.splitlines():
        key, _, value = line.partition(" ")
        if key.lower() == "hostname" and value.strip():
            return value.strip()
    return None


def head_address(output: str) -> str:
    """The address in ``rayipy start --head``'s output; ValueError if it is not there."""
    found = _HEAD_STARTED.search(output)
    if found is None:
        raise ValueError("`rayipy start --head` did not print its address")
    return found.group(1)


def joined_node(output: str) -> str:
    """The node id's start that ``rayipy start --address`` printed (it names the node
    in the head's answers); ValueError if it is not there."""
    found = _NODE_JOINED.search(output)
    if found is None:
        raise ValueError("`rayipy start --address` did not print its node id")
    return found.group(1)


# -- Slurm ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SlurmRequest:
    """What a Slurm launcher asks ``sbatch`` for. ``None``: the site's default."""

    nodes: int = 1
    cpus_per_node: int | None = None
    partition: str | None = None
    time: str | None = None
    account: str | None = None
    job_name: str = "rayipy"
    extra: tuple[str, ...] = ()     # more sbatch options, as words
    nodelist: tuple[str, ...] = field(default=())

    def check(self) -> None:
        if not isinstance(self.nodes, int) or self.nodes < 1:
            raise ValueError(f"nodes must be a whole number >= 1, got {self.nodes!r}")
        if self.cpus_per_node is not None and (not isinstance(self.cpus_per_node, int)
                                               or self.cpus_per_node < 1):
            raise ValueError(f"cpus_per_node must be a whole number >= 1, got "
                             f"{self.cpus_per_node!r}")
        if self.time is not None and not re.fullmatch(
                r"(\d+-)?\d+(:\d+){0,2}|UNLIMITED|INFINITE", str(self.time)):
            raise ValueError(f"time is Slurm's: MINUTES, HH:MM:SS or D-HH:MM:SS, got "
                             f"{self.time!r}")
        if not self.job_name or any(c.isspace() for c in self.job_name):
            raise ValueError(f"job_name must be one word, got {self.job_name!r}")
        if self.nodelist and len(self.nodelist) != self.nodes:
            raise ValueError(f"nodelist names {len(self.nodelist)} node(s) for nodes="
                             f"{self.nodes}")


def sbatch_argv(request: SlurmRequest, script: str, output: str, command: str = "sbatch") -> list[str]:
    """``sbatch`` for the cluster's job: one task per node, ``--parsable`` so that the
    answer is the job id."""
    argv = [command, "--parsable", f"--job-name={request.job_name}", f"--nodes={request.nodes}",
            "--ntasks-per-node=1", f"--output={output}"]
    if request.cpus_per_node is not None:
        argv.append(f"--cpus-per-task={request.cpus_per_node}")
    if request.partition:
        argv.append(f"--partition={request.partition}")
    if request.time:
        argv.append(f"--time={request.time}")
    if request.account:
        argv.append(f"--account={request.account}")
    if request.nodelist:
        argv.append(f"--nodelist={','.join(request.nodelist)}")
    return argv + list(request.extra) + [script]


def srun_argv(request: SlurmRequest, task: Sequence[str]) -> list[str]:
    """The job script's one ``srun``: one task on each node, all killed when one fails."""
    argv = ["srun", f"--nodes={request.nodes}", f"--ntasks={request.nodes}",
            "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    if request.cpus_per_node is not None:
        argv.append(f"--cpus-per-task={request.cpus_per_node}")
    return argv + list(task)


def batch_script(srun: Sequence[str]) -> str:
    """The job script: the srun in the foreground, so the job lasts as long as the cluster."""
    return "#!/bin/sh\n# rayipy cluster (rayipy.cluster.SlurmCluster)\nexec " + shlex.join(list(srun)) + "\n"


def parse_job_id(sbatch_output: str) -> str:
    """The job id of ``sbatch --parsable`` (``1234`` or ``1234;cluster``)."""
    text = sbatch_output.strip().splitlines()[-1] if sbatch_output.strip() else ""
    job_id = text.split(";", 1)[0]
    if not job_id.isdigit():
        raise ValueError(f"sbatch did not answer with a job id: {sbatch_output.strip()!r}")
    return job_id


ENDED_STATES = frozenset({"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL",
                          "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"})


def job_state(scontrol_output: str) -> str | None:
    """The ``JobState=`` of ``scontrol show job``'s output (None if absent)."""
    found = re.search(r"\bJobState=(\S+)", scontrol_output)
    return found.group(1) if found else None


def node_job_request(request: SlurmRequest) -> SlurmRequest:
    """What ``adapt`` asks ``sbatch`` for each node it adds: one node, one task, with the
    cluster's CPUs per node, partition, time limit, account, name and extra options."""
    return SlurmRequest(nodes=1, cpus_per_node=request.cpus_per_node,
                        partition=request.partition, time=request.time,
                        account=request.account, job_name=request.job_name,
                        extra=request.extra)


def squeue_argv(job_ids: Sequence[str]) -> list[str]:
    """``squeue`` for the state of ``job_ids``, one ``ID STATE`` line each. Slurm lists
    only jobs not yet ended (and, for a while, the ended ones); one it forgot is absent."""
    return ["squeue", "--noheader", "--format=%i %T", f"--jobs={','.join(job_ids)}"]


def queued_states(squeue_output: str) -> dict[str, str]:
    """Job id -> state from ``squeue_argv``'s output."""
    states: dict[str, str] = {}
    for line in squeue_output.splitlines():
        words = line.split()
        if len(words) == 2 and words[0].isdigit():
            states[words[0]] = words[1]
    return states
