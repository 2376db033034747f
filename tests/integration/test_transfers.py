"""Large values travel holder to requester, never through the head.

The head counts the bytes it receives (``cluster_status()["bytes_received"]``); moving a
value of many megabytes must not move that count by more than a few small messages.
"""

from __future__ import annotations

import numpy as np
import pytest

import rayipy

MB = 2**20


def head_bytes() -> int:
    return rayipy.cluster_status()["bytes_received"]


@rayipy.remote
def make(n_mb):
    return np.full(n_mb * MB // 8, 7.0)


@rayipy.remote
def total(array):
    return float(array.sum())


@rayipy.remote
def total_of_nested(refs):
    return float(rayipy.get(refs[0]).sum())


def test_large_result_goes_straight_to_its_owner(cluster):
    rayipy.get(make.remote(1))   # warm: the function is shipped once
    before = head_bytes()
    value = rayipy.get(make.remote(24))
    assert value.shape == (24 * MB // 8,) and value[-1] == 7.0
    assert head_bytes() - before < MB


def test_large_argument_is_fetched_from_its_owner(cluster):
    array = np.arange(24 * MB // 8, dtype=np.float64)
    ref = rayipy.put(array)
    rayipy.get(total.remote(np.zeros(4)))
    before = head_bytes()
    # Several at once: they go through the head (one at a time would go to a leased worker).
    assert rayipy.get([total.remote(ref) for _ in range(4)]) == [float(array.sum())] * 4
    assert head_bytes() - before < MB


def test_borrowed_ref_is_fetched_from_its_owner(cluster):
    array = np.ones(24 * MB // 8)
    ref = rayipy.put(array)
    rayipy.get(total_of_nested.remote([rayipy.put(np.zeros(2))]))
    before = head_bytes()
    assert rayipy.get(total_of_nested.remote([ref])) == float(array.size)
    assert head_bytes() - before < MB


def test_result_made_by_a_task_and_read_by_another(cluster):
    before = head_bytes()
    made = [make.remote(24) for _ in range(2)]
    assert rayipy.get([total.remote(m) for m in made]) == [7.0 * 24 * MB / 8] * 2
    assert head_bytes() - before < MB


def test_small_values_still_take_the_short_path(cluster):
    assert rayipy.get([total.remote(np.ones(10)) for _ in range(50)]) == [10.0] * 50


def test_a_large_argument_passed_by_value_stays_with_its_caller(cluster):
    array = np.arange(24 * MB // 8, dtype=np.float64)
    rayipy.get(total.remote(np.zeros(4)))
    before = head_bytes()
    # Several at once: they go through the head (one at a time would go to a leased worker).
    assert rayipy.get([total.remote(array) for _ in range(4)]) == [float(array.sum())] * 4
    assert head_bytes() - before < MB


@rayipy.remote
def first_and_sum(array, *, scale):
    return float(array[0]), float(array.sum()) * scale


def test_values_are_fixed_when_put_or_passed(cluster):
    """As in Ray: the caller may reuse its array at once, whichever way the value goes."""
    array = np.zeros(3 * MB // 8)
    ref = rayipy.put(array)
    by_value = [first_and_sum.remote(array, scale=1) for _ in range(3)]
    small = first_and_sum.remote(array[:1000], scale=2)
    by_keyword = first_and_sum.options(num_returns=1).remote(scale=1, array=array)
    array[:] = 1.0                              # before any worker has read it
    stored = rayipy.get(ref)
    assert stored[0] == 0.0 and not stored.flags.writeable   # read-only, as Ray's
    assert rayipy.get(by_value + [small, by_keyword]) == [(0.0, 0.0)] * 5
    assert rayipy.get(first_and_sum.remote(ref, scale=1)) == (0.0, 0.0)


@rayipy.remote
def refill_and_return(step, size):
    """Returns the same module-level array every time, refilled: a reused buffer."""
    global reused
    if globals().get("reused") is None or reused.size != size:
        reused = np.zeros(size)
    reused[:] = step
    return reused


@pytest.mark.parametrize("size", [2 * MB // 8, 20_000], ids=["large", "small"])
def test_a_returned_array_the_next_task_changes_arrives_as_returned(cluster, size):
    """Results leave after the next task has started; they must not see its changes (nor
    fail their signature because of them, which lost the result for good)."""
    refs = [refill_and_return.remote(step, size) for step in range(20)]
    assert [float(a[0]) for a in rayipy.get(refs, timeout=60)] == [float(s) for s in range(20)]

