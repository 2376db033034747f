"""Unit tests of what the launchers add for ``adapt`` (issue 16, Autoscaling), without a
machine: which nodes an ``SSHCluster`` may retire, its spare hosts, the arguments
``adapt`` refuses, and Slurm's plain refusal."""

from __future__ import annotations

import pytest

from rayipy.cluster import SlurmCluster, SSHCluster, commands

JOINED = ("This machine joined the rayipy cluster at 10.0.0.1:6379 as node 3fa2b1c0 "
          "(10.0.0.2, 1 CPU).\n`rayipy status` shows the cluster")


def test_the_node_id_rayipy_start_prints_is_read_back():
    assert commands.joined_node(JOINED) == "3fa2b1c0"
    with pytest.raises(ValueError, match="node id"):
        commands.joined_node("something else")


def ssh_cluster(started: list[str], node_ids: dict[str, str]) -> SSHCluster:
    cluster = SSHCluster.from_record(
        {"hosts": ["a", "b", "c"], "started": started, "ssh_command": "ssh", "ssh_options": [],
         "connect_timeout": 10, "remote_python": "python3", "remote_env": {},
         "address": "10.0.0.1:6379", "node_ids": node_ids}, password="pw")
    cluster._closed = True   # nothing to stop at exit: nothing was started
    return cluster


def test_only_nodes_the_launcher_started_are_retirable_and_never_the_heads():
    cluster = ssh_cluster(["a", "b"], {"b": "bbbb0000"})
    assert cluster._retirable({"node_id": "bbbb0000" + "1" * 48})
    assert not cluster._retirable({"node_id": "aaaa0000" + "1" * 48})   # the head's
    assert not cluster._retirable({"node_id": "cccc0000" + "1" * 48})   # joined by hand
    assert cluster._spare() == 1 and cluster._capacity() == 3
    cluster.unusable["c"] = "ssh failed"
    assert cluster._spare() == 0


def test_a_retired_host_is_spare_again_in_the_record():
    cluster = ssh_cluster(["a"], {})
    assert cluster.record()["node_ids"] == {} and cluster._spare() == 2


@pytest.mark.parametrize("initial", [0, 4, 1.5, True])
def test_initial_must_name_how_many_hosts_start(initial):
    with pytest.raises(ValueError, match="initial"):
        SSHCluster(["a", "b", "c"], initial=initial)


def test_adapt_refuses_bad_bounds_before_it_connects():
    cluster = ssh_cluster(["a"], {})
    cluster._closed = False
    try:
        with pytest.raises(ValueError, match="machine"):
            cluster.adapt(minimum=1, maximum=4)
        with pytest.raises(ValueError, match="minimum"):
            cluster.adapt(minimum=3, maximum=2)
        with pytest.raises(ValueError, match="interval"):
            cluster.adapt(minimum=1, maximum=2, interval=0)
        with pytest.raises(ValueError, match="adapt\\(True\\)"):
            cluster.adapt(True)
        with pytest.raises(ValueError, match="no maximum"):
            cluster.adapt(False, 3)
        cluster.adapt(False)                  # nothing adapting: a no-op
        assert cluster.adapt_status() is None
    finally:
        cluster._closed = True


def test_slurm_says_it_cannot_adapt_and_what_to_do_instead():
    cluster = SlurmCluster.__new__(SlurmCluster)
    cluster._adapting = None
    with pytest.raises(NotImplementedError, match="SSHCluster"):
        cluster.adapt(minimum=1, maximum=4)
    cluster.adapt(False)
