"""Pure: a restarted head's window of duplicates, while its peers come back.

When the head dies, its owners send it again every task it held that has retries left
(``OwnerState.head_restarted``), and the workers that lived on send the results of
those they were running. Both reach the new head in any order, and a task can also
come twice from one owner (once held in its outbox while the head was away, once sent
again). This keeps each task to one result at its owner and, where it can, one run:

- a task sent again that the head has already (queued, or running) is not queued twice;
- a result that passes the head on its way to a registered owner marks the task
  delivered, and the one copy the owner sends again afterwards is dropped;
- a result that comes while a copy waits in the ready queue takes that copy out
  (``drop_queued``), so it does not run again.

A copy already handed to another worker does run again; its owner takes the first
result and drops the second (``OwnerState.finished``). The window closes with the
head's recovery deadline. Tested in tests/unit/test_head_recovery.py.
"""

from __future__ import annotations

import collections
from typing import Iterable, Protocol

from rayipy.core.state import Request, TaskRecord
from rayipy.protocol.messages import TaskSpec


class QueuedTasks(Protocol):
    """The scheduler's records this reads (``SchedulerState``)."""

    tasks: dict[bytes, TaskRecord]
    ready: dict[Request, collections.deque[bytes]]


class DuplicateWindow:
    """Tasks whose result has gone to their owner since the head restarted."""

    def __init__(self) -> None:
        self.delivered: set[bytes] = set()

    def fresh(self, specs: Iterable[TaskSpec], known: dict[bytes, TaskRecord]) -> list[TaskSpec]:
        """The specs to schedule: not known to the head, nor delivered already. A
        delivered task drops one copy only: its owner sends it once more at most, and a
        later submission of it (its value lost and made again) must run."""
        delivered = self.delivered
        out = []
        for spec in specs:
            task_id = spec.task_id
            if task_id in known:
                continue
            if task_id in delivered:
                delivered.discard(task_id)
                continue
            out.append(spec)
        return out

    def results(self, scheduler: QueuedTasks, task_ids: Iterable[bytes],
                owner_registered: Iterable[bool]) -> None:
        """Results passed the head (or their owner says it has them): their queued copies
        go, and those that reached their owner are delivered."""
        for task_id, registered in zip(task_ids, owner_registered):
            drop_queued(scheduler, task_id)
            if registered:
                self.delivered.add(task_id)


def drop_queued(scheduler: QueuedTasks, task_id: bytes) -> bool:
    """Take a task that waits in the ready queue (given to no worker) out of the
    scheduler's records; True if it did."""
    record = scheduler.tasks.get(task_id)
    if record is None or record.worker is not None:
        return False
    queue = scheduler.ready.get(record.spec.resources)
    if queue is None or task_id not in queue:
        return False
    queue.remove(task_id)
    del scheduler.tasks[task_id]
    return True
