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
