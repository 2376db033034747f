"""The tasks an owner can run again to remake a lost stored value (lineage).

A value in a node's object store is lost with its node. Like Ray, the owner then runs the
task that made it again, within its ``max_retries``, and its return ids get the new
values. For that it keeps each finished task that stored a value: its spec, its return
ids and the objects its arguments held (``pinned``), which stay held as long as the
lineage is kept, so a second run finds its arguments. The lineage goes when every stored
value of the task has been freed, and its arguments are let go then.

Actor calls are never remade (the actor's state moved on), nor are tasks sent to one
named worker. Pure bookkeeping; the runtime holds a lock around it.
"""

from __future__ import annotations

from typing import NamedTuple

from rayipy.protocol.messages import TaskSpec


class Remake(NamedTuple):
    """How to run a finished task again."""
    spec: TaskSpec
    return_ids: tuple[bytes, ...]
    pinned: tuple[bytes, ...]


class Lineage:
    """Finished tasks whose stored values may need remaking, by return id."""

    def __init__(self) -> None:
        self._tasks: dict[bytes, Remake] = {}           # task id -> how to remake it
        self._stored: dict[bytes, set[bytes]] = {}      # task id -> its stored values alive
        self._task_of: dict[bytes, bytes] = {}          # stored value id -> task id

    def keeps(self, spec: TaskSpec, pinned_by_worker: bool) -> bool:
        """Whether a task that stored a value is worth keeping: it may run again."""
        return (not spec.actor_id and not pinned_by_worker
                and spec.attempt < spec.max_retries)

    def record(self, remake: Remake, stored: list[bytes]) -> None:
        """A task ended, and these of its return ids hold values in object stores."""
        task_id = remake.spec.task_id
        self._tasks[task_id] = remake
        self._stored[task_id] = set(stored)
        for object_id in stored:
            self._task_of[object_id] = task_id

    def take(self, object_id: bytes) -> tuple[Remake | None, list[bytes]]:
        """The value is lost: how to remake it (one more attempt counted; its arguments
        stay held for the new run), or None when its task is not kept or its retries are
        used up (then the objects to let go). Either way the task is forgotten: a new run
        records it again."""
        task_id = self._task_of.get(object_id)
        if task_id is None:
            return None, []
        remake = self._forget(task_id)
        spec = remake.spec
        if spec.attempt >= spec.max_retries:
            return None, list(remake.pinned)
        return remake._replace(spec=spec._replace(attempt=spec.attempt + 1)), []

    def freed(self, object_ids: list[bytes]) -> list[bytes]:
        """These stored values were freed; returns the objects to let go, of the tasks
        none of whose stored values are left."""
        release: list[bytes] = []
        for object_id in object_ids:
            task_id = self._task_of.pop(object_id, None)
            if task_id is None:
                continue
            alive = self._stored[task_id]
            alive.discard(object_id)
            if not alive:
                release.extend(self._forget(task_id).pinned)
        return release

    def __len__(self) -> int:
        return len(self._tasks)

    def _forget(self, task_id: bytes) -> Remake:
        remake = self._tasks.pop(task_id)
        for object_id in self._stored.pop(task_id, ()):
            self._task_of.pop(object_id, None)
        return remake
