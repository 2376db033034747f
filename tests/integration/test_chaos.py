"""Chaos, bounded: workers SIGKILLed at random while work runs (issue 13, "Chaos").

A thread kills a random worker of the local cluster every ``KILL_INTERVAL`` seconds (a
deliberate pace, not a wait for anything). Every result must still be right, and the
head must have counted the retries. Two shapes of work: a burst of 5,000 short tasks
through the head, and tasks run one at a time, which go to a leased worker straight
from the driver (their retries are the driver's, ``OwnerState.lease_lost``).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import psutil
import pytest

import rayipy
from rayipy import session
from helpers import stop_cluster, wait_until

KILL_INTERVAL = 0.5


class WorkerKiller:
    """Kills a random worker of the local cluster's agent every ``interval`` seconds."""

    def __init__(self, interval: float = KILL_INTERVAL, seed: int = 13) -> None:
        self.interval = interval
        self.random = random.Random(seed)
        self.stopped = threading.Event()
        self.killed: list[int] = []
        self.thread = threading.Thread(target=self._run, name="chaos-killer", daemon=True)

    def __enter__(self) -> "WorkerKiller":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(10)

    def _run(self) -> None:
        # The pacing of the kills is the test's own design: Event.wait is the interval.
        while not self.stopped.wait(self.interval):
            workers = workers_of_agent()
            if workers:
                victim = self.random.choice(workers)
                try:
                    os.kill(victim, signal.SIGKILL)
                    self.killed.append(victim)
                except ProcessLookupError:
                    pass


def workers_of_agent() -> list[int]:
    try:
        agent = psutil.Process(session._cluster.agent_pid())
        return [p.pid for p in agent.children() if "rayipy.node.worker" in " ".join(p.cmdline())]
    except (psutil.NoSuchProcess, psutil.ZombieProcess, AttributeError):
        return []


@pytest.fixture
def chaos_cluster():
    rayipy.init(num_cpus=2, include_dashboard=False)
    try:
        wait_until(lambda: len(workers_of_agent()) == 2, timeout=20)
        yield rayipy
    finally:
        stop_cluster()


@rayipy.remote(max_retries=10)
def square(i: int) -> int:
    time.sleep(0.005)
    return i * i


def test_5000_tasks_are_right_while_workers_are_killed(chaos_cluster):
    started = time.monotonic()
    with WorkerKiller() as killer:
        refs = [square.remote(i) for i in range(5000)]
        results = rayipy.get(refs, timeout=120)
    assert results == [i * i for i in range(5000)]
    assert len(killer.killed) >= 5, f"only {len(killer.killed)} kills in {time.monotonic() - started:.1f} s"
    retried = rayipy.cluster_status()["tasks"].get("retried", 0)
    assert retried >= 1, f"{len(killer.killed)} workers killed, yet no retry counted"
    # The cluster is whole afterwards: both workers back, and it serves.
    wait_until(lambda: len(workers_of_agent()) == 2, timeout=20)
    assert rayipy.get(square.remote(7), timeout=30) == 49


def test_leased_tasks_are_retried_when_their_worker_is_killed(chaos_cluster):
    @rayipy.remote(max_retries=10)
    def slow_square(i: int) -> int:
        time.sleep(0.05)            # long enough that kills land while a task runs
        return i * i

    counts = rayipy.cluster_status()["tasks"]
    before, submitted = counts.get("retried", 0), counts.get("submitted", 0)
    with WorkerKiller(interval=0.3) as killer:
        deadline = time.monotonic() + 8.0
        results, i = [], 0
        while time.monotonic() < deadline:   # one at a time: the driver leases a worker
            results.append(rayipy.get(slow_square.remote(i), timeout=60))
            i += 1
    assert results == [n * n for n in range(i)]
    assert len(killer.killed) >= 10
    counts = rayipy.cluster_status()["tasks"]
    # Most went straight to a leased worker: the head saw only first tasks and retries.
    assert counts["submitted"] - submitted < i / 2, (counts, i)
    retried = counts.get("retried", 0) - before
    assert retried >= 1, f"{len(killer.killed)} workers killed, no retry counted"
