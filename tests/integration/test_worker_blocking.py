"""A task that blocks in get on a worker: what waits behind it must not be lost or stuck."""

from __future__ import annotations

import time

import rayipy


@rayipy.remote
def pause(seconds):
    time.sleep(seconds)
    return seconds


@rayipy.remote
def echo(i):
    return i


@rayipy.remote
def get_first(refs):
    return rayipy.get(refs[0])


@rayipy.remote
class Waiter:
    def wait_for_child(self):
        return rayipy.get(pause.remote(0.5))

    def quick(self):
        return "quick"


def test_an_actors_call_that_comes_while_another_blocks_runs_after_it(cluster):
    # The blocked call's worker hands leased tasks back to their caller while it waits;
    # an actor's calls must stay (they ran nowhere, and their result never came).
    actor = Waiter.remote()
    rayipy.get(actor.quick.remote())          # constructed: the calls go straight to it
    blocking = actor.wait_for_child.remote()
    queued = [actor.quick.remote() for _ in range(3)]
    ready, _ = rayipy.wait([blocking, *queued], num_returns=4, timeout=20)
    assert len(ready) == 4
    assert rayipy.get(blocking) == 0.5
    assert rayipy.get(queued) == ["quick"] * 3


def test_a_task_that_waits_for_the_result_just_before_it_on_its_worker_gets_it(cluster):
    # Short tasks queue deep on each worker, and their results leave in batches: a task
    # that blocks on the result of the task run just before it must not wait for a batch
    # its own end would send.
    rayipy.get([echo.remote(i) for i in range(3000)])   # durations known: deep queues
    refs = []
    for i in range(300):
        first = echo.remote(i)
        refs += [first, get_first.remote([first])]
    ready, pending = rayipy.wait(refs, num_returns=len(refs), timeout=30)
    assert not pending
    assert rayipy.get(refs) == [i for i in range(300) for _ in range(2)]
