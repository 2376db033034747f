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


# In ``TaskSpec.options`` of every task and actor creation (not of actor calls): the
# namespace its code runs in, its driver's, passed on to the tasks it submits (Ray's job
# namespace). Named actors are found in it unless ``namespace=`` says otherwise.
JOB_NAMESPACE = "job_namespace"

_actor_creation: TaskSpec | None = None   # in an actor's worker: how the actor was created


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


def namespace_of(spec: TaskSpec) -> str | None:
    """The namespace a task's code runs in (None: the spec does not say)."""
    for key, value in spec.options:
        if key == JOB_NAMESPACE:
            return str(value)
    return None


def current_namespace() -> str | None:
    """In a worker, the namespace of the code calling: its task's, or, in an actor (its
    calls, and threads it started), the actor's creator's, as in Ray. None elsewhere."""
    task = current_task()
    if task is None or (task.actor_id and task.method != "__init__"):
        task = _actor_creation
    return namespace_of(task) if task is not None else None
