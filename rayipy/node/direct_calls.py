"""The runtime's direct calls: actor calls and leased tasks, straight to a worker.

Both go from this process's I/O thread over a DEALER of its own to the worker's direct
inbox (``CALL``) and come back on it (``CALL_DONE``); the head only says where an actor is
(``ACTOR_LOCATION``) and lends workers (``LEASE``, ``LEASE_ENDED``). The bookkeeping is
pure and lives in ``rayipy.core.actor_routes`` and ``rayipy.core.leases``; this mixin of
``Runtime`` carries it out.
"""

from __future__ import annotations

import time

import zmq

from rayipy import exceptions
from rayipy.protocol import errors
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import CANCELLED, CRASHED, TaskResult, TaskSpec
from rayipy.transport.endpoint import Endpoint


class DirectCalls:
    def _queue_call(self, address: str, spec: TaskSpec) -> None:
        self.outbox.append(("call", address, spec))
        self.waker.wake()

    def _fail_call(self, spec: TaskSpec, why: str) -> None:
        if not why:  # cancelled before it left this process
            error = exceptions.TaskCancelledError(spec.name, "cancelled before it was sent")
            self._finish(TaskResult(spec.task_id, CANCELLED, (errors.capture_system_error(error),),
                                    0.0, "", ()))
            return
        self._fail_actor_call(spec.task_id, f"{why} (while calling {spec.name!r})")

    def _fail_actor_call(self, task_id: bytes, why: str) -> None:
        error = exceptions.ActorDiedError(f"the actor is dead: {why}")
        self._finish(TaskResult(task_id, CRASHED, (errors.capture_system_error(error),), 0.0, "", ()))

    def _direct_to(self, address: str) -> Endpoint:
        """Our DEALER to an actor's worker (I/O thread only)."""
        direct = self._direct.get(address)
        if direct is None:
            direct = self._direct[address] = Endpoint(self.context, zmq.DEALER, self.signer,
                                                      self.process_id)
            direct.connect(address)
            self._poller.register(direct.socket, zmq.POLLIN)
        return direct

    def _on_call_done(self, body: tuple) -> None:
        results, borrows = body
        # Registrations first: the results release pins that the borrows must outlive.
        for object_id, delta, borrower in borrows:
            self._route_borrow(object_id, delta, borrower)
        for result in results:
            self.actor_routes.finished(result.task_id)
            self._finish(result)

    def _on_actor_location(self, body: tuple) -> None:
        actor_id, address, why, restarting = body
        if address:
            self.actor_routes.located(actor_id, address)
        else:
            self.on_actor_gone(actor_id, why, restarting)

    def _on_lease(self, body: tuple) -> None:
        request, worker, address = body
        if not worker:
            self.leases.denied(request)
        elif not self.leases.granted(request, worker, address, time.monotonic()):
            self.send(Kind.LEASE_RETURN, (worker,))

    def _on_lease_ended(self, body: tuple) -> None:
        worker, why = body
        if not why:  # the head wants it back: we return it once nothing is in flight
            self.leases.revoke(worker)
            return
        for spec in self.leases.lost(worker):  # it died: retry, as the head would have
            if spec.task_id in self._cancelled:
                error = exceptions.TaskCancelledError(spec.name, "its worker was killed (force=True)")
                self._finish(TaskResult(spec.task_id, CANCELLED, (errors.capture_system_error(error),),
                                        0.0, "", ()))
            elif spec.attempt < spec.max_retries:
                self._via_head.add(spec.task_id)
                self.send("spec", spec._replace(attempt=spec.attempt + 1))
            else:
                error = exceptions.WorkerCrashedError(why)
                self._finish(TaskResult(spec.task_id, CRASHED, (errors.capture_system_error(error),),
                                        0.0, "", ()))

    def on_actor_gone(self, actor_id: bytes, why: str, restarting: bool = False) -> None:
        for task_id in self.actor_routes.lost(actor_id, why, restarting):
            self._fail_actor_call(task_id, why)
