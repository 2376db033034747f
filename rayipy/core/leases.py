"""A driver's worker leases: tasks one at a time go straight to a worker lent to it.

Through the head a task takes four network hops; a worker lent by the head (a *lease*)
takes two, as an actor call does. Leases only pay for tasks submitted one at a time
(submit, wait, submit...), and would take a worker from the pool during bursts, so the
rule is:

- a task goes to the lease for its resource request when one is held and nothing of
  ours is in flight, neither through the head nor on the lease (so no task ever waits
  behind another on a leased worker);
- otherwise it goes through the head, and if nothing of ours was in flight there, we
  ask the head for a lease (one request at a time per resource request);
- a lease is given back when it has had nothing in flight for ``IDLE_SECONDS``, at once
  when tasks start going through the head (a burst: the head needs every worker), and
  when the head asks for it back.

Pure bookkeeping, no sockets and no lock: ``rayipy.core.owner.OwnerState`` uses it, and
the runtime holds one lock around that.
"""

from __future__ import annotations

from typing import NamedTuple

from rayipy.protocol.messages import ResourceRequest, TaskSpec

DIRECT_DEPTH = 1   # only tasks run one at a time: nothing ever waits behind another
IDLE_SECONDS = 0.5


class Lease:
    """A worker the head lent us for one resource request."""

    __slots__ = ("request", "worker", "address", "inflight", "idle_since", "returning")

    def __init__(self, request: ResourceRequest, worker: bytes, address: str, now: float) -> None:
        self.request = request
        self.worker = worker
        self.address = address
        self.inflight: dict[bytes, TaskSpec] = {}   # task id -> spec (kept for retries)
        self.idle_since = now
        self.returning = False


class LeaseRoute(NamedTuple):
    """Where ``LeaseBook.route`` sends a task."""
    direct: str = ""          # the leased worker's address, or "" for the head
    ask: bool = False         # also ask the head for a lease


class LeaseBook:
    """The leases one process holds, and which of its tasks run on them."""

    def __init__(self) -> None:
        self._leases: dict[ResourceRequest, Lease] = {}        # resource request -> lease held
        self._asking: set[ResourceRequest] = set()
        self._by_task: dict[bytes, Lease] = {}

    def route(self, spec: TaskSpec, head_busy: bool) -> LeaseRoute:
        lease = self._leases.get(spec.resources)
        if lease is not None:
            if head_busy:
                lease.returning = True   # a burst: the head should have this worker
            elif not lease.returning and len(lease.inflight) < DIRECT_DEPTH:
                lease.inflight[spec.task_id] = spec
                self._by_task[spec.task_id] = lease
                return LeaseRoute(lease.address)
            return LeaseRoute()
        if head_busy or spec.resources in self._asking:
            return LeaseRoute()
        self._asking.add(spec.resources)
        return LeaseRoute(ask=True)

    def granted(self, request: ResourceRequest, worker: bytes, address: str, now: float) -> bool:
        """The head leased us a worker; False if we no longer want it (give it back)."""
        self._asking.discard(request)
        if request in self._leases:
            return False
        self._leases[request] = Lease(request, worker, address, now)
        return True

    def denied(self, request: ResourceRequest) -> None:
        self._asking.discard(request)

    def finished(self, task_id: bytes, now: float) -> None:
        lease = self._by_task.pop(task_id, None)
        if lease is not None:
            lease.inflight.pop(task_id, None)
            if not lease.inflight:
                lease.idle_since = now

    def handed_back(self, task_id: bytes) -> TaskSpec | None:
        """A blocked leased worker gave this task back: its spec, to send via the head."""
        lease = self._by_task.pop(task_id, None)
        return None if lease is None else lease.inflight.pop(task_id, None)

    def revoke(self, worker: bytes) -> None:
        for lease in self._leases.values():
            if lease.worker == worker:
                lease.returning = True

    def to_return(self, now: float) -> list[bytes]:
        """Leases to give back now: idle long enough, or wanted back, with nothing in flight."""
        done = [lease for lease in self._leases.values() if not lease.inflight and (
            lease.returning or now - lease.idle_since > IDLE_SECONDS)]
        for lease in done:
            del self._leases[lease.request]
        return [lease.worker for lease in done]

    def lost(self, worker: bytes) -> list[TaskSpec]:
        """The leased worker died: the specs that were in flight on it."""
        for request, lease in list(self._leases.items()):
            if lease.worker == worker:
                del self._leases[request]
                for task_id in lease.inflight:
                    self._by_task.pop(task_id, None)
                return list(lease.inflight.values())
        return []

    def head_restarted(self) -> None:
        """The head restarted: lease requests the old one never answered will not be
        (a request held while it was away reaches the new one, and its answer is taken
        by ``granted`` as any other)."""
        self._asking.clear()

    def held(self) -> list[tuple[bytes, ResourceRequest]]:
        """(worker id, resource request) of each lease held, in the order granted."""
        return [(lease.worker, request) for request, lease in self._leases.items()]

    def inflight_count(self) -> int:
        """Our tasks running on leased workers now (the head does not see them)."""
        return len(self._by_task)

    def worker_of(self, task_id: bytes) -> bytes | None:
        lease = self._by_task.get(task_id)
        return None if lease is None else lease.worker
