"""rayipy.util.queue.Queue: an actor-backed FIFO, from the driver, tasks and actors."""

from __future__ import annotations

import queue as stdlib_queue

import pytest

import rayipy
from rayipy.exceptions import ActorDiedError
from rayipy.util.queue import Empty, Full, Queue


@rayipy.remote
def produce(q, n):
    for i in range(n):
        q.put(i)
    return n


@rayipy.remote
def consume(q, n):
    return [q.get(timeout=60) for _ in range(n)]


def test_put_get_and_the_nowait_variants(cluster):
    q = Queue(maxsize=3)
    assert q.empty() and not q.full() and q.size() == 0 and len(q) == 0
    q.put(1)
    q.put_nowait(2)
    q.put(3, block=False)
    assert q.full() and q.qsize() == 3
    with pytest.raises(Full):
        q.put_nowait(4)
    with pytest.raises(Full):
        q.put(4, timeout=0.1)
    assert [q.get(), q.get_nowait(), q.get(block=False)] == [1, 2, 3]
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(Empty):
        q.get(timeout=0.1)
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    assert issubclass(Empty, stdlib_queue.Empty) and issubclass(Full, stdlib_queue.Full)


def test_batches_are_all_or_nothing(cluster):
    q = Queue(maxsize=4)
    q.put_nowait_batch([1, 2, 3])
    with pytest.raises(Full, match="Cannot add 2 items"):
        q.put_nowait_batch([4, 5])
    assert q.qsize() == 3
    with pytest.raises(Empty, match="Cannot get 4 items"):
        q.get_nowait_batch(4)
    assert q.get_nowait_batch(2) == [1, 2]
    assert q.get_nowait_batch(1) == [3]


def test_tasks_share_the_queue(cluster):
    q = Queue()
    assert rayipy.get(produce.remote(q, 10), timeout=60) == 10
    assert [q.get(timeout=30) for _ in range(10)] == list(range(10))
    # A consumer blocked in get does not stop the producer's puts (an asyncio actor).
    consumer = consume.remote(q, 5)
    rayipy.get(produce.remote(q, 5), timeout=60)
    assert rayipy.get(consumer, timeout=60) == list(range(5))


def test_shutdown_stops_the_actor(cluster):
    q = Queue(actor_options={"num_cpus": 0})
    actor = q.actor
    q.put(1)
    q.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        q.put(2)
    with pytest.raises(ActorDiedError):
        rayipy.get(actor.qsize.remote(), timeout=30)
