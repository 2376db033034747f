"""An actor ending itself: ``rayipy.actor.exit_actor()`` and ``handle.__ray_terminate__``.

Called on the thread that runs the actor's method. The head hears first (a request,
so its answer says it has told every caller that the actor is dead, and that this
worker, which asked, is not to be killed: it exits by itself); then the worker exits as
on SIGTERM (``lifetime.Stopping``): the call that exited sends no result, its caller
and every call still queued get ``ActorDiedError``, ``finally`` blocks and ``atexit``
handlers run. The head never restarts an actor that exited this way.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, NoReturn

from rayipy.core.object_ref import current_runtime
from rayipy.core.task_context import current_task
from rayipy.node import lifetime

TERMINATE_METHOD = "__ray_terminate__"   # Ray's spelling: every actor has it


class ActorExit(lifetime.Stopping):
    """Raised by ``exit_actor()``: the actor's worker is going away on purpose."""


def exit_actor(runtime: Any, why: str) -> NoReturn:
    """End the actor whose method calls this, for good; ``why`` is what its callers read."""
    spec = current_task()
    if runtime is None or runtime.role != "worker" or spec is None or not spec.actor_id:
        raise TypeError("exit_actor() can only be called inside an actor's method; to stop "
                        "an actor from outside, use rayipy.kill(handle) or "
                        "handle.__ray_terminate__.remote()")
    worker = getattr(runtime, "worker", None)
    on_main = threading.current_thread() is threading.main_thread()
    if worker is not None:
        # Answers of the calls run before this one (batched, not sent yet) leave first,
        # ahead of the news of the death, which would fail them; so does what the method
        # printed. Off the main thread (a concurrent actor) only the output can.
        if on_main:
            worker.send_results()
        else:
            worker.flush_output(final=True)
    runtime.request("exit_actor", spec.actor_id, why)
    if not on_main:
        # A threaded or async actor's call: the main thread ends the process, as on SIGTERM.
        os.kill(os.getpid(), signal.SIGTERM)
    raise ActorExit(0)


def terminate() -> NoReturn:
    """What ``handle.__ray_terminate__.remote()`` runs: a stop after the calls before it."""
    exit_actor(current_runtime(), "it was terminated by __ray_terminate__")
