"""The runtime's direct calls: actor calls and leased tasks, straight to a worker.

A call goes from the thread that makes it (or, when its arguments become ready later, the
thread that learns so) straight onto a TCP connection of this process to the worker's
direct inbox (``CALL``, ``rayipy/transport/stream.py``); the answer comes back on it
(``CALL_DONE``) and the I/O thread, which polls every such connection, reads it. What the
kernel does not take at once waits in the connection for the I/O thread to write. The
head only says where an actor is (``ACTOR_LOCATION``) and lends workers (``LEASE``,
``LEASE_ENDED``). The bookkeeping is pure and lives in ``rayipy.core.actor_routes`` and
``rayipy.core.leases``; this mixin of ``Runtime`` carries it out.
"""

from __future__ import annotations

import logging
import time

import zmq

from rayipy import exceptions
from rayipy.protocol import errors
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import CANCELLED, CRASHED, TaskResult, TaskSpec
from rayipy.transport.stream import StreamConnection

log = logging.getLogger(__name__)


class DirectCalls:
    def _queue_call(self, address: str, spec: TaskSpec) -> None:
        """Send one call now, from this thread. Calls to one address leave in the order
        of these calls (the connection's lock), which the actor's FIFO makes its order."""
        direct = self._direct_to(address)
        with self._direct_lock:
            sent = self._functions_at.setdefault(address, set())
            functions = []
            fid = spec.function_id
            if fid and fid not in sent:
                sent.add(fid)
                functions.append((fid, self._function_bytes[fid]))
            # Under the same lock: a call that needs the function must not overtake the
            # one that carries it.
            direct.send(Kind.CALL, ([spec], functions))
        if direct.wants_write():
            self.waker.wake()   # the I/O thread finishes connecting or writing it

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

    def _direct_to(self, address: str) -> StreamConnection:
        """Our connection to a worker's direct inbox (any thread); a new one is watched by
        the I/O thread from its next poll."""
        with self._direct_lock:
            direct = self._direct.get(address)
            if direct is None or direct.closed:
                direct = self._direct[address] = StreamConnection.connect(address, self.signer)
                self.waker.wake()
            return direct

    def _poll_direct(self, poller: zmq.Poller, events: dict) -> None:
        """I/O thread: read answers, write what waits, forget closed connections, and keep
        the poller's interest in each connection up to date."""
        with self._direct_lock:
            directs = list(self._direct.items())
        for address, direct in directs:
            fd = direct.fileno()
            flags = events.get(fd, 0) if fd in self._direct_polled else 0
            if flags & zmq.POLLOUT:
                direct.on_writable()
            if flags & (zmq.POLLIN | zmq.POLLERR):
                for message in direct.receive():
                    self._last_heard = time.monotonic()
                    self._handle(message, direct)
            if direct.closed:
                if fd in self._direct_polled:
                    poller.unregister(fd)
                    del self._direct_polled[fd]
                with self._direct_lock:
                    if self._direct.get(address) is direct:
                        del self._direct[address]
                        self._functions_at.pop(address, None)
                if direct.error != "closed":
                    log.info("direct connection to %s closed: %s", address, direct.error)
                direct.close()
                continue
            want = zmq.POLLIN | (zmq.POLLOUT if direct.wants_write() else 0)
            if self._direct_polled.get(fd) != want:
                poller.register(fd, want)
                self._direct_polled[fd] = want

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
