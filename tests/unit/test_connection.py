"""The connection file, address rules of init(), and what `rayipy status` prints."""

from __future__ import annotations

import datetime
import os
import socket
import stat

import pytest

from rayipy import exceptions
from rayipy.cli_status import format_bytes, format_duration, format_status
from rayipy.node import connection
from rayipy.node.connection import ClusterFile, ProcessRecord


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYIPY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAYIPY_ADDRESS", raising=False)
    return tmp_path / "home"


def alive_record() -> ProcessRecord:
    """A record of a process that surely runs: this one."""
    return ProcessRecord("head", os.getpid(), connection.process_start_time(os.getpid()), "")


def cluster_file(address: str = "10.0.0.1:6379", processes=None) -> ClusterFile:
    key = connection.key_from_password("pw")
    return ClusterFile(address, key.hex(), "pw", True, "10.0.0.1", "ab" * 8,
                       processes=[alive_record()] if processes is None else processes)


def test_file_round_trip_is_private(home):
    info = cluster_file()
    path = connection.write_cluster_file(info)
    assert path == home / socket.gethostname() / "cluster.json"   # machines may share a home
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == stat.S_IMODE(home.stat().st_mode) == 0o700
    assert connection.read_cluster_file() == info
    assert [p for p in path.parent.iterdir() if p.name.startswith(".cluster-")] == []  # no temp file
    connection.remove_cluster_file()
    assert connection.read_cluster_file() is None
    connection.remove_cluster_file()   # twice is fine


def test_damaged_file_says_what_to_do(home):
    (home / socket.gethostname()).mkdir(parents=True)
    (home / socket.gethostname() / "cluster.json").write_text("{not json")
    with pytest.raises(exceptions.RayipySystemError, match="damaged.*remove it"):
        connection.read_cluster_file()


def test_process_records_tell_a_reused_pid_from_ours():
    assert alive_record().alive()
    assert not ProcessRecord("head", os.getpid(), "1", "").alive()   # another start time
    assert not ProcessRecord("head", 2**22 + 12345, "1", "").alive()


def test_parse_address():
    assert connection.parse_address("10.0.0.1:6379") == ("10.0.0.1", 6379)
    assert connection.parse_address("tcp://host:1") == ("host", 1)
    for bad in ("10.0.0.1", ":6379", "host:port", "host:0", "host:70000"):
        with pytest.raises(ValueError, match="host:port"):
            connection.parse_address(bad)
    with pytest.raises(ValueError, match="ray://"):
        connection.parse_address("ray://10.0.0.1:10001")
    with pytest.raises(TypeError):
        connection.parse_address(6379)


def test_resolve_follows_rays_address_rules(home, monkeypatch):
    key = connection.key_from_password("pw")
    # Nothing recorded: no address starts a local cluster, "auto" is an error.
    assert connection.resolve(None, None) is None
    with pytest.raises(exceptions.ClusterNotFoundError, match="rayipy start --head"):
        connection.resolve("auto", None)
    assert connection.resolve("local", None) is None
    # A cluster runs on this machine.
    connection.write_cluster_file(cluster_file())
    for address in (None, "auto"):
        target = connection.resolve(address, None)
        assert (target.head_address, target.key) == ("tcp://10.0.0.1:6379", key)
        assert target.node_id == b"\xab" * 8    # a driver here runs on this machine's node
    assert connection.resolve("local", None) is None
    assert connection.resolve("10.0.0.1:6379", None).key == key          # key from the file
    assert connection.resolve("10.0.0.1:6379", None).node_id == b"\xab" * 8
    # A password becomes the key with the head's salt, asked when connecting (key_for).
    assert connection.resolve("10.0.0.9:6379", "other").password == "other"
    assert connection.resolve("10.0.0.9:6379", "other").node_id == b""   # another cluster
    with pytest.raises(ValueError, match="needs the cluster's password"):
        connection.resolve("10.0.0.9:6379", None)
    # $RAYIPY_ADDRESS stands for a missing address.
    monkeypatch.setenv("RAYIPY_ADDRESS", "10.0.0.7:1234")
    assert connection.resolve(None, "x").head_address == "tcp://10.0.0.7:1234"
    monkeypatch.setenv("RAYIPY_ADDRESS", "local")
    assert connection.resolve(None, None) is None


def test_a_stale_file_is_not_a_running_cluster(home):
    connection.write_cluster_file(cluster_file(processes=[ProcessRecord("head", os.getpid(), "1", "")]))
    assert connection.running_cluster() is None
    assert connection.resolve(None, None) is None
    with pytest.raises(exceptions.ClusterNotFoundError, match="no longer running"):
        connection.resolve("auto", None)


def test_passwords_and_keys():
    assert connection.key_from_password("a") == connection.key_from_password("a")
    assert connection.key_from_password("a") != connection.key_from_password("b")
    assert len(connection.key_from_password("a")) == 32
    # Salted: the same password gives another cluster another key.
    assert connection.key_from_password("a", b"s" * 16) != connection.key_from_password("a")


def test_the_key_is_scrypt_of_the_password_and_salt_and_slow():
    import hashlib
    import time
    connection.key_from_password.cache_clear()
    start = time.perf_counter()
    key = connection.key_from_password("correct horse", b"salt" * 4)
    took = time.perf_counter() - start
    assert key == hashlib.scrypt(b"correct horse", salt=b"salt" * 4, n=2**15, r=8, p=2,
                                 maxmem=64 * 2**20, dklen=32)
    assert took > 0.03, f"a guess costs only {took * 1000:.0f} ms"


def test_a_password_file_is_read_and_bad_ones_are_refused(tmp_path):
    path = tmp_path / "pw"
    path.write_text("s3cret\n")
    assert connection.read_password_file(str(path)) == "s3cret"
    path.write_text("")
    with pytest.raises(ValueError, match="empty"):
        connection.read_password_file(str(path))
    with pytest.raises(ValueError, match="cannot read"):
        connection.read_password_file(str(tmp_path / "missing"))
    first, second = connection.new_password(), connection.new_password()
    assert first != second and len(first) == 32 and first.isalnum()


def test_bind_and_reach_checks_say_what_is_wrong():
    port = connection.check_bindable("127.0.0.1", 0)
    assert port > 0
    with pytest.raises(ConnectionError, match="Connection refused"):
        connection.check_reachable("127.0.0.1", port)
    with pytest.raises(OSError, match="not an address of this machine"):
        connection.check_bindable("192.0.2.77", 0)
    with pytest.raises(ConnectionError, match="cannot resolve the host name"):
        connection.resolve_host("no-such-host.invalid")
    assert connection.local_ip_toward("127.0.0.1") == "127.0.0.1"


STATUS = {
    "cluster_id": "3f2a9c1b7d2e", "address": "tcp://10.0.0.1:6379", "uptime": 3725.0,
    "nodes": [
        {"NodeID": "bb" * 8, "NodeManagerAddress": "10.0.0.2", "NodeManagerHostname": "beta",
         "Resources": {"CPU": 4.0, "memory": 8 * 2**30, "disk": 1.0}},
        {"NodeID": "aa" * 8, "NodeManagerAddress": "10.0.0.1", "NodeManagerHostname": "alpha",
         "Resources": {"CPU": 2.0, "GPU": 1.0, "memory": 4 * 2**30}},
    ],
    "available": {"aa" * 8: {"CPU": 0.0, "GPU": 1.0, "memory": 4 * 2**30},
                  "bb" * 8: {"CPU": 3.0, "memory": 8 * 2**30, "disk": 1.0}},
    "tasks": {"queued": 5, "running": 3, "assigned": 7, "workers": 6, "blocked_workers": 1,
              "leased_workers": 0, "finished": 100, "failed": 2, "cancelled": 4, "retried": 1},
    "dropped_messages": {"bad signature": 1},
    "peers": {"driver": 1},
}


def test_status_text():
    text = format_status(STATUS, datetime.datetime(2025, 1, 2, 3, 4, 5))
    lines = text.splitlines()
    assert lines[0] == ("======== rayipy cluster 3f2a9c1b7d2e at 10.0.0.1:6379: 2025-01-02 03:04:05 "
                        "(up 1h 2m 5s) ========")
    assert "Nodes (2 alive)" in lines
    head = lines.index("Nodes (2 alive)") + 1
    assert lines[head] == "  node aaaaaaaa  10.0.0.1 (alpha)  head  2/2 CPU, 0/1 GPU"
    assert lines[head + 1] == "  node bbbbbbbb  10.0.0.2 (beta)  1/4 CPU, 0/1 disk"
    assert "  CPU     3/6" in lines and "  GPU     0/1" in lines and "  memory  0 B/12.00 GiB reserved by tasks (real use: under Nodes)" in lines
    assert "  queued 9, running 3, finished 100, failed 2, cancelled 4, retried 1" in lines   # 5 + (7 - 3)
    assert "  workers 6 (1 blocked on nested tasks, 0 leased to drivers)" in lines
    assert lines[-1] == "Dropped messages (bad signature, malformed...): bad signature: 1"


def test_status_lists_lost_nodes_apart():
    lost = {"NodeID": "cc" * 8, "NodeManagerAddress": "10.0.0.3", "NodeManagerHostname": "gamma",
            "Resources": {"CPU": 8.0}, "Alive": False, "DeathReason": "its node stopped answering"}
    lines = format_status({**STATUS, "nodes": STATUS["nodes"] + [lost]}).splitlines()
    assert "Nodes (2 alive)" in lines and "  CPU     3/6" in lines
    assert lines[lines.index("Lost nodes (1)") + 1] == \
        "  node cccccccc  10.0.0.3 (gamma): its node stopped answering"


def test_status_of_an_empty_cluster():
    text = format_status({**STATUS, "nodes": [], "available": {}, "tasks": {},
                          "dropped_messages": {}})
    assert "(no nodes: the head has no node agent)" in text and "  (none)" in text


def test_formatting_helpers():
    assert format_bytes(512) == "512 B" and format_bytes(1536) == "1.50 KiB"
    assert format_duration(59) == "59s" and format_duration(86400 + 61) == "1d 0h 1m 1s"
