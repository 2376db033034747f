"""The scheduler's lease part: lending idle workers to drivers that run tasks one at a time.

The driver's side is ``rayipy.core.leases``. A leased worker is left out of dispatch and
holds the lease's resources until the driver gives it back; when tasks wait at the head,
lease holders are asked for their workers back. A mixin of ``Scheduler``.
"""

from __future__ import annotations

from rayipy.core.instructions import LeaseAnswer, LeaseEnded


class LeaseScheduling:
    def lease(self, owner: bytes, request: tuple) -> list:
        """A driver asks for a worker of its own for tasks it runs one at a time."""
        if not any(q for q in self.ready.values()):
            for worker in self.workers.values():
                node = self.nodes[worker.node_id]
                if (worker.lease is None and not worker.blocked and worker.actor is None
                        and not worker.leased_to and not worker.queue and not node.leaving
                        and worker.address and node.fits(request)):
                    worker.leased_to = owner
                    self._hold(worker, request)
                    return [LeaseAnswer(owner, request, worker.worker_id, worker.address)]
        return [LeaseAnswer(owner, request, b"", "")]

    def return_lease(self, owner: bytes, worker_id: bytes) -> list:
        worker = self.workers.get(worker_id)
        if worker is None or worker.leased_to != owner:
            return []
        worker.leased_to = None
        worker.revoking = False
        if not worker.queue:
            self._release_lease(worker)
        return self.dispatch()

    def _revoke_leases(self) -> list:
        """Tasks wait at the head: ask lease holders for their workers back."""
        out = []
        for worker in self.workers.values():
            if worker.leased_to and not worker.revoking:
                worker.revoking = True
                out.append(LeaseEnded(worker.leased_to, worker.worker_id, ""))
        return out
