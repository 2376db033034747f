"""``SSHCluster``: a cluster on machines you reach with ``ssh``.

    with SSHCluster(["alpha", "beta", "gamma"]) as cluster:
        rayipy.init(address=cluster.address, password=cluster.password)

The system's OpenSSH client runs every command, so the user's keys, agent and
``~/.ssh/config`` (aliases, jump hosts, ports) apply as they do in a terminal. The head
(and a node) starts on the first host with ``rayipy start --head``, then every other
host joins with ``rayipy start --address`` at once. Each command returns as soon as its
processes run in the background (``rayipy start``'s own daemons), so no ``ssh``
connection stays open; ``close()`` runs ``rayipy stop`` on each host that started,
the agents first, then the head.

``initial=N`` starts only the first N hosts; the others are spare, for ``adapt()``
(``Launcher.adapt``), which starts them when tasks wait and retires them (``rayipy
stop`` there, so the agent leaves gracefully) when idle. Each node is known by the
node id its ``rayipy start`` printed, so only nodes this launcher started are retired,
and never the head's.

The password goes down each ``ssh`` channel's stdin, one line, which the remote shell
reads into ``$RAYIPY_PASSWORD`` (``commands.PASSWORD_PRELUDE``): no command line on
either side carries it, so ``ps`` never shows it.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, Sequence

from rayipy import exceptions
from rayipy.cluster import commands
from rayipy.cluster.base import Launcher
from rayipy.cluster.commands import SSHSettings, StartOptions

START_TIMEOUT = 120.0   # per `rayipy start` (it waits for its node to register: up to 30 s)
STOP_TIMEOUT = 60.0     # per `rayipy stop` (10 s grace, then kills)


class SSHCluster(Launcher):
    """A rayipy cluster on ``hosts``: the head on the first, a node on each.

    ``hosts``: ssh destinations (``name``, ``user@name``, aliases from ``~/.ssh/config``).
    ``num_cpus``: CPUs each node offers (default: all of each machine's).
    ``port``: the head's port (default 6379; 0: any free port).
    ``start_options``: more ``rayipy start`` options for every host, as words
    (``["--object-store-memory", "2000000000"]``).
    ``ssh_options``: words put before the host on every ``ssh`` command line
    (``["-F", "my_ssh_config"]``, ``["-i", "key"]``).
    ``remote_python``: the Python on the hosts that imports rayipy (default: this one's
    path, as Dask does).
    ``remote_env``: environment variables set for ``rayipy`` on the hosts; they appear on
    the remote command line, so nothing secret.
    ``node_ip_address``: the head's address as the other hosts reach it (default: the
    name ssh connects to for the first host, from ``ssh -G``).
    ``password``: the cluster's (default: a new random one).
    ``initial``: how many of ``hosts`` to start now, from the first (default: all); the
    rest are spare machines for ``adapt()``.
    """

    provider = "ssh"

    def __init__(self, hosts: Sequence[str], *, num_cpus: int | None = None,
                 port: int | None = None, start_options: Sequence[str] = (),
                 ssh_options: Sequence[str] = (), ssh_command: str = "ssh",
                 remote_python: str | None = None, remote_env: Mapping[str, str] | None = None,
                 node_ip_address: str | None = None, password: str | None = None,
                 connect_timeout: int = 10, start_timeout: float = START_TIMEOUT,
                 initial: int | None = None) -> None:
        from rayipy.node.connection import new_password
        if isinstance(hosts, str):
            hosts = commands.parse_hosts(hosts)
        hosts = [commands.check_host(h) for h in hosts]
        if not hosts:
            raise ValueError("SSHCluster needs at least one host")
        commands.check_distinct(hosts)
        if initial is not None and (isinstance(initial, bool) or not isinstance(initial, int)
                                    or not 1 <= initial <= len(hosts)):
            raise ValueError(f"initial must be a whole number from 1 to {len(hosts)} (the "
                             f"hosts given), got {initial!r}")
        self.hosts = list(hosts)
        self.initial = len(hosts) if initial is None else initial
        self.options = StartOptions(num_cpus=num_cpus, port=port, extra=tuple(start_options))
        self.options.check()
        self.ssh = SSHSettings(command=ssh_command, options=tuple(ssh_options),
                               connect_timeout=connect_timeout)
        self.remote_python = remote_python or sys.executable
        self.remote_env = dict(remote_env or {})
        commands.with_env([], self.remote_env)   # checks the names now
        if password is not None and (not password or "\n" in password):
            raise ValueError("password must be one non-empty line")
        super().__init__(password if password is not None else new_password())
        self.started: list[str] = []     # hosts where `rayipy start` succeeded
        self.node_ids: dict[str, str] = {}   # host -> its node id's start (not the head's)
        self.unusable: dict[str, str] = {}   # spare host -> why it failed to start
        self.start_timeout = start_timeout
        try:
            self._start(node_ip_address)
        except BaseException:
            self.close()
            raise

    # -- starting ----------------------------------------------------------------------------
    def _start(self, node_ip_address: str | None) -> None:
        head, others = self.hosts[0], self.hosts[1:self.initial]
        node_ip = node_ip_address or self._ssh_hostname(head)
        argv = commands.start_head_argv(self.remote_python, self.options, node_ip=node_ip)
        result = self._ssh(head, argv, self.start_timeout, with_password=True)
        if result.returncode != 0:
            raise self._failure(head, "rayipy start --head", result)
        self.started.append(head)
        self._address = commands.head_address(result.stdout)
        failures = self._start_agents(others)
        if failures:
            raise exceptions.ClusterLaunchError("\n".join(str(f) for f in failures))

    def _start_agents(self, hosts: Sequence[str]) -> list[Exception]:
        """``rayipy start --address`` on ``hosts`` at once; the failures."""
        argv = commands.start_agent_argv(self.remote_python, self.address, self.options)
        results = self._ssh_all(hosts, argv, self.start_timeout, with_password=True)
        failures = []
        for host, result in zip(hosts, results):
            if result.returncode == 0:
                self.started.append(host)
                try:
                    self.node_ids[host] = commands.joined_node(result.stdout)
                except ValueError:   # started, but unknown to adapt: never retired by it
                    pass
            else:
                failures.append(self._failure(host, "rayipy start --address", result))
        return failures

    def _ssh_hostname(self, host: str) -> str | None:
        """The name or address ``ssh`` connects to for ``host`` (its config applied)."""
        try:
            result = subprocess.run(self.ssh.config_argv(host), capture_output=True, text=True,
                                    timeout=10, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return commands.ssh_config_hostname(result.stdout) if result.returncode == 0 else None

    def _ssh(self, host: str, argv: list[str], timeout: float,
             with_password: bool = False) -> subprocess.CompletedProcess:
        remote = commands.remote_command(commands.with_env(argv, self.remote_env), with_password)
        try:
            return subprocess.run(self.ssh.argv(host, remote), capture_output=True, text=True,
                                   timeout=timeout,
                                   input=self.password + "\n" if with_password else "")
        except FileNotFoundError:
            raise exceptions.ClusterLaunchError(f"no `{self.ssh.command}` command on this "
                                                f"machine (OpenSSH's client)") from None
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(e.cmd, 124, _text(e.stdout),
                                               _text(e.stderr) + f"\n(no answer in {timeout:g} s)")

    def _ssh_all(self, hosts: Sequence[str], argv: list[str], timeout: float,
                 with_password: bool = False) -> list[subprocess.CompletedProcess]:
        if not hosts:
            return []
        with ThreadPoolExecutor(max_workers=min(32, len(hosts))) as pool:
            return list(pool.map(lambda h: self._ssh(h, argv, timeout, with_password), hosts))

    @staticmethod
    def _failure(host: str, what: str, result: subprocess.CompletedProcess) -> Exception:
        said = (result.stderr or "").strip() or (result.stdout or "").strip()
        if result.returncode == 255:
            why = f"ssh could not run it (exit 255): {said}"
        elif result.returncode == commands.PASSWORD_NOT_READ:
            why = "the remote shell did not receive the password line"
        else:
            why = f"exit {result.returncode}: {said}"
        return exceptions.ClusterLaunchError(f"{host}: {what} failed; {why}")

    # -- stopping ----------------------------------------------------------------------------
    def _stop(self) -> None:
        """``rayipy stop`` on each host started: the agents at once, then the head."""
        if not self.started:
            return
        head = [h for h in self.started if h == self.hosts[0]]
        agents = [h for h in self.started if h != self.hosts[0]]
        stop = commands.stop_argv(self.remote_python)
        failures = []
        # Agents first: a head stopped first would leave them waiting 10 s for it.
        for hosts in (agents, head):
            for host, result in zip(hosts, self._ssh_all(hosts, stop, STOP_TIMEOUT)):
                if result.returncode != 0:
                    failures.append(self._failure(host, "rayipy stop", result))
        self.started = []
        if failures:
            raise exceptions.ClusterLaunchError("\n".join(str(f) for f in failures))

    # -- adapting (Launcher.adapt) ----------------------------------------------------------
    def _capacity(self) -> int:
        return len(self.hosts)

    def _spare_hosts(self) -> list[str]:
        return [h for h in self.hosts if h not in self.started and h not in self.unusable]

    def _spare(self) -> int:
        return len(self._spare_hosts())

    def _node_template(self) -> dict[str, float] | None:
        return {"CPU": float(self.options.num_cpus)} if self.options.num_cpus is not None else None

    def _host_of(self, node_id: str) -> str | None:
        return next((host for host, start in self.node_ids.items()
                     if node_id.startswith(start) and host in self.started), None)

    def _retirable(self, node: dict[str, Any]) -> bool:
        host = self._host_of(node["node_id"])
        return host is not None and host != self.hosts[0]

    def _grow(self, count: int) -> None:
        """Start the first ``count`` spare hosts; a host that fails is not tried again
        (``unusable``, and the error raised for ``adapt_status``)."""
        hosts = self._spare_hosts()[:count]
        failures = self._start_agents(hosts)
        for host, failure in zip([h for h in hosts if h not in self.started], failures):
            self.unusable[host] = str(failure)
        if failures:
            raise exceptions.ClusterLaunchError("\n".join(str(f) for f in failures))

    def _retire(self, node_id: str) -> None:
        """``rayipy stop`` on the node's host: its agent tells the head it leaves
        (``NODE_LEAVING``) and stops its workers."""
        host = self._host_of(node_id)
        if host is None or host == self.hosts[0]:
            raise exceptions.ClusterLaunchError(f"node {node_id[:8]} is not one this launcher "
                                                f"can retire")
        result = self._ssh(host, commands.stop_argv(self.remote_python), STOP_TIMEOUT)
        if result.returncode != 0:
            raise self._failure(host, "rayipy stop", result)
        self.started.remove(host)
        del self.node_ids[host]

    # -- records ----------------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        return {"provider": self.provider, "address": self._address, "hosts": self.hosts,
                "started": self.started, "ssh_command": self.ssh.command,
                "ssh_options": list(self.ssh.options), "connect_timeout": self.ssh.connect_timeout,
                "remote_python": self.remote_python, "remote_env": self.remote_env,
                "node_ids": self.node_ids}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], password: str = "") -> "SSHCluster":
        """The launcher of a cluster ``record()`` described, without starting anything:
        its ``close()`` stops it (``rayipy down``)."""
        self = cls.__new__(cls)
        Launcher.__init__(self, password)
        self.hosts = list(record["hosts"])
        self.started = list(record["started"])
        self.node_ids = dict(record.get("node_ids", {}))
        self.unusable = {}
        self.initial = len(self.hosts)
        self.options = StartOptions()
        self.ssh = SSHSettings(command=record["ssh_command"], options=tuple(record["ssh_options"]),
                               connect_timeout=int(record["connect_timeout"]))
        self.remote_python = record["remote_python"]
        self.remote_env = dict(record["remote_env"])
        self.start_timeout = START_TIMEOUT
        self._address = record.get("address")
        return self


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
