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


# -- the rest of Ray's RuntimeContext ---------------------------------------------------------

@rayipy.remote
def job_and_names():
    context = rayipy.get_runtime_context()
    child = rayipy.get(nested_job.remote())
    return (context.get_job_id(), context.get_task_name(), context.get_task_function_name(),
            context.get_worker_id(), context.get_placement_group_id(), context.runtime_env,
            context.get_actor_name(), child)


@rayipy.remote
def nested_job():
    return rayipy.get_runtime_context().get_job_id()


@rayipy.remote(max_restarts=1)
class Named:
    def __init__(self):
        self.calls = 0

    def about(self):
        context = rayipy.get_runtime_context()
        return (context.get_actor_name(), context.get_job_id(), context.get_task_function_name(),
                context.was_current_actor_reconstructed)

    def myself(self):
        return rayipy.get_runtime_context().current_actor

    def count(self):
        self.calls += 1
        return self.calls

    def die(self):
        import os
        os._exit(1)


def test_the_job_id_is_the_drivers_and_its_work_inherits_it(cluster):
    driver = rayipy.get_runtime_context()
    job_id = driver.get_job_id()
    assert isinstance(job_id, str) and job_id
    assert driver.get() == {"job_id": job_id, "node_id": driver.get_node_id(),
                            "namespace": driver.get_namespace()}
    assert driver.get_actor_name() is None and driver.get_task_name() is None
    assert driver.gcs_address and ":" in driver.gcs_address
    (task_job, name, function, worker, group, env, actor_name, child_job) = rayipy.get(
        job_and_names.options(name="renamed").remote())
    assert task_job == job_id and child_job == job_id
    assert name == "renamed"
    assert function == f"{__name__}.job_and_names" or function.endswith(".job_and_names")
    assert worker and worker != driver.get_worker_id()
    assert group is None and env == {} and actor_name is None


def test_an_actor_knows_its_name_its_handle_and_whether_it_restarted(cluster):
    actor = Named.options(name="ctx-named").remote()
    name, job, function, restarted = rayipy.get(actor.about.remote())
    assert name == "ctx-named" and job == rayipy.get_runtime_context().get_job_id()
    assert function.endswith("Named.about") and restarted is False
    assert rayipy.get(rayipy.get(actor.myself.remote()).count.remote()) == 1  # current_actor
    assert rayipy.get(Named.remote().about.remote())[0] == ""   # unnamed: ""
    try:
        rayipy.get(actor.die.remote())
    except rayipy.exceptions.RayActorError:
        pass
    assert rayipy.get(actor.about.remote(), timeout=60)[3] is True
