"""ActorPool's bookkeeping with fake actors and refs: no cluster (wait/get replaced)."""

from __future__ import annotations

import pytest

from rayipy.exceptions import ActorDiedError
from rayipy.util.actor_pool import ActorPool


class FakeRef:
    """A ref whose readiness the test decides."""

    def __init__(self, actor: str, value: object) -> None:
        self.actor = actor
        self.value = value
        self.ready = False

    def __repr__(self) -> str:
        return f"FakeRef({self.actor}, {self.value})"


class FakePool(ActorPool):
    made: list[FakeRef]

    @staticmethod
    def _wait(refs, timeout):
        ready = [r for r in refs if r.ready]
        if not ready and timeout is None:
            raise AssertionError("the test would block for ever")
        return ready[:1]

    @staticmethod
    def _get(ref):
        if isinstance(ref.value, BaseException):
            raise ref.value
        return ref.value


def call(actor, value):
    ref = FakeRef(actor, value)
    CALLS.append(ref)
    return ref


CALLS: list[FakeRef] = []


@pytest.fixture(autouse=True)
def clear_calls():
    CALLS.clear()


def test_submissions_wait_for_a_free_actor_and_come_back_in_order():
    pool = FakePool(["a", "b"])
    for v in range(4):
        pool.submit(call, v)
    assert len(CALLS) == 2 and not pool.has_free()   # two queued until an actor is free
    assert pool.pop_idle() is None
    for ref in CALLS:
        ref.ready = True
    assert pool.get_next() == 0
    assert len(CALLS) == 3                            # its actor took the next submission
    CALLS[2].ready = True
    assert pool.get_next() == 1
    for ref in CALLS:
        ref.ready = True
    assert [pool.get_next(), pool.get_next()] == [2, 3]
    assert not pool.has_next()
    with pytest.raises(StopIteration):
        pool.get_next()
    assert pool.has_free()


def test_get_next_timeout_keeps_or_ignores_the_call():
    pool = FakePool(["a"])
    pool.submit(call, 1)
    pool.submit(call, 2)
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0)
    assert pool.has_next() and len(CALLS) == 1        # still pending, actor still busy
    with pytest.raises(TimeoutError, match="ignored"):
        pool.get_next(timeout=0, ignore_if_timedout=True)
    assert len(CALLS) == 2                            # the actor moved on to the next value
    CALLS[1].ready = True
    assert pool.get_next() == 2


def test_unordered_takes_whatever_is_ready_and_then_forbids_ordered():
    pool = FakePool(["a", "b"])
    pool.submit(call, "slow")
    pool.submit(call, "fast")
    CALLS[1].ready = True
    assert pool.get_next_unordered() == "fast"
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=0)
    # "slow" (index 0) is pending, but the order has moved past it: as in Ray, refused.
    with pytest.raises(ValueError, match="get_next_unordered"):
        pool.get_next()
    CALLS[0].ready = True
    assert list(pool.map_unordered(call, [])) == []   # map drops what was pending first
    assert not pool.has_next()


def test_a_dead_actor_leaves_the_pool():
    pool = FakePool(["a", "b"])
    pool.submit(call, ActorDiedError("gone"))
    CALLS[0].ready = True
    with pytest.raises(ActorDiedError):
        pool.get_next()
    assert pool._idle_actors == ["a"]


def test_push_refuses_a_member_and_feeds_waiting_work():
    pool = FakePool(["a"])
    with pytest.raises(ValueError):
        pool.push("a")
    pool.submit(call, 1)
    pool.submit(call, 2)
    with pytest.raises(ValueError):
        pool.push("a")                                # busy members count too
    pool.push("b")
    assert [r.actor for r in CALLS] == ["a", "b"]     # b took the waiting submission


def test_map_yields_in_submission_order():
    pool = FakePool(["a", "b", "c"])
    results = pool.map(call, range(5))
    for ref in CALLS:
        ref.ready = True
    out = []
    for value in results:
        out.append(value)
        for ref in CALLS:
            ref.ready = True
    assert out == [0, 1, 2, 3, 4]
