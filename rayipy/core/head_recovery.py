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

And a worker that lived on says, when it registers again, which of the head's tasks it
still holds (running, or queued behind: ``WorkerState.held_from_head``). ``TaskClaims``
keeps those claims, and the copy its owner sends again goes to that worker, recorded as
given to it (``Scheduler.adopt_tasks``), instead of to another worker that would run it
a second time. The two come in either order:

- the claim first: the copy, when it comes, goes to the claiming worker;
- the copy first: copies sent again (``attempt`` > 0) are held, not queued, for the
  first moments of the recovery (``hold_until``), since the workers that lived on
  reconnect about when the owners do; a claim then takes its copy from the held ones,
  or from the ready queue if it was released (``drop_queued``). A copy already handed
  to another worker runs there as well; the claim is dropped.

A copy given to its claiming worker is not sent to it: the worker named only tasks it
held as its registration left (read then), each still there or finished since, its
result then sent to this head after the registration. A task the worker gives back
unrun (its task blocked in ``get``) is claimed no more (``returned``).

A result that comes before its owner has registered again (a worker that lived on
finished the task while the head was away) is kept (``KeptResults``) and given to the
owner when it registers, before its welcome: the owner then has it before it sends
again what the old head held, and does not send that task.

A copy already handed to another worker does run again; its owner takes the first
result and drops the second (``OwnerState.finished``). The window and the claims close
with the head's recovery deadline. Tested in tests/unit/test_head_recovery.py.
"""

from __future__ import annotations

import collections
from typing import Any, Collection, Iterable, Mapping, Protocol

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


# (worker -> the copies to give the worker that claimed them, the copies to schedule)
Placed = tuple[dict[bytes, list[TaskSpec]], list[TaskSpec]]

# Copies sent again are held this long after the restarted head starts waiting for its
# peers, for the workers that may hold them to register and say so (peers reconnect
# within ZeroMQ's reconnect interval, 0.1 s, of the head listening again).
CLAIM_WAIT_SECONDS = 2.0


class TaskClaims:
    """A restarted head's claims (task id -> the worker that lived on holding it), and
    the copies sent again that wait for a claim. Pure: the head passes in what it knows
    (its scheduler's records, the workers attached and those waiting for their node)."""

    def __init__(self, hold_until: float) -> None:
        self.hold_until = hold_until            # copies sent again are held until then
        self.claims: dict[bytes, bytes] = {}    # task id -> worker id
        self.held: dict[bytes, TaskSpec] = {}   # copies sent again, no claim yet, in order

    def declared(self, worker_id: bytes, task_ids: Iterable[bytes], scheduler: QueuedTasks,
                 attached: Collection[bytes]) -> list[TaskSpec]:
        """A worker registered again holding ``task_ids``: the copies of them here
        already (held, or queued and given to no worker), to give it now if it is
        ``attached``; the others are claimed, for their copies to come. A task the head
        gave another worker already is left there (it runs twice)."""
        out: list[TaskSpec] = []
        for task_id in task_ids:
            spec = self.held.get(task_id) if worker_id in attached else None
            if spec is not None:
                del self.held[task_id]
                out.append(spec)
                continue
            record = scheduler.tasks.get(task_id)
            if record is None:
                self.claims[task_id] = worker_id
            elif worker_id in attached and drop_queued(scheduler, task_id):
                out.append(record.spec)
        return out

    def submitted(self, specs: Iterable[TaskSpec], attached: Collection[bytes],
                  waiting: Collection[bytes], now: float) -> Placed:
        """Specs that came (fresh ones: ``DuplicateWindow.fresh`` first): (worker ->
        specs to give the worker that claimed them, specs to schedule). A spec claimed
        by a worker still ``waiting`` for its node, or sent again before ``hold_until``,
        is held."""
        return self._split(specs, attached, waiting, now)

    def release(self, attached: Collection[bytes], waiting: Collection[bytes],
                now: float) -> Placed:
        """Held copies whose worker is attached now, or whose hold is over: (worker ->
        specs to give it, specs to schedule). Called about once a second."""
        if not self.held:
            return {}, []
        held, self.held = list(self.held.values()), {}
        return self._split(held, attached, waiting, now)

    def finished(self, task_ids: Iterable[bytes], owner_has: Iterable[bool]) -> None:
        """Results passed the head: those tasks are claimed no more, and a held copy
        whose result reached its owner is dropped."""
        for task_id, delivered in zip(task_ids, owner_has):
            self.claims.pop(task_id, None)
            if delivered:
                self.held.pop(task_id, None)

    def returned(self, task_ids: Iterable[bytes]) -> None:
        """A worker gave these tasks back unrun: it holds them no more, and a copy that
        comes for one is scheduled as any task."""
        for task_id in task_ids:
            self.claims.pop(task_id, None)

    def over(self) -> list[TaskSpec]:
        """The recovery wait is over: claims not matched are dropped; the held copies,
        to schedule."""
        self.claims.clear()
        held, self.held = list(self.held.values()), {}
        return held

    def _split(self, specs: Iterable[TaskSpec], attached: Collection[bytes],
               waiting: Collection[bytes], now: float) -> Placed:
        claims = self.claims
        given: dict[bytes, list[TaskSpec]] = {}
        rest: list[TaskSpec] = []
        hold = now < self.hold_until
        for spec in specs:
            worker_id = claims.get(spec.task_id)
            if worker_id is not None and worker_id in attached:
                del claims[spec.task_id]
                given.setdefault(worker_id, []).append(spec)
            elif worker_id is not None and worker_id in waiting:
                self.held[spec.task_id] = spec        # its worker waits for its node
            elif worker_id is None and hold and spec.attempt and not spec.actor_id:
                self.held[spec.task_id] = spec        # its worker may not have registered
            else:
                claims.pop(spec.task_id, None)        # its worker died: it runs elsewhere
                rest.append(spec)
        return given, rest


def waiting_workers(early: Mapping[bytes, list[tuple[Any, ...]]]) -> set[bytes]:
    """The ids of the workers registered before their node (``Scheduler.early_workers``)."""
    return {entry[0] for entries in early.values() for entry in entries}


class KeptResults:
    """Results for owners that have not registered again with the restarted head: each
    owner's messages (kind, body, the frames to forward), in the order they came."""

    def __init__(self) -> None:
        self.by_owner: dict[bytes, list[tuple[Any, Any, Any]]] = {}

    def keep(self, owner: bytes, kind: Any, body: Any, frames: Any) -> None:
        """A message for ``owner``, to give it when it registers."""
        self.by_owner.setdefault(owner, []).append((kind, body, frames))

    def take(self, owner: bytes) -> list[tuple[Any, Any, Any]]:
        """``owner`` registered: its kept messages, in order (and kept no more)."""
        return self.by_owner.pop(owner, [])
