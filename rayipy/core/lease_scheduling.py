"""The scheduler's lease part: lending idle workers to drivers that run tasks one at a time.

The driver's side is ``rayipy.core.leases``. A leased worker (``WorkerStatus.LEASED``)
is left out of dispatch and holds the lease's resources as its allocation until the
driver gives it back; when tasks wait at the head, lease holders are asked for their
workers back. It reads the shared records and steps of ``SchedulerState``;
``Scheduler`` builds on it.

A restarted head knows no lease, while its drivers still send tasks straight to the
workers they held. Each owner names its leases when it registers again
(``leases_declared``, from its registration's ``info["leases"]``); the head takes each
back as it was once the worker has registered too and is idle in its eyes
(``settle_lease_claims``), and otherwise asks for it back (its tasks in flight end
first, as for any recall). A claim whose worker never comes back ends, at the end of
the head's recovery wait, as a dead lease does (``lease_claims_over``): its holder
retries what ran there.
"""

from __future__ import annotations

from rayipy.core.instructions import Instruction, LeaseAnswer, LeaseEnded
from rayipy.core.runtime_env import env_of
from rayipy.core.scheduler_state import SchedulerState
from rayipy.core.state import Request, Worker, WorkerStatus


class LeaseScheduling(SchedulerState):
    """Workers lent to drivers: granting, giving back, recalling."""

    def __init__(self) -> None:
        super().__init__()
        # After a restart: worker id -> (owner, request) of leases declared by their
        # holders whose worker has not registered again yet.
        self.lease_claims: dict[bytes, tuple[bytes, Request]] = {}

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

    # -- after a restart (node/head.py, "If the head dies" in docs/cluster.md) -----------
    def leases_declared(self, owner: bytes, leases: object) -> list[Instruction]:
        """An owner registered again with this restarted head, naming the workers it
        holds on lease (``[(worker id, request), ...]``; anything else is ignored)."""
        if not isinstance(leases, (list, tuple)):
            return []
        for item in leases:
            try:
                worker_id, request = item
                request = tuple((str(name), float(amount)) for name, amount in request)
            except (TypeError, ValueError):
                continue
            if isinstance(worker_id, bytes):
                self.lease_claims[worker_id] = (owner, request)
        return self.settle_lease_claims()

    def settle_lease_claims(self) -> list[Instruction]:
        """Claims whose worker is here now: lent again if it is idle and its node has the
        room; else its holder is asked to give it back (``LeaseEnded`` without a reason)."""
        out: list[Instruction] = []
        for worker_id, (owner, request) in list(self.lease_claims.items()):
            worker = self.workers.get(worker_id)
            if worker is None:
                continue
            del self.lease_claims[worker_id]
            node = self.nodes.get(worker.node_id)
            if (worker.state is WorkerStatus.IDLE and worker.leased_to is None
                    and worker.actor is None and node is not None and not node.leaving
                    and node.fits(request)):
                worker.leased_to = owner
                self._allocate(worker, request, WorkerStatus.LEASED)
            else:
                out.append(LeaseEnded(owner, worker_id, ""))
        return out

    def lease_claims_over(self, why: str) -> list[Instruction]:
        """The head's recovery wait is over: leases whose worker did not come back are
        lost, as if the worker had died (their holders retry what ran there)."""
        out: list[Instruction] = [LeaseEnded(owner, worker_id, why)
                                  for worker_id, (owner, _) in self.lease_claims.items()]
        self.lease_claims.clear()
        return out
