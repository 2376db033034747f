"""Generator tasks on a real cluster: refs stream as the task yields, in sync and async
code, ``num_returns="dynamic"``, actor methods, errors mid-stream, cancelling, and
the values freed once nobody holds them."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

import rayipy
from rayipy.exceptions import GetTimeoutError, TaskCancelledError
from helpers import wait_until


def wait_for_file(path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)


@rayipy.remote
def count_to(n, fail_at=None):
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"failed at {i}")
        yield i


@rayipy.remote(num_returns="streaming")
def first_then_wait(path):
    yield "first"
    wait_for_file(path)
    yield "second"


def test_a_generator_function_returns_an_object_ref_generator(cluster):
    gen = count_to.remote(3)
    assert isinstance(gen, rayipy.ObjectRefGenerator)
    assert [rayipy.get(ref) for ref in gen] == [0, 1, 2]
    with pytest.raises(StopIteration):
        next(gen)


def test_the_first_ref_arrives_while_the_task_still_runs(cluster, tmp_path):
    path = str(tmp_path / "go")
    gen = first_then_wait.remote(path)
    first = next(gen)                         # the task now waits for the file
    assert rayipy.get(first, timeout=30) == "first"
    assert not gen.completed().done()
    with pytest.raises(GetTimeoutError):
        gen.next_ready(timeout=0.3)           # nothing more until we let it go on
    open(path, "w").close()
    assert rayipy.get(next(gen), timeout=30) == "second"
    with pytest.raises(StopIteration):
        next(gen)


def test_refs_work_with_wait_and_get_like_any_ref(cluster):
    refs = list(count_to.remote(5))
    ready, not_ready = rayipy.wait(refs, num_returns=5, timeout=30)
    assert ready == refs and not_ready == []
    assert rayipy.get(refs) == [0, 1, 2, 3, 4]


def test_async_for_and_anext(cluster, tmp_path):
    async def main():
        values = [await ref async for ref in count_to.remote(4)]
        gen = first_then_wait.remote(str(tmp_path / "go"))
        first = await (await gen.__anext__())
        open(tmp_path / "go", "w").close()
        second = await (await gen.__anext__())
        with pytest.raises(StopAsyncIteration):
            await gen.__anext__()
        return values, first, second

    assert asyncio.run(main()) == ([0, 1, 2, 3], "first", "second")


def test_an_error_mid_stream_is_the_ref_at_its_position_then_the_end(cluster):
    gen = count_to.remote(5, fail_at=2)
    assert rayipy.get(next(gen)) == 0
    assert rayipy.get(next(gen)) == 1
    failed = next(gen)
    with pytest.raises(ValueError, match="failed at 2"):
        rayipy.get(failed)
    with pytest.raises(StopIteration):
        next(gen)


def test_dynamic_returns_one_ref_whose_value_holds_the_refs(cluster):
    ref = count_to.options(num_returns="dynamic").remote(3)
    assert isinstance(ref, rayipy.ObjectRef)
    items = rayipy.get(ref)
    assert isinstance(items, rayipy.DynamicObjectRefGenerator)
    assert [rayipy.get(r) for r in items] == [0, 1, 2]
    refs = list(rayipy.get(count_to.options(num_returns="dynamic").remote(3, fail_at=1)))
    assert rayipy.get(refs[0]) == 0
    with pytest.raises(ValueError):
        rayipy.get(refs[1])


def test_a_generator_yielding_ten_thousand_values_completes(cluster):
    gen = count_to.remote(10_000)
    refs = list(gen)
    assert len(refs) == 10_000
    assert sum(rayipy.get(refs)) == sum(range(10_000))


def test_large_values_go_through_the_object_store(cluster):
    @rayipy.remote
    def arrays(n):
        for i in range(n):
            yield np.full(1_000_000, i, dtype=np.uint8)

    values = [rayipy.get(ref) for ref in arrays.remote(3)]
    assert [int(v[0]) for v in values] == [0, 1, 2]
    assert not values[0].flags.writeable      # a read-only view of the node's store


@rayipy.remote
class Streamer:
    def __init__(self):
        self.calls = 0

    def numbers(self, n):
        self.calls += 1
        for i in range(n):
            yield i * 10

    @rayipy.method(num_returns="streaming")
    def declared(self, n):
        yield from range(n)

    def plain(self, n):
        return list(range(n))


@rayipy.remote
class AsyncStreamer:
    async def numbers(self, n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i


def test_actor_methods_stream(cluster):
    actor = Streamer.remote()
    assert [rayipy.get(r) for r in actor.numbers.remote(3)] == [0, 10, 20]
    gen = actor.numbers.options(num_returns="streaming").remote(2)
    assert [rayipy.get(r) for r in gen] == [0, 10]
    assert [rayipy.get(r) for r in actor.declared.remote(2)] == [0, 1]
    dynamic = rayipy.get(actor.numbers.options(num_returns="dynamic").remote(2))
    assert [rayipy.get(r) for r in dynamic] == [0, 10]
    assert rayipy.get(actor.plain.remote(2)) == [0, 1]
    async_actor = AsyncStreamer.remote()
    assert [rayipy.get(r) for r in async_actor.numbers.remote(3)] == [0, 1, 2]


@rayipy.remote
def until_cancelled(path):
    try:
        yield 1      # inside: a cancel may land while this item is still being sent
        while True:
            time.sleep(0.01)
    finally:
        with open(path, "w") as f:
            f.write("interrupted")


def test_cancelling_the_generator_stops_its_task(cluster, tmp_path):
    path = str(tmp_path / "ended")
    gen = until_cancelled.remote(path)
    assert rayipy.get(next(gen), timeout=30) == 1
    rayipy.cancel(gen)
    wait_for_file(path, 30)
    assert open(path).read() == "interrupted"   # its code was interrupted
    last = next(gen)                            # as in Ray: a ref that raises, then the end
    with pytest.raises(TaskCancelledError):
        rayipy.get(last, timeout=30)
    with pytest.raises(StopIteration):
        next(gen)


def test_dropping_the_generator_and_its_refs_frees_the_values(cluster):
    @rayipy.remote
    def arrays(n):
        for i in range(n):
            yield np.full(1_000_000, i, dtype=np.uint8)

    def stored_objects() -> int:
        return rayipy.memory_summary().count("arrays")

    gen = arrays.remote(4)
    kept = [next(gen), next(gen)]             # two taken, two left in the generator
    rayipy.get(gen.completed(), timeout=30)   # every item has come
    assert stored_objects() == 4, rayipy.memory_summary()
    del gen
    wait_until(lambda: stored_objects() == 2, 10, message=rayipy.memory_summary())
    assert [int(rayipy.get(r)[0]) for r in kept] == [0, 1]
    del kept
    wait_until(lambda: stored_objects() == 0, 10, message=rayipy.memory_summary())


def test_options_that_cannot_work_are_refused(cluster):
    def plain():
        return 1

    with pytest.raises(ValueError, match="generator functions"):
        rayipy.remote(num_returns="streaming")(plain)
    with pytest.raises(ValueError, match="_generator_backpressure_num_objects"):
        count_to.options(_generator_backpressure_num_objects=2)
