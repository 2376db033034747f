"""Several nodes on loopback: placement over nodes, SPREAD, GPUs, node loss.

A second node is a second node agent joining the driver's local cluster, as
``rayipy start --address`` does on another host; the tests on real separate hosts (network
namespaces) are in tests/multihost.
"""

from __future__ import annotations

import collections
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
from rayipy.exceptions import ActorDiedError
from helpers import stop_cluster, wait_until


def start_node(num_cpus: int, resources: dict) -> subprocess.Popen:
    """Join one more node agent to the driver's local cluster."""
    cluster = session._cluster
    env = dict(os.environ, RAYIPY_CLUSTER_KEY=cluster.key.hex())
    return subprocess.Popen(
        [sys.executable, "-m", "rayipy.node.agent", "--head", cluster.address,
         "--num-cpus", str(num_cpus), "--resources", json.dumps(resources),
         "--node-id", os.urandom(8).hex(), "--ip", "127.0.0.1"],
        env=env, stdin=subprocess.DEVNULL)


def live_nodes() -> list[dict]:
    return [n for n in rayipy.nodes() if n["Alive"]]


def stop_node(agent: subprocess.Popen) -> None:
    try:
        family = [agent.pid] + [p.pid for p in psutil.Process(agent.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    agent.wait(10)


@pytest.fixture
def two_nodes():
    """The driver's node with 1 CPU, and a second node with 2 CPUs and 2 GPUs."""
    rayipy.init(num_cpus=1)
    agent = start_node(2, {"GPU": 2, "side": 1})
    try:
        wait_until(lambda: len(live_nodes()) == 2, timeout=20, message="the second node never joined")
        wait_until(lambda: rayipy.cluster_status()["tasks"]["workers"] >= 3, timeout=20)
        yield agent
    finally:
        stop_node(agent)
        stop_cluster()


@rayipy.remote
def where(seconds: float = 0.0) -> str:
    time.sleep(seconds)
    return rayipy.get_runtime_context().get_node_id()


def test_nodes_and_resources_sum_over_both_nodes(two_nodes):
    nodes = live_nodes()
    assert {tuple(sorted(n)) for n in nodes} == {tuple(sorted(nodes[0]))}
    assert all(n["NodeManagerAddress"] == "127.0.0.1" for n in nodes)
    total = rayipy.cluster_resources()
    assert total["CPU"] == 3 and total["GPU"] == 2 and total["side"] == 1


def test_tasks_are_balanced_over_nodes(two_nodes):
    counts = collections.Counter(rayipy.get([where.remote(0.002) for _ in range(400)]))
    assert len(counts) == 2, counts
    assert min(counts.values()) >= 80, counts


def test_spread_places_actors_on_different_nodes(two_nodes):
    @rayipy.remote(num_cpus=0)
    class Here:
        def node(self):
            return rayipy.get_runtime_context().get_node_id()

    spread = [Here.options(scheduling_strategy="SPREAD").remote() for _ in range(4)]
    counts = collections.Counter(rayipy.get([a.node.remote() for a in spread]))
    assert sorted(counts.values()) == [2, 2], counts


def test_spread_tasks_cover_every_node(two_nodes):
    nodes = rayipy.get([where.options(scheduling_strategy="SPREAD", num_cpus=0).remote(0.05)
                        for _ in range(8)])
    counts = collections.Counter(nodes)
    # Best effort, as in Ray: each node gets its share, but an idle worker (the second
    # node has two, the first one) may then take tasks queued on the other.
    assert len(counts) == 2, counts


def test_gpu_tasks_see_only_their_own_devices(two_nodes):
    @rayipy.remote(num_gpus=1)
    def visible(seconds):
        time.sleep(seconds)
        return os.environ.get("CUDA_VISIBLE_DEVICES"), rayipy.get_gpu_ids()

    @rayipy.remote
    def no_gpu():
        return os.environ.get("CUDA_VISIBLE_DEVICES"), rayipy.get_gpu_ids()

    # Two at once, on the two workers of the GPU node: different devices.
    both = rayipy.get([visible.remote(0.5) for _ in range(2)])
    assert sorted(both) == [("0", [0]), ("1", [1])]
    # A task that asked for no GPU, even on the GPU node, is not given any.
    side = rayipy.get([no_gpu.options(resources={"side": 1}).remote()])[0]
    assert side == (None, [])


def test_gpu_actor_keeps_its_device(two_nodes):
    @rayipy.remote(num_gpus=2, num_cpus=0)
    class Trainer:
        def devices(self):
            return os.environ.get("CUDA_VISIBLE_DEVICES"), rayipy.get_gpu_ids()

    trainer = Trainer.remote()
    assert rayipy.get(trainer.devices.remote()) == ("0,1", [0, 1])
    assert rayipy.get(trainer.devices.remote()) == ("0,1", [0, 1])
    # Both GPUs are held by the actor: the cluster has none left.
    assert rayipy.available_resources().get("GPU", 0) == 0


def test_impossible_request_names_the_missing_resource(two_nodes):
    @rayipy.remote(num_gpus=3)
    def greedy():
        return 1

    with pytest.raises(ValueError, match=r"GPU=3 \(the largest node has 2\)"):
        rayipy.get(greedy.remote(), timeout=10)


def test_lost_node_is_removed_and_its_tasks_rerun_elsewhere(two_nodes):
    agent = two_nodes

    @rayipy.remote(max_retries=3)
    def slow(i):
        time.sleep(0.5)
        return i, rayipy.get_runtime_context().get_node_id()

    @rayipy.remote(num_cpus=0, resources={"side": 0.5})
    class OnSide:
        def ping(self):
            return "pong"

    side_actor = OnSide.remote()
    assert rayipy.get(side_actor.ping.remote()) == "pong"
    side_node = [n["NodeID"] for n in live_nodes() if "side" in n["Resources"]][0]
    refs = [slow.remote(i) for i in range(8)]
    wait_until(lambda: rayipy.cluster_status()["tasks"]["running"] == 3, timeout=10)
    # The host stops answering: freeze every process of the second node.
    family = [agent.pid] + [p.pid for p in psutil.Process(agent.pid).children(recursive=True)]
    for pid in family:
        os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    wait_until(lambda: len(live_nodes()) == 1, timeout=15, message="the frozen node was not removed")
    assert time.monotonic() - started < 8
    dead = [n for n in rayipy.nodes() if not n["Alive"]]
    assert [n["NodeID"] for n in dead] == [side_node]
    results = rayipy.get(refs, timeout=60)
    assert [i for i, _ in results] == list(range(8))
    assert {node for _, node in results} == {live_nodes()[0]["NodeID"]}
    with pytest.raises(ActorDiedError, match="stopped answering"):
        rayipy.get(side_actor.ping.remote(), timeout=10)
    assert rayipy.cluster_resources()["CPU"] == 1
