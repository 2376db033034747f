"""A lost node must not hang ``get`` (issue 13, point 7).

- The local cluster's agent, SIGKILLed, is restarted by the driver: a pending ``get``
  returns once its task is retried on the new node, and later tasks run.
- Work that only a node that left could run fails after ``unschedulable_task_timeout_s``
  with ``TaskUnschedulableError`` naming the missing resource, and the driver printed a
  warning first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import rayipy
from rayipy import session
from rayipy.exceptions import TaskUnschedulableError
from helpers import stop_cluster, wait_until


def live_nodes() -> list[dict]:
    return [n for n in rayipy.nodes() if n["Alive"]]


@pytest.fixture
def local():
    """A fresh local cluster of 1 CPU (keywords: more ``init`` options); the
    ``LocalCluster`` is returned."""
    def start(**kwargs):
        rayipy.init(**{"num_cpus": 1, "include_dashboard": False, **kwargs})
        return session._cluster
    try:
        yield start
    finally:
        stop_cluster()


@rayipy.remote(max_retries=3)
def marked(path: str, value: int) -> int:
    """Say we run (the path gets our pid), then wait until the test lets us go."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    while not os.path.exists(path + ".go"):
        time.sleep(0.01)
    return value * 2


@rayipy.remote
def plain(value: int) -> int:
    return value


def test_a_killed_agent_is_restarted_and_a_pending_get_returns(local, tmp_path):
    cluster = local()
    first_agent = cluster.agent_pid()
    path = str(tmp_path / "ran")
    ref = marked.remote(path, 21)
    wait_until(lambda: os.path.exists(path), timeout=20, message="the task never started")
    os.kill(first_agent, signal.SIGKILL)
    # A new agent registers as a new node; the old one is dropped, its task retried there.
    wait_until(lambda: cluster.agent_restarts == 1, timeout=10, message="no restart")
    assert cluster.agent_pid() != first_agent
    wait_until(lambda: [n["Alive"] for n in rayipy.nodes()] in ([False, True], [True, False]),
               timeout=20, message=f"nodes: {rayipy.nodes()}")
    wait_until(lambda: len(open(path).read().split()) == 2, timeout=20,
               message="the task was not retried on the new node")
    open(path + ".go", "w").close()
    assert rayipy.get(ref, timeout=30) == 42
    assert rayipy.cluster_resources()["CPU"] == 1
    assert rayipy.cluster_status()["tasks"]["retried"] >= 1
    assert rayipy.get(marked.remote(path, 5), timeout=30) == 10   # later tasks run too


def test_the_restarts_are_bounded(local, caplog):
    from rayipy.node import launch
    cluster = local()
    cluster.restart_budget = launch.RestartBudget(limit=1, window=60.0)
    os.kill(cluster.agent_pid(), signal.SIGKILL)
    wait_until(lambda: cluster.agent_restarts == 1, timeout=10, message="no restart")
    second = cluster.agent_pid()
    os.kill(second, signal.SIGKILL)
    wait_until(lambda: cluster.gave_up, timeout=10, message="the driver never gave up")
    assert "killed by SIGKILL" in cluster.gave_up and "no longer restarted" in cluster.gave_up
    assert cluster.agent_restarts == 1 and cluster.agent_pid() == second
    assert "no longer restarted" in caplog.text


def test_shutdown_does_not_restart_the_agent(local):
    cluster = local()
    agent = psutil.Process(cluster.agent_pid())
    rayipy.shutdown()
    agent.wait(10)
    assert cluster.agent_restarts == 0


def test_work_only_a_lost_node_could_run_fails_after_the_timeout_with_a_warning(local, capfd):
    cluster = local(_system_config={"unschedulable_task_timeout_s": 4})
    env = dict(os.environ, RAYIPY_CLUSTER_KEY=cluster.key.hex())
    side = subprocess.Popen(
        [sys.executable, "-m", "rayipy.node.agent", "--head", cluster.address, "--num-cpus", "1",
         "--resources", json.dumps({"special": 1}), "--node-id", os.urandom(8).hex(),
         "--ip", "127.0.0.1"], env=env, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(live_nodes()) == 2, timeout=20, message="the side node never joined")

        @rayipy.remote(resources={"special": 1}, max_retries=3)
        def needs_special(path):
            open(path, "w").close()
            time.sleep(60)

        running = needs_special.remote("/dev/null")
        waiting = needs_special.remote("/dev/null")
        # The side node leaves for good (agent and workers killed, as a host that dies).
        family = [side.pid] + [p.pid for p in psutil.Process(side.pid).children(recursive=True)]
        for pid in family:
            os.kill(pid, signal.SIGKILL)
        side.wait(10)
        lost_at = time.monotonic()
        with pytest.raises(TaskUnschedulableError, match=r"special=1 \(the largest live node has 0"):
            rayipy.get(waiting, timeout=40)
        with pytest.raises(TaskUnschedulableError, match="needs_special"):
            rayipy.get(running, timeout=10)
        # After the head noticed (4 s) and the timeout (4 s), not at once, and not for ever.
        assert 4 <= time.monotonic() - lost_at < 30
        err = capfd.readouterr().err
        assert "Warning: task" in err and "cannot be scheduled" in err and "special=1" in err
        assert err.count("cannot be scheduled") == 1     # once, for both tasks of one request
        # The cluster still serves what its live node can run.
        assert rayipy.get(plain.remote(7), timeout=30) == 7
    finally:
        if side.poll() is None:
            side.kill()
            side.wait()
