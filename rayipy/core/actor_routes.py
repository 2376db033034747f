"""Where a caller sends its actor calls: straight to the actor's worker, in order.

A caller learns an actor's worker address from the head (``ACTOR_LOCATION``: the creator
is told when the actor is placed, other callers ask once). Each actor has a FIFO of this
caller's calls: a call takes its place when it is made, and leaves when it is ready (its
ref arguments resolved), every call before it has left, and the address is known. So all
of one caller's calls travel one connection in the order they were made.

When the head says the actor's worker died, the calls in flight fail; if it is
restarting, later calls wait for the new address; if not, they fail too.

No sockets: ``send(address, spec)`` and ``fail(spec, why)`` are given by the runtime and
are called with the lock held, so sends leave in FIFO order whatever thread made them.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable


class _Slot:
    __slots__ = ("spec",)

    def __init__(self) -> None:
        self.spec = None      # filled once the call's arguments are ready


class _Route:
    __slots__ = ("address", "dead", "pending", "asked")

    def __init__(self) -> None:
        self.address = ""                               # the actor's worker, once known
        self.dead = ""                                  # why the actor is gone for good
        self.pending: collections.deque[_Slot] = collections.deque()
        self.asked = False                              # the head will tell us the address


class ActorRoutes:
    def __init__(self, send: Callable, fail: Callable, locate: Callable) -> None:
        self._send = send          # send(address, spec)
        self._fail = fail          # fail(spec, why)
        self._locate = locate      # locate(actor_id): ask the head
        self._routes: dict[bytes, _Route] = {}
        self._inflight: dict[bytes, bytes] = {}         # task id -> actor id
        # Re-entrant: failing a call runs its callbacks, which may make calls.
        self._lock = threading.RLock()

    def created(self, actor_id: bytes) -> None:
        """We created it: the head tells us where it lands without being asked."""
        with self._lock:
            self._routes.setdefault(actor_id, _Route()).asked = True

    def reserve(self, actor_id: bytes) -> _Slot:
        """A call is made: its place in the actor's FIFO (fill it when it is ready)."""
        with self._lock:
            route = self._routes.setdefault(actor_id, _Route())
            slot = _Slot()
            route.pending.append(slot)
            if not route.asked:
                route.asked = True
                self._locate(actor_id)
            return slot

    def fill(self, actor_id: bytes, slot: _Slot, spec) -> None:
        with self._lock:
            slot.spec = spec
            self._advance(actor_id, self._routes[actor_id])

    def located(self, actor_id: bytes, address: str) -> None:
        with self._lock:
            route = self._routes.setdefault(actor_id, _Route())
            route.address = address
            self._advance(actor_id, route)

    def lost(self, actor_id: bytes, why: str, restarting: bool) -> list[bytes]:
        """The actor's worker died; returns the task ids of calls in flight to it."""
        with self._lock:
            route = self._routes.setdefault(actor_id, _Route())
            route.address = ""
            inflight = [t for t, a in self._inflight.items() if a == actor_id]
            for task_id in inflight:
                del self._inflight[task_id]
            if not restarting:
                route.dead = why
                self._advance(actor_id, route)   # fails what was waiting
            return inflight

    def cancel(self, task_id: bytes) -> tuple[str, bytes | None]:
        """Cancel a call: ("local", None) if it had not left yet (it is failed here), or
        ("sent", actor id) if its worker has it, or ("unknown", None)."""
        with self._lock:
            actor_id = self._inflight.get(task_id)
            if actor_id is not None:
                return "sent", actor_id
            for route in self._routes.values():
                for slot in route.pending:
                    if slot.spec is not None and slot.spec.task_id == task_id:
                        route.pending.remove(slot)
                        self._fail(slot.spec, "")
                        return "local", None
            return "unknown", None

    def finished(self, task_id: bytes) -> None:
        with self._lock:
            self._inflight.pop(task_id, None)

    def _advance(self, actor_id: bytes, route: _Route) -> None:
        pending = route.pending
        while pending and pending[0].spec is not None:
            if route.dead:
                self._fail(pending.popleft().spec, route.dead)
            elif route.address:
                spec = pending.popleft().spec
                self._inflight[spec.task_id] = actor_id
                self._send(route.address, spec)
            else:
                return
