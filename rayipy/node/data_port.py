"""The data port: values travel holder to requester, never through the head.

Every driver and worker listens on a *data port* of its own (plain sockets,
``transport/stream.py``: TCP on the address other hosts reach it by, and a Unix socket
for this machine) and registers the address with the head. Two kinds arrive there:

- ``RESULTS``: a worker's large task results (over ``DIRECT_RESULT_BYTES``), sent straight
  to the task's owner; the head told the worker the owner's address with the task
  (``EXECUTE``). The owner then tells the head (``RESULTS_RECEIVED``), and only then
  does the head count the tasks finished: if the worker dies first, they are retried.
- ``OBJECT_VALUE``: the answer to a ``GET_OBJECT``. The request goes through the head
  (which knows where every owner is and adds the requester's data address); the owner
  answers on a connection of its own straight to the requester's data port.

If a connection fails before it has written what was sent on it (the receiver's port
cannot be reached from here: a driver behind NAT or a firewall), that goes through the
head instead, as small results do (``_reroute_unwritten``): nothing else would, and the
receiver (and, for results, the head) would wait for it for ever.

Small values keep the head's path: one message fewer, and the head learns at once that
the worker is free. A large message is signed 1 MiB at a time as the socket takes it and
checked as its bytes arrive, straight into reused landing memory; the I/O thread writes
what the socket does not take at once when the poll says it has room, so the sender goes
at the receiver's pace and never waits. On ZeroMQ the same transfer also passed through
ZeroMQ's I/O threads and one more copy: 100 MB from one host to another went from about
0.9 to about 1 GB/s, and on one host from 1.05 to 1.33 GB/s.

This class moves bytes only; what the messages mean is the runtime's business (it is
given ``handle`` for what arrives and ``to_head`` for what must go the long way). Its
methods run on the I/O thread, except ``send_to``.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any, Callable

import zmq

from rayipy.protocol import landing
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import TaskResult
from rayipy.protocol.wire import Message, Signer
from rayipy.transport.endpoint import Waker
from rayipy.transport.poll_set import PollSet
from rayipy.transport.stream import StreamConnection, StreamListener

log = logging.getLogger(__name__)

DIRECT_RESULT_BYTES = 1 * 2**20
DATA_OUT_IDLE_SECONDS = 120.0


def is_large(result: TaskResult) -> bool:
    return sum(p.nbytes for p in result.values if hasattr(p, "nbytes")) > DIRECT_RESULT_BYTES


class DataPort:
    def __init__(self, ip: str, signer: Signer, waker: Waker,
                 handle: Callable[[Message, Any], None],
                 to_head: Callable[[Kind, Any], None]) -> None:
        self.listener = StreamListener(ip, signer)
        self.address = self.listener.address
        self._signer = signer
        self._waker = waker
        self._handle = handle
        self._to_head = to_head
        self._poll: PollSet | None = None
        self._outbox: collections.deque[tuple[str, Kind, Any]] = collections.deque()
        self._incoming: dict[int, StreamConnection] = {}                 # fd -> from others
        self._outgoing: dict[str, tuple[StreamConnection, float]] = {}   # address -> ours, last use
        self._unwritten: dict[StreamConnection, list[tuple[Kind, Any]]] = {}

    def send_to(self, address: str, kind: Kind, body: Any) -> None:
        """Any thread: send one message straight to another process's data port."""
        self._outbox.append((address, kind, body))
        self._waker.wake()

    def open(self, poll_set: PollSet) -> None:
        self._poll = poll_set
        for fd in self.listener.filenos():
            poll_set.register(fd)

    def before_poll(self) -> None:
        """Send what was queued; resend what failed connections did not write; watch
        our connections that have bytes waiting (to write them when the socket has room)
        or may be closed by the peer."""
        while self._outbox:
            self._send_now(*self._outbox.popleft())
        self._reroute_unwritten()
        assert self._poll is not None
        for address, (out, _last) in list(self._outgoing.items()):
            if out.closed:
                self._forget(address, out)
                continue
            self._poll.watch(out.fileno(), zmq.POLLIN | (zmq.POLLOUT if out.wants_write() else 0))

    def after_poll(self, events: dict) -> None:
        """Accept, read what came in, write what waits out."""
        poll = self._poll
        assert poll is not None
        for fd in self.listener.filenos():
            if fd in events:
                for incoming in self.listener.accept(fd):
                    self._incoming[incoming.fileno()] = incoming
                    poll.watch(incoming.fileno(), zmq.POLLIN)
        for fd, incoming in list(self._incoming.items()):
            if fd in events:
                for message in incoming.receive():
                    self._handle(message, incoming)
                if incoming.closed:
                    poll.watch(fd, 0)
                    del self._incoming[fd]
                    incoming.close()
        for address, (out, _last) in list(self._outgoing.items()):
            flags = poll.events_for(out.fileno(), events)
            if flags & zmq.POLLOUT:
                out.on_writable()
                self._outgoing[address] = (out, time.monotonic())   # a transfer moving
            if flags & (zmq.POLLIN | zmq.POLLERR):
                out.receive()    # nothing is sent back: this sees the peer close
            if out.closed:
                self._forget(address, out)

    def close_idle(self, now: float) -> None:
        """Close connections unused for a while: to a process that is gone, what waits in
        the connection would otherwise wait (and take memory) for ever. Give back landing
        memory unused a while too."""
        for address, (out, last) in list(self._outgoing.items()):
            if now - last > DATA_OUT_IDLE_SECONDS:
                self._forget(address, out)
        landing.POOL.trim()

    def unwritten(self) -> int:
        """Messages sent on our connections that they have not written yet."""
        return sum(len(messages) for messages in self._unwritten.values())

    def close(self) -> None:
        self.listener.close()
        for incoming in self._incoming.values():
            incoming.close()
        for out, _last in self._outgoing.values():
            out.close()
        self._incoming.clear()
        self._outgoing.clear()

    # -- inside --------------------------------------------------------------------------
    def _send_now(self, address: str, kind: Kind, body: Any) -> None:
        """Send on our connection to a data port, and remember the message until the
        connection has written it."""
        out = self.connection_to(address)
        self._unwritten.setdefault(out, []).append((kind, body))
        out.send(kind, body)

    def connection_to(self, address: str) -> StreamConnection:
        """Our connection to a data port (we only send on it)."""
        entry = self._outgoing.get(address)
        if entry is not None and entry[0].closed:
            self._forget(address, entry[0])   # unwatched and closed, not leaked
            entry = None
        out = entry[0] if entry is not None else StreamConnection.connect(address, self._signer)
        self._outgoing[address] = (out, time.monotonic())
        return out

    def _reroute_unwritten(self) -> None:
        """Forget what a connection has written; send what a connection that failed
        first had not written through the head, which forwards it."""
        for out, messages in list(self._unwritten.items()):
            if out.closed:
                del self._unwritten[out]
                if not out.lost_output:   # all written before it closed: nothing to resend
                    continue
                log.warning("could not send %d large value(s) straight to their receiver (%s); "
                            "sending them through the head", len(messages), out.error)
                for kind, body in messages:
                    if kind is Kind.RESULTS:   # (worker, results): the head's TASK_DONE
                        self._to_head(Kind.TASK_DONE, (body[1],))
                    else:                      # OBJECT_VALUE: the head forwards it as it is
                        self._to_head(kind, body)
            elif not out.unsent():
                del self._unwritten[out]

    def _forget(self, address: str, out: StreamConnection) -> None:
        assert self._poll is not None
        self._poll.watch(out.fileno(), 0)
        if self._outgoing.get(address, (None,))[0] is out:
            del self._outgoing[address]
        if out.error not in ("closed", "closed by the peer"):
            log.info("connection to the data port %s closed: %s", address, out.error)
        out.close()
