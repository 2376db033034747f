"""Objects are freed everywhere once no ref is alive and no task needs them."""

from __future__ import annotations

import gc

import numpy as np

import rayipy
from rayipy.core.object_ref import current_runtime

from helpers import wait_until


@rayipy.remote
def make(n):
    return np.ones(n)


@rayipy.remote
def total(array):
    return float(array.sum())


@rayipy.remote
def hold(items):
    return rayipy.get(items[0]).sum()


@rayipy.remote
def wrap_new():
    return [rayipy.put(np.zeros(10))]


def table_size() -> int:
    runtime = current_runtime()
    runtime.waker.wake()  # have the I/O thread process releases now
    return len(runtime.objects)


def settle(expected: int = 0) -> None:
    gc.collect()
    wait_until(lambda: table_size() <= expected, timeout=10,
               message=f"objects still held: {current_runtime().objects.stats()}")


def test_dropped_refs_are_freed(cluster):
    settle()
    refs = [make.remote(1000) for _ in range(50)]
    assert len(rayipy.get(refs)) == 50
    assert table_size() >= 50
    del refs
    settle()


def test_dependencies_live_until_the_task_is_done(cluster):
    settle()
    data = rayipy.put(np.ones(10_000))
    result = total.remote(data)
    del data  # the pending task still needs it
    assert rayipy.get(result) == 10_000.0
    del result
    settle()


def test_refs_in_containers_and_results_are_released(cluster):
    settle()
    inner = rayipy.put(np.ones(5))
    assert rayipy.get(hold.remote([inner])) == 5.0
    del inner
    settle()
    outer = wrap_new.remote()
    refs = rayipy.get(outer)
    assert rayipy.get(refs[0]).sum() == 0
    del refs, outer
    settle()


def test_many_tasks_do_not_grow_the_table(cluster):
    settle()
    for _ in range(20):
        rayipy.get([total.remote(np.ones(3)) for _ in range(200)])
    settle()
    status = rayipy.cluster_status()["tasks"]
    assert status["queued"] == 0 and status["assigned"] == 0


@rayipy.remote
def sum_after_crashing_once(array, started, go):
    import os
    import time
    if not os.path.exists(started):
        open(started, "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)
        os._exit(3)   # the retry must fetch the arguments again
    return float(array.sum())


def test_large_arguments_live_until_the_task_is_done_then_are_freed(cluster, tmp_path):
    settle()
    started, go = tmp_path / "started", tmp_path / "go"
    result = sum_after_crashing_once.remote(np.ones(2**20), str(started), str(go))
    wait_until(started.exists, timeout=30, message="the task did not start")
    gc.collect()
    assert rayipy.get(total.remote(np.ones(4))) == 4.0   # releases are processed meanwhile
    go.touch()
    assert rayipy.get(result, timeout=60) == 2**20
    del result
    settle()
