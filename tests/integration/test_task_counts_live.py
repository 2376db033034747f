"""The cluster-wide counts on a real cluster: raised tasks are failed, cancelled ones are
their own count, and actor calls (straight to their worker) are counted too."""

from __future__ import annotations

import time

import pytest

from helpers import wait_until


def test_failed_cancelled_and_actor_calls_are_counted_as_defined(fresh_cluster, tmp_path):
    rayipy = fresh_cluster(num_cpus=2)

    @rayipy.remote
    def boom(i):
        raise ValueError(i)

    @rayipy.remote
    def nap(s):
        time.sleep(s)

    @rayipy.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def inc(self):
            self.n += 1
            return self.n

        def nap(self, started, s):
            open(started, "w").close()
            time.sleep(s)

    for ref in [boom.remote(i) for i in range(3)]:
        with pytest.raises(ValueError):
            rayipy.get(ref)
    counter = Counter.remote()
    assert rayipy.get([counter.inc.remote() for _ in range(12)])[-1] == 12
    sleeper = nap.remote(600)
    wait_until(lambda: rayipy.cluster_status()["tasks"]["running"] >= 1, timeout=20)
    rayipy.cancel(sleeper)
    with pytest.raises(rayipy.exceptions.TaskCancelledError):
        rayipy.get(sleeper, timeout=30)
    # An actor call cancelled while it runs: its worker's heartbeat counts it cancelled.
    started = tmp_path / "nap-started"
    napping = counter.nap.remote(str(started), 600)
    wait_until(started.exists, timeout=20, message="the actor call never started")
    rayipy.cancel(napping)
    with pytest.raises(rayipy.exceptions.TaskCancelledError):
        rayipy.get(napping, timeout=30)
    # The actor's 12 calls reach the head in its worker's heartbeat (once a second), and
    # its creation is a task of its own: 13 finished.
    tasks = wait_until(lambda: (t := rayipy.cluster_status()["tasks"])["finished"] >= 13
                       and t["cancelled"] >= 2 and t,
                       timeout=20, message="the actor calls never joined the counts")
    assert (tasks["finished"], tasks["failed"], tasks["cancelled"]) == (13, 3, 2), tasks
