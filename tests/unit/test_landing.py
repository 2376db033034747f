"""Unit tests of rayipy.protocol.landing: memory for large received buffers, reused only
once nothing refers to it."""

from __future__ import annotations

import ctypes
import gc
import pickle

import numpy as np
import pytest

from rayipy.protocol import landing

MB = 2**20


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def pool(clock):
    return landing.LandingPool(keep_bytes=64 * MB, keep_seconds=10.0, clock=clock)


def address(view) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def test_take_gives_a_writable_buffer_of_the_size_asked(pool):
    view = pool.take(3 * MB + 5)
    assert view.nbytes == 3 * MB + 5 and not view.readonly
    view[-5:] = b"abcde"
    assert bytes(view[-5:]) == b"abcde"


def test_memory_nothing_refers_to_is_lent_again(pool):
    view = pool.take(4 * MB)
    first = address(view)
    del view
    again = pool.take(4 * MB)
    assert address(again) == first
    assert pool.held_bytes() == (4 * MB, 0)


def test_sizes_in_one_class_share_memory(pool):
    view = pool.take(3 * MB)
    first = address(view)
    del view
    assert address(pool.take(4 * MB - 1)) == first        # both round up to 4 MB


def payload_array(view) -> np.ndarray:
    """What a user gets: an array unpickled on top of the landing buffer."""
    array = np.arange(view.nbytes // 8, dtype=np.int64)
    buffers: list = []
    data = pickle.dumps(array, protocol=5, buffer_callback=buffers.append)
    view[:] = buffers[0].raw()
    return pickle.loads(data, buffers=[view])


@pytest.mark.parametrize("keep", ["array", "slice of array", "memoryview slice",
                                  "readonly view", "bytes of it via np.frombuffer"])
def test_memory_still_referred_to_is_never_lent_again(pool, keep):
    view = pool.take(4 * MB)
    first = address(view)
    if keep == "array":
        kept = payload_array(view)
    elif keep == "slice of array":
        kept = payload_array(view)[10:20]
    elif keep == "memoryview slice":
        kept = view[MB:2 * MB]
    elif keep == "readonly view":
        kept = memoryview(view).toreadonly()
    else:
        kept = np.frombuffer(np.frombuffer(view, dtype=np.uint8), dtype=np.uint8)
    del view
    gc.collect()
    other = pool.take(4 * MB)
    second = address(other)
    assert second != first
    assert pool.held_bytes() == (8 * MB, 0)
    del kept, other
    assert pool.held_bytes() == (0, 8 * MB)
    assert address(pool.take(4 * MB)) in (first, second)


def test_unpickled_array_keeps_the_memory_and_its_values(pool):
    view = pool.take(8 * MB)
    first = address(view)
    array = payload_array(view)
    del view
    for _ in range(3):
        other = pool.take(8 * MB)                       # must not be the array's memory
        assert address(other) != first
        other[:] = b"\xff" * other.nbytes
    assert np.array_equal(array, np.arange(array.size, dtype=np.int64))


def test_unused_memory_is_released_after_a_while(pool, clock):
    view = pool.take(4 * MB)
    del view
    pool.trim()
    assert pool.held_bytes() == (0, 4 * MB)
    clock.now += 9.0
    pool.trim()
    assert pool.held_bytes() == (0, 4 * MB)
    clock.now += 2.0
    pool.trim()
    assert pool.held_bytes() == (0, 0)


def test_lent_memory_is_not_released(pool, clock):
    view = pool.take(4 * MB)
    clock.now += 1000.0
    pool.trim()
    assert pool.held_bytes() == (4 * MB, 0)
    view[:4] = b"live"                                  # still mapped
    assert bytes(view[:4]) == b"live"


def test_at_most_keep_bytes_are_kept_the_newest_first(pool, clock):
    views = [pool.take(40 * MB)]
    clock.now += 1.0
    views.append(pool.take(20 * MB))
    clock.now += 1.0
    views.append(pool.take(30 * MB))
    older, old, new = (address(v) for v in views)
    del views[0]
    pool.trim()                                         # the 40 MB one is unused first
    clock.now += 1.0
    views.clear()
    pool.trim()
    assert pool.held_bytes() == (0, 50 * MB)            # 20 + 30 kept, 40 over the limit
    assert address(pool.take(20 * MB)) == old
    assert address(pool.take(30 * MB)) == new
