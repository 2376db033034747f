"""Direct calls: actor calls and leased tasks, written straight to a worker's inbox.

A call goes from the thread that makes it (or, when its arguments become ready later, the
thread that learns so) straight onto this process's connection to the worker's direct
inbox (``CALL``, ``rayipy/transport/stream.py``); the answer comes back on it
(``CALL_DONE``). A thread waiting in ``get`` for answers that all come on one connection
reads them itself (``wait_on``); otherwise the I/O thread, which polls every such
connection, reads them. What the kernel does not take at once waits in the connection
for the I/O thread to write. Which calls go where is decided by
``rayipy.core.owner.OwnerState``; this class only moves them.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from typing import Any, Callable

import zmq

from rayipy.core.objects import ObjectTable
from rayipy.node import interrupts
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import TaskSpec
from rayipy.protocol.wire import Message, Signer
from rayipy.transport.endpoint import Waker
from rayipy.transport.poll_set import PollSet
from rayipy.transport.stream import StreamConnection

log = logging.getLogger(__name__)

TASK_ID_BYTES = 16              # an object id is its task's id and a 2-byte index
OWN_READ_SLICE_SECONDS = 0.02   # a thread reading its own answers looks up this often
IDLE_POLL_MS = 100              # the I/O thread's poll timeout
DEFERRED_POLL_MS = 5            # ... while a waiting thread reads a connection itself


class DirectCalls:
    def __init__(self, signer: Signer, waker: Waker, handle: Callable[[Message, Any], None],
                 function_bytes: dict[bytes, bytes]) -> None:
        self._signer = signer
        self._waker = waker
        self._handle = handle
        self._function_bytes = function_bytes                 # id -> pickled, ours
        self._connections: dict[str, StreamConnection] = {}  # inbox address -> ours
        self._lock = threading.Lock()
        self._functions_at: dict[str, set[bytes]] = {}        # address -> function ids sent
        self._sent_on: dict[bytes, StreamConnection] = {}     # call in flight -> connection
        self.poll_ms = IDLE_POLL_MS                           # for the I/O thread's poll

    # -- any thread ------------------------------------------------------------------------
    def send_call(self, address: str, spec: TaskSpec) -> None:
        """Send one call now, from this thread. Calls to one address leave in the order
        of these calls (the connection's lock), which the actor's FIFO makes its order."""
        direct = self._connection_to(address)
        with self._lock:
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
            self._waker.wake()   # the I/O thread finishes connecting or writing it

    def forget(self, task_id: bytes) -> None:
        """The call's answer came (or it ended another way)."""
        self._sent_on.pop(task_id, None)

    def wait_on(self, object_ids: list[bytes], need: int, deadline: float | None,
                objects: ObjectTable, stopped: Callable[[], bool]) -> int | None:
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
        if direct is None or direct.closed or stopped() or not interrupts.can_hold():
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
                return self._read_until(direct, object_ids, need, deadline, held, objects,
                                        stopped)
            finally:
                direct.claim.release()
                # The I/O thread is not woken for a connection it left to us (the next
                # call's wait will likely claim it again): it looks within DEFERRED_POLL_MS.
                if direct.closed:
                    self._waker.wake()   # for the I/O thread to forget it
        finally:
            if held:
                interrupts.release()

    # -- the I/O thread --------------------------------------------------------------------
    def after_poll(self, events: dict, poll: PollSet) -> None:
        """Read answers, write what waits, forget closed connections, and keep the
        poller's interest in each connection up to date.

        A connection that a waiting thread reads itself (``wait_on``) is left to it: the
        I/O thread stops watching it for reading until the claim is let go, and
        meanwhile polls with a short timeout (``poll_ms``) to notice that."""
        with self._lock:
            connections = list(self._connections.items())
        deferred = 0
        for address, direct in connections:
            fd = direct.fileno()
            flags = poll.events_for(fd, events)
            if flags & zmq.POLLOUT:
                direct.on_writable()
            if flags & (zmq.POLLIN | zmq.POLLERR):
                if direct.claim.acquire(blocking=False):
                    try:
                        self._read(direct)
                    finally:
                        direct.claim.release()
                else:
                    direct.deferred = True
            if direct.deferred and not direct.claim.locked():
                direct.deferred = False
            if direct.closed and not direct.claim.locked():
                poll.watch(fd, 0)
                with self._lock:
                    if self._connections.get(address) is direct:
                        del self._connections[address]
                        self._functions_at.pop(address, None)
                if direct.error != "closed":
                    log.info("direct connection to %s closed: %s", address, direct.error)
                direct.close()
                continue
            deferred += direct.deferred
            poll.watch(fd, (0 if direct.deferred else zmq.POLLIN)
                       | (zmq.POLLOUT if direct.wants_write() else 0))
        self.poll_ms = DEFERRED_POLL_MS if deferred else IDLE_POLL_MS

    def read_now(self, address: str) -> None:
        """Handle the answers already come on our connection to ``address``, unless a
        waiting thread reads it: news of the worker's death, which came another way,
        must not fail calls whose answers came first (an actor that exited after them)."""
        with self._lock:
            direct = self._connections.get(address)
        if direct is None or direct.closed or not direct.claim.acquire(blocking=False):
            return
        try:
            self._read(direct)   # reads only what is there (non-blocking)
        finally:
            direct.claim.release()

    def close(self) -> None:
        with self._lock:
            for direct in self._connections.values():
                direct.close()
            self._connections.clear()

    # -- inside ----------------------------------------------------------------------------
    def _connection_to(self, address: str) -> StreamConnection:
        """Our connection to a worker's direct inbox (any thread); a new one is watched by
        the I/O thread from its next poll."""
        with self._lock:
            direct = self._connections.get(address)
            if direct is None or direct.closed:
                direct = self._connections[address] = StreamConnection.connect(address, self._signer)
                self._waker.wake()
            return direct

    def _read(self, direct: StreamConnection) -> None:
        """Read and handle the answers that came on a connection (its claim held)."""
        for message in direct.receive():
            self._handle(message, direct)

    def _read_until(self, direct: StreamConnection, object_ids: list[bytes], need: int,
                    deadline: float | None, holding: bool, objects: ObjectTable,
                    stopped: Callable[[], bool]) -> int | None:
        poll = select.poll()
        poll.register(direct.fileno(), select.POLLIN)
        while True:
            n = objects.ready_count(object_ids)
            if n >= need:
                return n
            if direct.closed or stopped():
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
                self._read(direct)
