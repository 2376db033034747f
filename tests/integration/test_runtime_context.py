"""get_runtime_context() inside tasks and actors on a real cluster: the ids of the task
and the actor the calling code runs in (workers run as ``python -m``; the context must be
the one the worker sets, not a second copy of its module)."""

from __future__ import annotations

import asyncio

import rayipy


@rayipy.remote
def own_ids():
    context = rayipy.get_runtime_context()
    return context.get_task_id(), context.get_actor_id()


@rayipy.remote
def parent_and_child_ids():
    ref = own_ids.remote()
    return rayipy.get_runtime_context().get_task_id(), ref.task_id().hex(), rayipy.get(ref)


@rayipy.remote
class Plain:
    def ids(self):
        context = rayipy.get_runtime_context()
        return context.get_task_id(), context.get_actor_id()


@rayipy.remote(max_concurrency=4)
class Threaded:
    def ids(self):
        context = rayipy.get_runtime_context()
        return context.get_task_id(), context.get_actor_id()


@rayipy.remote
class Async:
    async def ids(self):
        await asyncio.sleep(0.01)   # others interleave here: each call keeps its own ids
        context = rayipy.get_runtime_context()
        return context.get_task_id(), context.get_actor_id()


def test_the_driver_runs_no_task(cluster):
    context = rayipy.get_runtime_context()
    assert context.get_task_id() is None
    assert context.get_actor_id() is None


def test_a_task_sees_its_own_id_and_no_actor(cluster):
    refs = [own_ids.remote() for _ in range(4)]
    for ref, (task_id, actor_id) in zip(refs, rayipy.get(refs)):
        assert task_id == ref.task_id().hex()
        assert actor_id is None


def test_a_nested_task_sees_its_own_id_not_its_parents(cluster):
    ref = parent_and_child_ids.remote()
    parent_id, child_ref_id, (child_id, child_actor) = rayipy.get(ref)
    assert parent_id == ref.task_id().hex()
    assert child_id == child_ref_id
    assert child_id != parent_id
    assert child_actor is None


def check_actor(handle) -> None:
    refs = [handle.ids.remote() for _ in range(6)]
    results = rayipy.get(refs)
    for ref, (task_id, actor_id) in zip(refs, results):
        assert task_id == ref.task_id().hex()
        assert actor_id == handle._actor_id.hex()


def test_a_plain_actors_method_sees_its_call_and_its_actor(cluster):
    check_actor(Plain.remote())


def test_a_threaded_actors_calls_each_see_their_own_call(cluster):
    check_actor(Threaded.remote())


def test_an_async_actors_calls_each_see_their_own_call(cluster):
    check_actor(Async.remote())
