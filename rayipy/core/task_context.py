"""The task the calling code runs in, inside a worker process.

One context variable, in a module that is never run as ``__main__``, so that the worker
that sets it and ``rayipy.get_runtime_context()`` that reads it see the same one. (It
used to live in ``rayipy.node.worker``, which workers run as ``__main__``: the API read a
second copy of that module, always empty.) Each thread and each asyncio task has its own
value, so the calls of a concurrent actor each see their own.
"""

from __future__ import annotations

import contextvars

from rayipy.protocol.messages import TaskSpec

CURRENT_TASK: contextvars.ContextVar[TaskSpec | None] = contextvars.ContextVar(
    "rayipy_current_task", default=None)


def current_task() -> TaskSpec | None:
    """The spec of the task or actor call running in this context; None outside one."""
    return CURRENT_TASK.get()


# In ``TaskSpec.options`` of every task and actor creation (not of actor calls): its job,
# as (the namespace its code runs in, the job's id), its driver's, passed on to the tasks
# it submits (Ray's job namespace and ``get_job_id()``). Named actors are found in that
# namespace unless ``namespace=`` says otherwise.
JOB_NAMESPACE = "job_namespace"

_actor_creation: TaskSpec | None = None   # in an actor's worker: how the actor was created

#: In a worker: each function (or actor class) loaded, by function id, as
#: ``module.qualified_name`` (``get_runtime_context().get_task_function_name()``).
function_names: dict[bytes, str] = {}


def set_actor_creation(spec: TaskSpec) -> None:
    """This worker's actor was created by ``spec``: its calls run in that spec's namespace."""
    global _actor_creation
    _actor_creation = spec


def placed_spec() -> TaskSpec | None:
    """The spec whose resources the calling code runs on: its task's, or in an actor's
    calls, the actor's creation (its placement group, its node). None outside a task."""
    task = current_task()
    if task is not None and task.actor_id and task.method != "__init__":
        return _actor_creation
    return task


def actor_creation() -> TaskSpec | None:
    """In an actor's worker, once its constructor returned: how the actor was created."""
    return _actor_creation


def job_of(spec: TaskSpec) -> tuple[str, str] | None:
    """The job a task's code runs in, (namespace, job id); None: the spec does not say."""
    for key, value in spec.options:
        if key == JOB_NAMESPACE:
            namespace, job_id = value
            return str(namespace), str(job_id)
    return None


def namespace_of(spec: TaskSpec) -> str | None:
    """The namespace a task's code runs in (None: the spec does not say)."""
    job = job_of(spec)
    return job[0] if job is not None else None


def current_job() -> tuple[str, str] | None:
    """In a worker, the job of the code calling, (namespace, job id): its task's, or, in
    an actor (its calls, and threads it started), the actor's creator's, as in Ray. None
    elsewhere."""
    task = current_task()
    if task is None or (task.actor_id and task.method != "__init__"):
        task = _actor_creation
    return job_of(task) if task is not None else None


def current_namespace() -> str | None:
    """In a worker, the namespace of the code calling (see ``current_job``)."""
    job = current_job()
    return job[0] if job is not None else None
