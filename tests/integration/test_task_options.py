"""Task options and scheduling policy on a real local cluster (issue 14): ``max_calls``,
``cancel(recursive=)``, and short tasks never held behind long ones."""

from __future__ import annotations

import os
import time

import pytest

import rayipy
from helpers import wait_until


@rayipy.remote(max_calls=1)
def pid_once():
    return os.getpid()


@rayipy.remote
def pid():
    return os.getpid()


@rayipy.remote
def started_at(seconds, t0):
    start = time.time() - t0
    time.sleep(seconds)
    return round(start, 2)


def worker_count() -> int:
    return rayipy.cluster_status()["tasks"]["workers"]


def test_max_calls_one_runs_each_call_in_a_fresh_worker(cluster):
    wait_until(lambda: worker_count() == 2, timeout=30)
    pids = [rayipy.get(pid_once.remote(), timeout=60) for _ in range(3)]
    assert len(set(pids)) == 3, pids
    # A burst too: every call in a process of its own, and none is lost.
    burst = rayipy.get([pid_once.remote() for _ in range(4)], timeout=120)
    assert len(set(burst) | set(pids)) == 7
    # The retired workers are replaced: the cluster keeps its worker count.
    wait_until(lambda: worker_count() == 2, timeout=30,
               message=f"workers: {worker_count()}")
    assert rayipy.get(pid.remote(), timeout=30) not in pids + burst


def test_max_calls_counts_calls_of_that_function(cluster):
    limited = pid.options(max_calls=3)
    seen: dict[int, int] = {}
    for _ in range(9):
        p = rayipy.get(limited.remote(), timeout=60)
        seen[p] = seen.get(p, 0) + 1
    assert max(seen.values()) <= 3 and len(seen) >= 3


def test_short_tasks_never_wait_behind_a_long_one(cluster):
    """The issue's program: on 2 workers, every 0.1 s task starts at once, not behind
    the 5 s task while the 10 s one takes the other worker."""
    rayipy.get([pid.remote() for _ in range(4)])   # workers warm
    t0 = time.time()
    starts = rayipy.get([started_at.remote(x, t0) for x in (5, .1, .1, .1, .1, 10)],
                        timeout=60)
    assert max(starts[1:5]) < 2.0, starts
    assert starts[0] < 2.0 and starts[5] < 2.0, starts
