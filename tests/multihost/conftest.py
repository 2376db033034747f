"""Separate hosts for tests: one Linux network namespace per host, joined by a veth pair.

Each host has its own network stack and address (10.213.0.1, 10.213.0.2), its own host
name (every command runs under ``unshare --uts`` with ``hostname``, since a network
namespace does not change ``socket.gethostname()``), an ``/etc/hosts`` that resolves the
host names (``/etc/netns/NAME/hosts``, which ``ip netns exec`` mounts over /etc/hosts), and
its own rayipy directory. No process of one host can reach the other's loopback, so an
address that only works on the same machine fails here.

Namespace and link names are unique per run; everything is removed at the end, even when
the test fails, after killing every process left in the namespaces. The tests skip,
saying why, where namespaces cannot be made (not root, no ``ip`` command).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from helpers import kill_pids, wait_until

SUBNET = "10.213.0"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def namespaces_unavailable() -> str | None:
    """Why this machine cannot make network namespaces, or None if it can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux-only"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    for tool in ("ip", "unshare", "hostname"):
        if shutil.which(tool) is None:
            return f"no `{tool}` command (iproute2 / util-linux / hostname)"
    probe = f"ryprobe{uuid.uuid4().hex[:6]}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


class Host:
    """One host: a network namespace, a host name, an address, a rayipy directory."""

    def __init__(self, name: str, netns: str, ip: str, home: Path) -> None:
        self.name = name
        self.netns = netns
        self.ip = ip
        self.home = home
        self.env = dict(os.environ, RAYIPY_HOME=str(home))
        self.env.pop("RAYIPY_ADDRESS", None)

    def argv(self, *command: str) -> list[str]:
        """``command`` as run on this host: in its namespace, under its host name."""
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c",
                'hostname "$0" && exec "$@"', self.name, *command]

    def run(self, *command: str, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*command), capture_output=True, text=True, timeout=timeout,
                              env=self.env, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def rayipy(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "rayipy", *args, timeout=timeout)

    def python(self, source: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-c", textwrap.dedent(source), timeout=timeout)

    def popen_python(self, source: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(sys.executable, "-c", textwrap.dedent(source)),
                                env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def pids(self) -> list[int]:
        """Every live process in this host's network namespace."""
        out = _ip("netns", "pids", self.netns, check=False).stdout
        return [int(pid) for pid in out.split()]

    def kill_everything(self) -> None:
        kill_pids(self.pids())
        wait_until(lambda: not self.pids(), timeout=10,
                   message=f"processes left in {self.netns}: {self.pids()}")


@pytest.fixture
def two_hosts(tmp_path):
    """Hosts ``hostA`` (10.213.0.1) and ``hostB`` (10.213.0.2) on one link."""
    why = namespaces_unavailable()
    if why:
        pytest.skip(f"multi-host tests need network namespaces: {why}")
    tag = uuid.uuid4().hex[:6]
    hosts = [Host(name, f"ry{tag}{letter}", f"{SUBNET}.{i + 1}", tmp_path / name)
             for i, (name, letter) in enumerate((("hostA", "a"), ("hostB", "b")))]
    links = [f"ry{tag}{h.netns[-1]}v" for h in hosts]   # veth ends; names of <= 15 chars
    hosts_file = "127.0.0.1 localhost\n" + "".join(f"{h.ip} {h.name}\n" for h in hosts)
    try:
        for host in hosts:
            _ip("netns", "add", host.netns)
            etc = Path("/etc/netns") / host.netns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts_file)
        _ip("link", "add", links[0], "type", "veth", "peer", "name", links[1])
        for host, link in zip(hosts, links):
            _ip("link", "set", link, "netns", host.netns)
            _ip("-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", link)
            _ip("-n", host.netns, "link", "set", link, "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")
        yield hosts
    finally:
        _remove(hosts)


@pytest.fixture
def three_hosts(tmp_path):
    """Hosts ``hostA``, ``hostB``, ``hostC`` (10.213.0.1-3) on one switch: a bridge in a
    namespace of its own (no address anywhere outside the hosts' namespaces)."""
    why = namespaces_unavailable()
    if why:
        pytest.skip(f"multi-host tests need network namespaces: {why}")
    tag = uuid.uuid4().hex[:6]
    switch = f"ry{tag}s"
    hosts = [Host(name, f"ry{tag}{letter}", f"{SUBNET}.{i + 1}", tmp_path / name)
             for i, (name, letter) in enumerate((("hostA", "a"), ("hostB", "b"), ("hostC", "c")))]
    hosts_file = "127.0.0.1 localhost\n" + "".join(f"{h.ip} {h.name}\n" for h in hosts)
    try:
        _ip("netns", "add", switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        for host in hosts:
            _ip("netns", "add", host.netns)
            etc = Path("/etc/netns") / host.netns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts_file)
            inside, port = f"{host.netns}h", f"{host.netns}p"   # veth ends, <= 15 chars
            _ip("link", "add", inside, "type", "veth", "peer", "name", port)
            _ip("link", "set", inside, "netns", host.netns)
            _ip("link", "set", port, "netns", switch)
            _ip("-n", switch, "link", "set", port, "master", "br0")
            _ip("-n", switch, "link", "set", port, "up")
            _ip("-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", inside)
            _ip("-n", host.netns, "link", "set", inside, "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")
        yield hosts
    finally:
        _remove(hosts)
        _ip("netns", "del", switch, check=False)


def _remove(hosts: list[Host]) -> None:
    """Kill every process left on the hosts, then remove their namespaces (each takes
    its veth end along) and host files."""
    for host in hosts:
        try:
            kill_pids(host.pids())
            wait_until(lambda: not host.pids(), timeout=10)
        finally:
            _ip("netns", "del", host.netns, check=False)
            shutil.rmtree(Path("/etc/netns") / host.netns, ignore_errors=True)
