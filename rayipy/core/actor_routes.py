"""Where a caller sends its actor calls: straight to the actor's worker, in order.

A caller learns an actor's worker address from the head (``ACTOR_LOCATION``: the creator
is told when the actor is placed, other callers ask once). Each actor has a FIFO of this
caller's calls: a call takes its place when it is made, and leaves when it is ready (its
ref arguments resolved), every call before it has left, and the address is known. So all
of one caller's calls travel one connection in the order they were made.

When the head says the actor's worker died, the calls in flight (sent, not answered)
fail; if it is restarting, later calls wait for the new address, and so do the calls in
flight that have retries left (``TaskSpec.max_retries``: the actor's or the method's
``max_task_retries``, -1 for no limit), back at the head of the FIFO in the order they
were made, each as its next attempt. If it is not restarting, every call fails.

Pure and lock-free: every method returns what must happen, in order, as ``Send`` and
``Failed`` records; ``rayipy.core.owner.OwnerState`` turns them into its commands, and the
runtime carries those out under one lock, so sends leave in FIFO order whatever thread
made the call.
"""

from __future__ import annotations

import collections
from typing import NamedTuple, Union

from rayipy.protocol.messages import TaskSpec


class Send(NamedTuple):
    """Send this call to the actor's worker now."""
    address: str
    spec: TaskSpec


class Failed(NamedTuple):
    """This call will never reach the actor (it is gone for good)."""
    task_id: bytes
    why: str


class Locate(NamedTuple):
    """Ask the head where the actor is."""
    actor_id: bytes


class Requeued(NamedTuple):
    """A call in flight to a worker that died goes again, to the restarted actor, as this
    next attempt: it has not left any more (a ``Send`` follows once the address is known)."""
    spec: TaskSpec


RouteStep = Union[Send, Failed, Locate, Requeued]


def retries_left(spec: TaskSpec) -> bool:
    """The call may run again after the actor's worker died (-1: without limit)."""
    return spec.max_retries == -1 or spec.attempt < spec.max_retries


class _Route:
    __slots__ = ("address", "dead", "pending", "ready", "asked")

    def __init__(self) -> None:
        self.address = ""                               # the actor's worker, once known
        self.dead = ""                                  # why the actor is gone for good
        self.pending: collections.deque[bytes] = collections.deque()   # task ids, call order
        self.ready: dict[bytes, TaskSpec] = {}          # pending calls whose arguments are in
        self.asked = False                              # the head will tell us the address


class ActorRoutes:
    def __init__(self) -> None:
        self._routes: dict[bytes, _Route] = {}
        # Calls sent and not answered, in the order they left: task id -> (actor id, spec)
        self._inflight: dict[bytes, tuple[bytes, TaskSpec]] = {}

    def created(self, actor_id: bytes) -> None:
        """We created it: the head tells us where it lands without being asked."""
        self._routes.setdefault(actor_id, _Route()).asked = True

    def reserve(self, actor_id: bytes, task_id: bytes) -> list[RouteStep]:
        """A call is made: its place in the actor's FIFO (``fill`` it when it is ready)."""
        route = self._routes.setdefault(actor_id, _Route())
        route.pending.append(task_id)
        if route.asked:
            return []
        route.asked = True
        return [Locate(actor_id)]

    def fill(self, actor_id: bytes, spec: TaskSpec) -> list[RouteStep]:
        route = self._routes[actor_id]
        route.ready[spec.task_id] = spec
        return self._advance(actor_id, route)

    def drop(self, actor_id: bytes, task_id: bytes) -> list[RouteStep]:
        """A call that has not left gives up its place (cancelled, or its arguments
        failed): the calls behind it may go."""
        route = self._routes.get(actor_id)
        if route is None or task_id not in route.pending:
            return []
        route.pending.remove(task_id)
        route.ready.pop(task_id, None)
        return self._advance(actor_id, route)

    def sent(self, task_id: bytes) -> bool:
        """The call has left for the actor's worker and has not ended."""
        return task_id in self._inflight

    def address_of(self, actor_id: bytes) -> str:
        """Where the actor's calls go now ("" while unknown, restarting or dead)."""
        route = self._routes.get(actor_id)
        return route.address if route is not None else ""

    def located(self, actor_id: bytes, address: str) -> list[RouteStep]:
        route = self._routes.setdefault(actor_id, _Route())
        route.address = address
        return self._advance(actor_id, route)

    def lost(self, actor_id: bytes, why: str, restarting: bool) -> list[RouteStep]:
        """The actor's worker died: the calls in flight to it fail, except, when it
        restarts, those with retries left, which go again first; unless it restarts,
        every later call fails too."""
        route = self._routes.setdefault(actor_id, _Route())
        route.address = ""
        out: list[RouteStep] = []
        again: list[TaskSpec] = []
        for task_id, (actor, spec) in list(self._inflight.items()):
            if actor != actor_id:
                continue
            del self._inflight[task_id]
            if restarting and retries_left(spec):
                again.append(spec._replace(attempt=spec.attempt + 1))
            else:
                out.append(Failed(task_id, why))
        # They were made before every call still waiting here: they go first, in order.
        route.pending.extendleft(reversed([spec.task_id for spec in again]))
        for spec in again:
            route.ready[spec.task_id] = spec
            out.append(Requeued(spec))
        if not restarting:
            route.dead = why
            out.extend(self._advance(actor_id, route))   # fails what was waiting
        return out

    def finished(self, task_id: bytes) -> None:
        self._inflight.pop(task_id, None)

    def _advance(self, actor_id: bytes, route: _Route) -> list[RouteStep]:
        out: list[RouteStep] = []
        pending = route.pending
        while pending and pending[0] in route.ready and (route.dead or route.address):
            spec = route.ready.pop(pending.popleft())
            if route.dead:
                out.append(Failed(spec.task_id, f"{route.dead} (while calling {spec.name!r})"))
            else:
                self._inflight[spec.task_id] = (actor_id, spec)
                out.append(Send(route.address, spec))
        return out
