"""The scheduler's lease part: lending idle workers to drivers that run tasks one at a time.

The driver's side is ``rayipy.core.leases``. A leased worker (``WorkerStatus.LEASED``)
is left out of dispatch and holds the lease's resources as its allocation until the
driver gives it back; when tasks wait at the head, lease holders are asked for their
workers back. It reads the shared records and steps of ``SchedulerState``;
``Scheduler`` builds on it.
"""

from __future__ import annotations

from rayipy.core.instructions import Instruction, LeaseAnswer, LeaseEnded
from rayipy.core.runtime_env import env_of
from rayipy.core.scheduler_state import SchedulerState
from rayipy.core.state import Request, Worker, WorkerStatus


class LeaseScheduling(SchedulerState):
    """Workers lent to drivers: granting, giving back, recalling."""

    def lease(self, owner: bytes, request: Request) -> list[Instruction]:
        """A driver asks for a worker of its own for tasks it runs one at a time."""
        if not any(q for q in self.ready.values()):
            env = env_of(request)
            for worker in self.workers.values():
                if worker.state is not WorkerStatus.IDLE or not worker.address or worker.env != env:
                    continue
                node = self.nodes[worker.node_id]
                if not node.leaving and node.fits(request):
                    worker.leased_to = owner
                    self._allocate(worker, request, WorkerStatus.LEASED)
                    return [LeaseAnswer(owner, request, worker.worker_id, worker.address)]
        return [LeaseAnswer(owner, request, b"", "")]

    def return_lease(self, owner: bytes, worker_id: bytes) -> list[Instruction]:
        """The holder gives the worker back: it returns to the pool."""
        worker = self.workers.get(worker_id)
        if worker is None or worker.leased_to != owner:
            return []
        self._end_lease(worker)
        return self.dispatch()

    def _end_lease(self, worker: Worker) -> None:
        """The worker is nobody's any more: back to the pool, its allocation freed."""
        worker.leased_to = None
        worker.recall_pending = False
        if worker.state is WorkerStatus.LEASED:
            worker.state = WorkerStatus.RUNNING   # holds its allocation until released below
        self._free_allocation_if_done(worker)

    def _recall_leases(self) -> list[Instruction]:
        """Tasks wait at the head: ask lease holders for their workers back (once each)."""
        out: list[Instruction] = []
        for worker in self.workers.values():
            if worker.leased_to and not worker.recall_pending:
                worker.recall_pending = True
                out.append(LeaseEnded(worker.leased_to, worker.worker_id, ""))
        return out
