"""Refs with concurrent.futures, rayipy.util.as_completed / map_unordered, and Executor."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import threading

import pytest

import rayipy
from rayipy.exceptions import GetTimeoutError, TaskError
from rayipy.util import Executor, as_completed, map_unordered


def wait_for_file(path, value):
    """Wait (at most 60 s) until ``path`` exists: the test decides when this finishes."""
    import time
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return value


gate = rayipy.remote(wait_for_file)


@rayipy.remote
def square(x):
    return x * x


@rayipy.remote
def fail_on(x, bad):
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def open_gate(path):
    open(path, "w").close()


def test_stdlib_as_completed_and_wait_take_refs_and_their_futures(cluster, tmp_path):
    path = str(tmp_path / "gate")
    slow, quick = gate.remote(path, "slow"), square.remote(3)
    # Refs straight (this raised AttributeError: _condition) ...
    first = next(cf.as_completed([slow, quick], timeout=30))
    assert first == quick
    done, not_done = cf.wait([slow, quick], timeout=0.2)
    assert done == {quick} and not_done == {slow}
    open_gate(path)
    assert set(cf.as_completed([slow, quick], timeout=30)) == {slow, quick}
    # ... and their futures.
    futures = [square.remote(i).future() for i in range(5)]
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=30)) == [0, 1, 4, 9, 16]
    done, _ = cf.wait([r.future() for r in (slow, quick)], timeout=30)
    assert {f.result() for f in done} == {9, "slow"}


def test_stdlib_wait_first_exception_sees_a_failed_ref(cluster, tmp_path):
    path = str(tmp_path / "gate")
    slow, bad = gate.remote(path, 1), fail_on.remote(2, 2)
    done, not_done = cf.wait([slow, bad], timeout=30, return_when=cf.FIRST_EXCEPTION)
    assert done == {bad} and not_done == {slow}
    open_gate(path)
    assert rayipy.get(slow) == 1


def test_await_and_callbacks_still_work(cluster):
    ref = square.remote(6)
    seen = threading.Event()
    ref.add_done_callback(lambda r: seen.set())
    assert cf.wait([ref], timeout=30).done == {ref}   # the stdlib's waiter on the same ref

    async def main():
        return await ref, await square.remote(2)
    assert asyncio.run(main()) == (36, 4)
    assert seen.wait(10)


def test_as_completed_yields_in_finishing_order_and_times_out(cluster, tmp_path):
    path = str(tmp_path / "gate")
    slow, quick = gate.remote(path, "slow"), square.remote(4)
    it = as_completed([slow, quick], timeout=30)
    assert next(it) == quick
    open_gate(path)
    assert next(it) == slow
    with pytest.raises(StopIteration):
        next(it)
    never = gate.remote(str(tmp_path / "never"), 0)
    with pytest.raises(GetTimeoutError):
        list(as_completed([never], timeout=0.2))
    rayipy.cancel(never)
    with pytest.raises(ValueError):
        as_completed([quick, quick])
    with pytest.raises(TypeError):
        as_completed([1])


def test_map_unordered_keeps_at_most_n_in_flight(cluster):
    pulled = []

    def items():
        for i in range(30):
            pulled.append(i)
            yield i
    results, most_ahead = [], 0
    for value in map_unordered(square, items(), max_in_flight=3):
        results.append(value)
        ahead = len(pulled) - len(results)
        most_ahead = max(most_ahead, ahead)
        assert ahead <= 2      # 3 in flight, one of which was just yielded
    assert sorted(results) == [i * i for i in range(30)]
    assert most_ahead == 2     # the window was used, not one at a time


def test_map_unordered_raises_a_tasks_error(cluster):
    with pytest.raises(ValueError, match="bad item 5"):
        list(map_unordered(_FailFive(), range(10), max_in_flight=2))
    with pytest.raises(TypeError, match="remote function"):
        map_unordered(abs, [1])
    with pytest.raises(ValueError):
        map_unordered(square, [1], max_in_flight=0)


class _FailFive:
    """A remote-function-like object: map_unordered needs only ``.remote(item)``."""

    def remote(self, item):
        return fail_on.remote(item, 5)


def test_executor_futures_are_real_and_carry_errors(cluster):
    with Executor() as ex:
        future = ex.submit(pow, 2, 10)
        assert isinstance(future, cf.Future)
        assert future.result(timeout=30) == 1024
        failing = ex.submit(int, "x")
        with pytest.raises(ValueError):
            failing.result(timeout=30)
        assert isinstance(failing.exception(), TaskError)
        assert list(ex.map(pow, [1, 2, 3, 4, 5], [2] * 5, chunksize=2)) == [1, 4, 9, 16, 25]
        assert list(ex.map(os.getpid, timeout=30)) == []
        pids = set(ex.map(lambda _: os.getpid(), range(20)))
        assert os.getpid() not in pids
    with pytest.raises(RuntimeError, match="shutdown"):
        ex.submit(pow, 1, 1)


def test_executor_shutdown_cancels_queued_and_running_tasks(cluster, tmp_path):
    ex = Executor()
    futures = [ex.submit(wait_for_file, str(tmp_path / "never"), i) for i in range(4)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() for f in futures)
    # The running ones were cancelled on the cluster too: both CPUs are free again.
    with Executor() as again:
        assert again.submit(pow, 3, 2).result(timeout=20) == 9


def test_executor_checks_its_task_options(cluster):
    with pytest.raises(TypeError, match="max_workers"):
        Executor(max_workers=4)
    with pytest.raises(ValueError, match="num_cpu"):
        Executor(num_cpu=1)
    with Executor(num_cpus=2, max_retries=0) as ex:
        assert ex.submit(pow, 2, 2).result(timeout=30) == 4
