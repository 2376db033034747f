"""The runtime's direct calls: actor calls and leased tasks, straight to a worker.

A call goes from the thread that makes it (or, when its arguments become ready later, the
thread that learns so) straight onto this process's connection to the worker's direct
inbox (``CALL``, ``rayipy/transport/stream.py``); the answer comes back on it
(``CALL_DONE``). A thread waiting in ``get`` for answers that all come on one connection
reads them itself (``wait_on_direct``); otherwise the I/O thread, which polls every such
connection, reads them. What the kernel does not take at once waits in the connection
for the I/O thread to write. The head only says where an actor is (``ACTOR_LOCATION``)
and lends workers (``LEASE``, ``LEASE_ENDED``). The bookkeeping is pure and lives in
``rayipy.core.actor_routes`` and ``rayipy.core.leases``; this mixin of ``Runtime``
carries it out.
"""

from __future__ import annotations

import logging
import select
import threading
import time

import zmq

from rayipy import exceptions
from rayipy.node import interrupts
from rayipy.protocol import errors
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import CANCELLED, CRASHED, TaskResult, TaskSpec
from rayipy.transport.stream import StreamConnection

log = logging.getLogger(__name__)

TASK_ID_BYTES = 16              # an object id is its task's id and a 2-byte index
OWN_READ_SLICE_SECONDS = 0.02   # a thread reading its own answers looks up this often
IDLE_POLL_MS = 100              # the I/O thread's poll timeout
DEFERRED_POLL_MS = 5            # ... while a waiting thread reads a connection itself


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
            self._sent_on[spec.task_id] = direct   # before it leaves: the answer may be quick
            if not direct.send(Kind.CALL, ([spec], functions)):
                # The head reports the worker's death, which fails or retries the call.
                log.warning("could not send %s to %s: %s", spec.name, address, direct.error)
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

    def _read_direct(self, direct: StreamConnection) -> None:
        """Read and handle the answers that came on a connection (its claim held)."""
        for message in direct.receive():
            self._last_heard = time.monotonic()
            self._handle(message, direct)

    def wait_on_direct(self, object_ids: list[bytes], need: int,
                       deadline: float | None) -> int | None:
        """Wait for direct calls' results by reading their connection in this thread.

        The I/O thread would read the answer and then wake this thread: one thread
        wake-up more than reading it here. Only when every object waited on is the
        result of a call sent on one connection, no other thread reads it now (its
        ``claim``), and Ctrl-C can be held while an answer is handled (``interrupts``);
        otherwise None, and the caller waits as usual. Returns how many of the objects
        are ready, as ``ObjectTable.wait`` does.
        """
        direct = None
        for object_id in object_ids:
            sent_on = self._sent_on.get(object_id[:TASK_ID_BYTES])
            if sent_on is None or (direct is not None and sent_on is not direct):
                return None
            direct = sent_on
        if direct is None or direct.closed or self.lost is not None or not interrupts.can_hold():
            return None
        # On the main thread Ctrl-C is held from before taking the claim to after letting
        # it go; one that comes meanwhile ends the wait within a poll slice and is raised
        # by the release, with nothing half read.
        held = threading.current_thread() is threading.main_thread()
        if held:
            interrupts.hold()
        try:
            if not direct.claim.acquire(blocking=False):
                return None
            try:
                return self._read_until(direct, object_ids, need, deadline, held)
            finally:
                direct.claim.release()
                # The I/O thread is not woken for a connection it left to us (the next
                # call's wait will likely claim it again): it looks within DEFERRED_POLL_MS.
                if direct.closed:
                    self.waker.wake()   # for the I/O thread to forget it
        finally:
            if held:
                interrupts.release()

    def _read_until(self, direct: StreamConnection, object_ids: list[bytes], need: int,
                    deadline: float | None, holding: bool) -> int | None:
        poll = select.poll()
        poll.register(direct.fileno(), select.POLLIN)
        while True:
            n = self.objects.ready_count(object_ids)
            if n >= need:
                return n
            if direct.closed or self.lost is not None or self._stopping:
                return None
            # In slices: a result may also come another way (a death the head reports).
            wait = OWN_READ_SLICE_SECONDS
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return n
            readable = poll.poll(wait * 1000)
            if holding and interrupts.pending():
                return None   # the caller's release of the hold raises it
            if readable:
                self._read_direct(direct)

    def _poll_direct(self, events: dict) -> None:
        """I/O thread: read answers, write what waits, forget closed connections, and keep
        the poller's interest in each connection up to date.

        A connection that a waiting thread reads itself (``wait_on_direct``) is left to
        it: the I/O thread stops watching it for reading until the claim is let go, and
        meanwhile polls with a short timeout to notice that."""
        with self._direct_lock:
            directs = list(self._direct.items())
        deferred = 0
        for address, direct in directs:
            fd = direct.fileno()
            flags = events.get(fd, 0) if fd in self._watched else 0
            if flags & zmq.POLLOUT:
                direct.on_writable()
            if flags & (zmq.POLLIN | zmq.POLLERR):
                if direct.claim.acquire(blocking=False):
                    try:
                        self._read_direct(direct)
                    finally:
                        direct.claim.release()
                else:
                    direct.deferred = True
            if direct.deferred and not direct.claim.locked():
                direct.deferred = False
            if direct.closed and not direct.claim.locked():
                self._watch(fd, 0)
                with self._direct_lock:
                    if self._direct.get(address) is direct:
                        del self._direct[address]
                        self._functions_at.pop(address, None)
                if direct.error != "closed":
                    log.info("direct connection to %s closed: %s", address, direct.error)
                direct.close()
                continue
            deferred += direct.deferred
            self._watch(fd, (0 if direct.deferred else zmq.POLLIN)
                        | (zmq.POLLOUT if direct.wants_write() else 0))
        self._poll_ms = DEFERRED_POLL_MS if deferred else IDLE_POLL_MS

    def _on_call_done(self, body: tuple) -> None:
        results, borrows = body
        # Registrations first: the results release pins that the borrows must outlive.
        for object_id, delta, borrower in borrows:
            self.route_borrow(object_id, delta, borrower)
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
