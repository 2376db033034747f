"""%cluster connect: to a cluster the test starts with a password, and the two ways it
must fail fast and readably (nothing listening; a wrong password)."""

from __future__ import annotations

import time

import pytest
from IPython.core.error import UsageError

import rayipy
from helpers import wait_until
from rayipy.api import key_from_password
from rayipy.node.launch import LocalCluster
from rayipy.transport.endpoint import free_tcp_port

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def password_cluster():
    """A cluster started apart from the driver, joined with a password (as `rayipy start
    --head` makes one); stopped by the fixture whatever happens."""
    cluster = LocalCluster(2, {})
    cluster.key = key_from_password(PASSWORD)
    address = cluster.start()
    try:
        yield address.removeprefix("tcp://")
    finally:
        cluster.stop(timeout=5)


def test_a_dead_address_fails_at_once_with_a_readable_message(shell):
    port = free_tcp_port("127.0.0.1")   # nothing listens there
    started = time.monotonic()
    with pytest.raises(UsageError) as caught:
        shell.run_line_magic("cluster", f"connect 127.0.0.1:{port} --password x")
    message = str(caught.value)
    assert f"could not connect to 127.0.0.1:{port}: cannot reach a rayipy head" in message
    assert "Connection refused" in message and "is the cluster running there" in message
    assert not rayipy.is_initialized()
    assert time.monotonic() - started < 5  # not the 10 s connection timeout


def test_a_wrong_password_fails_at_once_with_a_readable_message(shell, password_cluster):
    with pytest.raises(UsageError, match="rejected our signature: the password .* is wrong"):
        shell.run_line_magic("cluster", f"connect {password_cluster} --password wrong")
    assert not rayipy.is_initialized()


def test_a_missing_password_says_how_to_give_it(shell, password_cluster, monkeypatch):
    monkeypatch.delenv("RAYIPY_PASSWORD", raising=False)
    monkeypatch.setattr("getpass.getpass", lambda prompt: (_ for _ in ()).throw(EOFError()))
    with pytest.raises(UsageError, match="needs the cluster's password: %cluster connect"):
        shell.run_line_magic("cluster", f"connect {password_cluster}")
    with pytest.raises(UsageError, match="usage: %cluster connect HOST:PORT"):
        shell.run_line_magic("cluster", "connect")


def test_connect_with_the_password_then_disconnect_leaves_the_cluster_running(shell, password_cluster,
                                                                            monkeypatch, capsys):
    monkeypatch.setenv("RAYIPY_PASSWORD", PASSWORD)   # the password may come from the environment
    context = shell.run_line_magic("cluster", f"connect {password_cluster}")
    try:
        assert not context.started_locally and context.address == password_cluster
        # The cluster's node agent registers on its own time, like a real remote node.
        wait_until(lambda: rayipy.cluster_resources().get("CPU") == 2, timeout=20)
        shell.run_cell_magic("remote", "", "def hello():\n    return 'hi'\n")
        assert rayipy.get(shell.user_ns["hello"].remote()) == "hi"
        assert shell.run_line_magic("cluster", f"connect {password_cluster}") is context
        assert "Already connected" in capsys.readouterr().out
        with pytest.raises(UsageError, match="already attached to a cluster"):
            shell.run_line_magic("cluster", "connect 127.0.0.1:1 --password x")
    finally:
        shell.run_line_magic("cluster", "stop")
    assert "Disconnected from the cluster at" in capsys.readouterr().out
    # The cluster itself still runs: connect again.
    shell.run_line_magic("cluster", f"connect {password_cluster} --password '{PASSWORD}'")
    assert rayipy.is_initialized()
    shell.run_line_magic("cluster", "stop")
