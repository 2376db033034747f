"""The rayipy command: start (head, join), status, stop, and init() finding the cluster.

Each "machine" here is a rayipy directory of its own ($RAYIPY_HOME) on loopback; the
tests on really separate hosts are in tests/multihost/. Processes that `rayipy start`
leaves running are not our children: the fixture finds them by their RAYIPY_HOME and
kills whatever `rayipy stop` did not stop, even when the test failed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import rayipy
from helpers import kill_pids, processes_with_env, wait_until
from rayipy.transport.endpoint import free_tcp_port


class Machine:
    """A rayipy directory standing for one machine, with the command run against it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.dir = home / socket.gethostname()   # this machine's part of RAYIPY_HOME
        self.env = dict(os.environ, RAYIPY_HOME=str(home))
        self.env.pop("RAYIPY_ADDRESS", None)

    def rayipy(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rayipy", *args], capture_output=True,
                              text=True, timeout=timeout, env=self.env, stdin=subprocess.DEVNULL)

    def python(self, source: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(source)], capture_output=True,
                              text=True, timeout=timeout, env={**self.env, **(env or {})},
                              stdin=subprocess.DEVNULL)

    def start_head(self, *args: str, password: str = "pw-one") -> str:
        result = self.rayipy("start", "--head", "--node-ip-address", "127.0.0.1", "--port", "0",
                             "--password", password, *args)
        assert result.returncode == 0, result.stderr
        return self.cluster_file()["address"]

    def cluster_file(self) -> dict:
        return json.loads((self.dir / "cluster.json").read_text())

    def processes(self) -> list[int]:
        return processes_with_env("RAYIPY_HOME", str(self.home))


@pytest.fixture
def machines(tmp_path):
    made: list[Machine] = []

    def make() -> Machine:
        machine = Machine(tmp_path / f"machine{len(made)}")
        made.append(machine)
        return machine

    try:
        yield make
    finally:
        for machine in made:
            if (machine.dir / "cluster.json").exists():
                machine.rayipy("stop", "--force", timeout=30)
            kill_pids(machine.processes())


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def test_version_and_info():
    assert subprocess.run([sys.executable, "-m", "rayipy", "--version"], capture_output=True,
                          text=True).stdout.strip() == f"rayipy {rayipy.__version__}"
    info = subprocess.run([sys.executable, "-m", "rayipy.cli", "info"], capture_output=True, text=True)
    assert info.returncode == 0 and "pyzmq" in info.stdout and "CPUs" in info.stdout


def test_start_head_prints_how_to_join_and_runs_detached(machines):
    a = machines()
    result = a.rayipy("start", "--head", "--node-ip-address", "127.0.0.1", "--port", "0",
                      "--num-cpus", "2", "--resources", '{"disk": 3}', "--redis-password", "s3cret-pw")
    out = ok(result)
    address = a.cluster_file()["address"]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", address)
    # The join and connect lines leave the password out (it would show in `ps`); it is
    # printed once, on its own.
    assert f"    rayipy start --address='{address}'\n" in out
    assert f"rayipy.init(address='{address}')" in out
    assert out.count("s3cret-pw") == 1 and "The cluster's password: s3cret-pw" in out

    # The connection file is private; the processes outlive the command, in sessions of
    # their own (no terminal to hang them up); the key is on no command line, in no log.
    assert stat.S_IMODE((a.dir / "cluster.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(a.dir.stat().st_mode) == 0o700 and stat.S_IMODE(a.home.stat().st_mode) == 0o700
    records = a.cluster_file()["processes"]
    assert [r["role"] for r in records] == ["head", "agent"]
    for record in records:
        assert os.getsid(record["pid"]) == record["pid"]
    wait_until(lambda: len(a.processes()) == 4, message="head, agent and 2 workers")
    for pid in a.processes():
        assert b"s3cret-pw" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    for log in (a.dir / "logs").iterdir():
        assert "s3cret-pw" not in log.read_text()

    program = """
        import rayipy
        rayipy.init(address=ADDRESS)
        @rayipy.remote
        def square(x):
            return x * x
        print(rayipy.get([square.remote(i) for i in range(20)]) == [i * i for i in range(20)],
              rayipy.cluster_resources()["CPU"], rayipy.cluster_resources()["disk"])
    """
    expected = "True 2.0 3.0"
    assert ok(a.python(program.replace("ADDRESS", "'auto'"))).strip() == expected
    # No address: $RAYIPY_ADDRESS, or the cluster this machine runs (Ray's rules).
    assert ok(a.python(program.replace("ADDRESS", "None"), {"RAYIPY_ADDRESS": address})).strip() == expected
    assert ok(a.python(program.replace("ADDRESS", "None"))).strip() == expected
    # The address alone is enough on this machine: the key is in its connection file.
    assert ok(a.python(program.replace("ADDRESS", repr(address)))).strip() == expected
    # Elsewhere (another rayipy directory), the password is needed, and checked.
    other = {"RAYIPY_HOME": str(a.home.parent / "elsewhere")}
    assert ok(a.python(program.replace("ADDRESS", f"{address!r}, _redis_password='s3cret-pw'"),
                       other)).strip() == expected
    wrong = a.python(program.replace("ADDRESS", f"{address!r}, password='nope'"), other)
    assert wrong.returncode != 0 and "AuthenticationError" in wrong.stderr
    missing = a.python(program.replace("ADDRESS", repr(address)), other)
    assert missing.returncode != 0 and "needs the cluster's password" in missing.stderr


def test_the_head_serves_the_dashboard_and_says_where(machines):
    import urllib.request
    a = machines()
    out = ok(a.rayipy("start", "--head", "--node-ip-address", "127.0.0.1", "--port", "0",
                      "--num-cpus", "1", "--dashboard-port", "0"))
    url = re.search(r"^Dashboard: (http://127\.0\.0\.1:\d+)$", out, re.M).group(1)
    # The user gave a loopback address: the note asks for another, not for the option.
    assert "127.0.0.1 is a loopback address" in out and "give --node-ip-address" not in out
    assert a.cluster_file()["dashboard_url"] == url.removeprefix("http://")
    assert f"Dashboard: {url}" in ok(a.rayipy("status"))
    with urllib.request.urlopen(url, timeout=10) as page:
        assert page.status == 200
    assert ok(a.python("import rayipy; print(rayipy.init(address='auto').dashboard_url)")).strip() \
        == url.removeprefix("http://")
    ok(a.rayipy("stop"))
    out = ok(a.rayipy("start", "--head", "--node-ip-address", "127.0.0.1", "--port", "0",
                      "--num-cpus", "1", "--include-dashboard", "false"))
    assert "Dashboard" not in out and a.cluster_file()["dashboard_url"] == ""


def test_a_driver_joining_with_auto_reports_its_machines_node(machines):
    """Issue 14: init(address="auto") gave get_node_id() == ''; a driver on a machine
    with an agent runs on that node, as a local cluster's driver does."""
    a = machines()
    a.start_head("--num-cpus", "1")
    node = ok(a.python("import rayipy; rayipy.init(address='auto'); "
                       "print(rayipy.get_runtime_context().get_node_id())")).strip()
    assert node == a.cluster_file()["node_id"] and node
    # Dashboard options set up a new local cluster's head: refused when joining, not ignored.
    refused = a.python("import rayipy; rayipy.init(address='auto', include_dashboard=False)")
    assert refused.returncode != 0
    assert "apply to a new local cluster only" in refused.stderr, refused.stderr


def test_a_dashboard_beyond_loopback_prints_its_token_and_requires_it(machines):
    import urllib.error
    import urllib.request
    a = machines()
    out = ok(a.rayipy("start", "--head", "--node-ip-address", "127.0.0.1", "--port", "0",
                      "--num-cpus", "1", "--dashboard-port", "0", "--dashboard-host", "0.0.0.0"))
    url = re.search(r"^Dashboard: (http://\S+:\d+/\?token=[\w-]{32,})$", out, re.M).group(1)
    assert f"Dashboard: {url}" in ok(a.rayipy("status"))
    port = re.search(r":(\d+)/", url).group(1)
    local = f"http://127.0.0.1:{port}"
    token = url.rsplit("=", 1)[1]
    with urllib.request.urlopen(f"{local}/api/health?token={token}", timeout=10) as page:
        assert page.status == 200
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{local}/api/health", timeout=10)
    assert refused.value.code == 403
    ok(a.rayipy("stop"))


def test_status_shows_nodes_resources_and_tasks(machines):
    a = machines()
    address = a.start_head("--num-cpus", "2", "--num-gpus", "1")
    busy = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time, rayipy
        rayipy.init(address="auto")
        @rayipy.remote
        def wait():
            time.sleep(60)
        refs = [wait.remote() for _ in range(5)]
        print("submitted", flush=True)
        sys.stdin.read()
    """)], env=a.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert busy.stdout.readline().strip() == "submitted"
        def two_running():
            result = a.rayipy("status")
            return "running 2" in result.stdout and result.stdout
        out = wait_until(two_running, timeout=30, interval=0.2)
        assert f"at {address}" in out and "Nodes (1 alive)" in out
        assert re.search(r"CPU\s+2/2", out) and re.search(r"GPU\s+0/1", out), out
        assert "queued 3" in out and "drivers connected: 1" in out
    finally:
        busy.kill()
        busy.wait()


def test_a_second_machine_joins_and_runs_tasks(machines):
    a, b = machines(), machines()
    address = a.start_head("--num-cpus", "1", password="join-pw")
    b.env["RAYIPY_PASSWORD"] = "join-pw"   # instead of --password, out of `ps`
    out = ok(b.rayipy("start", f"--address={address}", "--num-cpus", "1",
                      "--resources", '{"at_b": 1}'))
    assert "joined the rayipy cluster" in out
    info = b.cluster_file()
    assert b"join-pw" not in Path(f"/proc/{info['processes'][0]['pid']}/cmdline").read_bytes()
    assert info["address"] == address and not info["head"] and [r["role"] for r in info["processes"]] == ["agent"]
    program = """
        import os, rayipy
        rayipy.init(address="auto")
        @rayipy.remote(resources={"at_b": 1})
        def where():
            return os.environ["RAYIPY_HOME"]
        print(len(rayipy.nodes()), rayipy.cluster_resources()["CPU"], rayipy.get(where.remote()))
    """
    # From either machine: on B, "auto" finds the remote head through B's connection file.
    for machine in (a, b):
        assert ok(machine.python(program)).split() == ["2", "2.0", str(b.home)]
    status = ok(a.rayipy("status"))
    assert "Nodes (2 alive)" in status and re.search(r"CPU\s+0/2", status)
    assert ok(b.rayipy("stop")).startswith("Stopped")
    assert not b.processes() and not (b.dir / "cluster.json").exists()
    assert len(a.processes()) == 3   # A is untouched


def test_joining_with_a_wrong_password_is_refused_at_once(machines):
    a, b = machines(), machines()
    address = a.start_head("--num-cpus", "1", password="right")
    result = b.rayipy("start", f"--address={address}", "--password=wrong", "--num-cpus", "1", timeout=20)
    assert result.returncode == 1
    assert "refused the password (wrong password)" in result.stderr
    assert not (b.dir / "cluster.json").exists() and not b.processes()


def test_joining_a_dead_address_fails_with_a_clear_message(machines):
    b = machines()
    port = free_tcp_port()
    result = b.rayipy("start", f"--address=127.0.0.1:{port}", "--password=x", timeout=30)
    assert result.returncode == 1
    assert f"cannot join 127.0.0.1:{port}: cannot reach a rayipy head at 127.0.0.1:{port} (Connection refused)" in result.stderr
    no_password = b.rayipy("start", f"--address=127.0.0.1:{port}")
    assert no_password.returncode == 1 and "needs the cluster's password" in no_password.stderr
    assert not b.processes()


def test_start_twice_and_bad_arguments_are_refused(machines):
    a = machines()
    a.start_head("--num-cpus", "1")
    again = a.rayipy("start", "--head", "--node-ip-address", "127.0.0.1", "--port", "0")
    assert again.returncode == 1 and "already running on this machine" in again.stderr
    for args, message in [
            ((), "--head (a new cluster"),
            (("--address=127.0.0.1:1", "--port", "5"), "--port is the head's port"),
            (("--head", "--resources", "{nope"), "must be a JSON object"),
            (("--head", "--resources", '{"CPU": 2}'), "--num-cpus"),
            (("--head", "--resources", '{"x": -1}'), "amounts >= 0"),
            (("--head", "--num-cpus", "-1"), "--num-cpus must be >= 0"),
            (("--address=nonsense",), "must look like 'host:port'")]:
        result = machines().rayipy("start", *args)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)


def test_head_port_in_use_or_foreign_address_is_a_clear_error(machines):
    a = machines()
    address = a.start_head("--num-cpus", "1")
    port = address.rpartition(":")[2]
    taken = machines().rayipy("start", "--head", "--node-ip-address", "127.0.0.1", "--port", port)
    assert taken.returncode == 1 and f"port {port} on 127.0.0.1 is already in use" in taken.stderr
    foreign = machines().rayipy("start", "--head", "--node-ip-address", "192.0.2.77", "--port", "0")
    assert foreign.returncode == 1 and "not an address of this machine" in foreign.stderr


def test_stop_kills_what_does_not_stop_within_the_grace_period(machines):
    a = machines()
    a.start_head("--num-cpus", "1")
    head = a.cluster_file()["processes"][0]["pid"]
    wait_until(lambda: len(a.processes()) == 3)
    os.kill(head, signal.SIGSTOP)   # a stopped process cannot act on SIGTERM
    out = ok(a.rayipy("stop", "--grace-period", "0.5"))
    assert "Stopped 3 rayipy process(es)" in out and "1 killed after the grace period" in out
    assert not a.processes()
    assert "No rayipy processes" in ok(a.rayipy("stop"))


def test_stop_and_status_with_nothing_running(machines):
    a = machines()
    assert "No rayipy processes started by `rayipy start`" in ok(a.rayipy("stop"))
    status = a.rayipy("status")
    assert status.returncode == 1 and "no rayipy cluster was started on this machine" in status.stderr


def test_block_stays_in_the_foreground_and_stops_everything_on_interrupt(machines):
    a = machines()
    proc = subprocess.Popen([sys.executable, "-m", "rayipy", "start", "--head", "--block",
                             "--node-ip-address", "127.0.0.1", "--port", "0", "--num-cpus", "1"],
                            env=a.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("Running in the foreground"):
                break
        assert proc.poll() is None
        assert "Nodes (1 alive)" in ok(a.rayipy("status"))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert not a.processes() and not (a.dir / "cluster.json").exists()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_init_auto_without_a_cluster_and_init_local_beside_one(machines, monkeypatch):
    a = machines()
    missing = a.python("import rayipy; rayipy.init(address='auto')")
    assert missing.returncode != 0 and "ClusterNotFoundError" in missing.stderr
    assert "rayipy start --head" in missing.stderr
    a.start_head("--num-cpus", "1")
    sized = a.python("import rayipy; rayipy.init(num_cpus=2)")
    assert sized.returncode != 0 and "address='local'" in sized.stderr
    local = a.python("""
        import rayipy
        ctx = rayipy.init(address="local", num_cpus=2)
        print(ctx.started_locally, rayipy.cluster_resources()["CPU"])
    """)
    assert ok(local).split() == ["True", "2.0"]


def test_stop_force_leaves_no_object_store_file(machines):
    a = machines()
    a.start_head("--num-cpus", "1")
    agent = a.cluster_file()["processes"][1]
    assert agent["role"] == "agent"

    def arenas() -> set[str]:
        try:
            return {os.readlink(fd) for fd in Path(f"/proc/{agent['pid']}/fd").iterdir()
                    if "rayipy-arena-" in os.readlink(fd)}
        except OSError:
            return set()
    wait_until(lambda: arenas(), message="the agent never opened its object store")
    [arena] = arenas()
    ok(a.rayipy("stop", "--force"))          # SIGKILL: the agent cannot clean up itself
    assert not os.path.exists(arena)
