"""Remote functions on a real local cluster: values, dependencies, nesting, options, futures."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import numpy as np
import pytest

import rayipy
from rayipy.exceptions import GetTimeoutError


@rayipy.remote
def square(x):
    return x * x


@rayipy.remote
def add(a, b):
    return a + b


@rayipy.remote
def identity(x):
    return x


@rayipy.remote
def sleep_then(seconds, value):
    import time
    time.sleep(seconds)
    return value


@rayipy.remote
def fib(n):
    if n < 2:
        return n
    return sum(rayipy.get([fib.remote(n - 1), fib.remote(n - 2)]))


def test_values_in_order(cluster):
    refs = [square.remote(i) for i in range(100)]
    assert rayipy.get(refs) == [i * i for i in range(100)]
    assert rayipy.get(square.remote(7)) == 49
    assert rayipy.get([]) == []
    assert rayipy.get(tuple(refs[:3])) == [0, 1, 4]


def test_direct_ref_arguments_are_resolved(cluster):
    a = square.remote(3)
    b = rayipy.put(10)
    assert rayipy.get(add.remote(a, b)) == 19
    assert rayipy.get(add.remote(a, b=square.remote(2))) == 13
    chain = identity.remote(1)
    for _ in range(20):
        chain = add.remote(chain, 1)
    assert rayipy.get(chain) == 21


def test_refs_inside_containers_arrive_as_refs(cluster):
    inner = rayipy.put("payload")

    @rayipy.remote
    def inspect(items):
        ref = items[0]
        return type(ref).__name__, rayipy.get(ref)

    assert rayipy.get(inspect.remote([inner])) == ("ObjectRef", "payload")


def test_refs_returned_from_tasks_stay_usable(cluster):
    @rayipy.remote
    def make():
        return [square.remote(5), rayipy.put("made inside")]

    refs = rayipy.get(make.remote())
    assert rayipy.get(refs) == [25, "made inside"]


def test_nested_tasks_do_not_deadlock_the_pool(cluster):
    # Every level blocks in get(); with 2 CPUs this needs blocked workers to give way.
    assert rayipy.get(fib.remote(8), timeout=60) == 21
    assert rayipy.get([fib.remote(5) for _ in range(4)], timeout=60) == [5] * 4


def test_get_timeout(cluster):
    ref = sleep_then.remote(3, "late")
    with pytest.raises(GetTimeoutError) as info:
        rayipy.get(ref, timeout=0.1)
    assert isinstance(info.value, TimeoutError)
    assert "timed out" in str(info.value)
    rayipy.cancel(ref)


def test_wait(cluster):
    fast = sleep_then.remote(0, "fast")
    slow = sleep_then.remote(5, "slow")
    ready, not_ready = rayipy.wait([slow, fast], num_returns=1, timeout=4)
    assert ready == [fast] and not_ready == [slow]
    ready, not_ready = rayipy.wait([slow], timeout=0)
    assert ready == [] and not_ready == [slow]
    rayipy.cancel(slow)
    refs = [square.remote(i) for i in range(10)]
    ready, not_ready = rayipy.wait(refs, num_returns=10, timeout=30)
    assert ready == refs and not_ready == []


def test_num_returns_and_options(cluster):
    @rayipy.remote(num_returns=2)
    def pair():
        return 1, 2

    a, b = pair.remote()
    assert rayipy.get([a, b]) == [1, 2]
    x, y, z = identity.options(num_returns=3).remote((1, 2, 3))
    assert rayipy.get([x, y, z]) == [1, 2, 3]
    with pytest.raises(ValueError, match="num_returns=3 but returned"):
        rayipy.get(identity.options(num_returns=3).remote((1, 2))[0])


def test_large_arrays_round_trip(cluster):
    array = np.arange(2_000_000, dtype=np.float64)
    ref = rayipy.put(array)
    total = rayipy.get(identity.remote(ref))
    assert np.array_equal(total, array)
    assert rayipy.get(square.remote(np.ones(1000))).sum() == 1000


def test_object_ref_is_a_future(cluster):
    ref = sleep_then.remote(0.2, 42)
    assert ref.result(timeout=30) == 42
    assert ref.done()
    assert ref.exception() is None
    seen = threading.Event()
    values = []

    def callback(r):
        values.append(r.result())
        seen.set()

    later = square.remote(6)
    later.add_done_callback(callback)
    assert seen.wait(30)
    assert values == [36]
    fut = square.remote(9).future()
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(30) == 81

    async def main():
        return await square.remote(11)

    assert asyncio.run(main()) == 121


def test_object_ref_exception_and_hash(cluster):
    @rayipy.remote
    def fails():
        raise KeyError("nope")

    ref = fails.remote()
    err = ref.exception(timeout=30)
    assert isinstance(err, KeyError)
    assert {ref: 1}[ref] == 1 and ref == ref


def test_cluster_information(cluster):
    nodes = rayipy.nodes()
    assert len(nodes) == 1
    node = nodes[0]
    assert node["Alive"] is True
    assert node["Resources"]["CPU"] == 2.0
    assert node["NodeManagerAddress"] == "127.0.0.1"
    assert rayipy.cluster_resources()["CPU"] == 2.0
    assert 0 <= rayipy.available_resources().get("CPU", 0) <= 2.0
    assert rayipy.is_initialized()


def test_impossible_resource_request_is_an_error(cluster):
    with pytest.raises(ValueError, match="CPU=3"):
        rayipy.get(square.options(num_cpus=3).remote(1), timeout=30)
    with pytest.raises(ValueError, match="no node"):
        rayipy.get(square.options(resources={"TPU": 1}).remote(1), timeout=30)
    assert rayipy.get(square.options(num_cpus=2).remote(4), timeout=30) == 16
    assert rayipy.get(square.options(num_cpus=0).remote(5), timeout=30) == 25


def test_many_tasks_from_a_thread(cluster):
    results = {}

    def submit(name):
        results[name] = rayipy.get([square.remote(i) for i in range(200)])

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(results[n] == [i * i for i in range(200)] for n in range(3))


def test_short_tasks_do_not_wait_behind_a_long_one(cluster):
    # Pipelining may queue the short tasks behind the long one; an idle worker takes them back.
    rayipy.get([sleep_then.remote(0, i) for i in range(4)])  # durations now known: short
    long = sleep_then.remote(20, "long")
    short = [sleep_then.remote(0.05, i) for i in range(3)]
    ready, _ = rayipy.wait(short, num_returns=3, timeout=10)
    assert ready == short, "short tasks waited behind a long one while a worker was idle"
    rayipy.cancel(long)


def test_a_task_name_given_in_options_names_its_tasks(cluster):
    @rayipy.remote
    def fails():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom") as info:
        rayipy.get(fails.options(name="load-shard-7").remote())
    assert "load-shard-7" in str(info.value)
    ref = fails.remote()
    with pytest.raises(ValueError) as plain:
        rayipy.get(ref)
    assert "load-shard-7" not in str(plain.value) and "fails" in str(plain.value)
