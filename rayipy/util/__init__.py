"""``rayipy.util``: Ray's library layer over rayipy's public API.

- ``ActorPool``: work over a fixed set of actors (``ray.util.ActorPool``).
- ``as_completed``, ``map_unordered``: refs as they finish; a stream with back-pressure.
- ``Executor``: a ``concurrent.futures.Executor`` whose calls are tasks.
- ``rayipy.util.multiprocessing.Pool``: ``multiprocessing.Pool`` on actors.
- ``rayipy.util.queue.Queue``: a FIFO kept by an actor, usable from tasks and actors.
- ``rayipy.util.joblib.register_rayipy()``: joblib's ``backend="rayipy"`` (imports
  joblib only when called).

The submodules load on first use, so ``import rayipy.util`` stays cheap.
"""

from __future__ import annotations

from rayipy.util.actor_pool import ActorPool
from rayipy.util.completion import as_completed, map_unordered
from rayipy.util.executor import Executor

__all__ = ["ActorPool", "Executor", "as_completed", "map_unordered"]
