"""The runtime's data port: values travel holder to requester, never through the head.

Every driver and worker listens on a *data port* of its own (plain sockets,
``transport/stream.py``: TCP on the address other hosts reach it by, and a Unix socket
for this machine) and registers the address with the head. Two kinds arrive there:

- ``RESULTS``: a worker's large task results (over ``DIRECT_RESULT_BYTES``), sent straight
  to the task's owner; the head told the worker the owner's address with the task
  (``EXECUTE``). The owner then tells the head (``RESULTS_RECEIVED``), and only then
  does the head count the tasks finished: if the worker dies first, they are retried.
  If the worker's connection fails before it has written them all (the owner's data
  port cannot be reached from here: a driver behind NAT or a firewall), they go
  through the head instead, as small results do (``reroute_unwritten``).
- ``OBJECT_VALUE``: the answer to a ``GET_OBJECT``. The request goes through the head
  (which knows where every owner is and adds the requester's data address); the owner
  answers on a connection of its own straight to the requester's data port (or, if
  that fails, through the head, as for results).

Small results keep the head's path: one message fewer, and the head learns at once that
the worker is free. A large message is signed 1 MiB at a time as the socket takes it and
checked as its bytes arrive, straight into reused landing memory; the I/O thread writes
what the socket does not take at once when the poll says it has room, so the sender goes
at the receiver's pace and never waits. On ZeroMQ the same transfer also passed through
ZeroMQ's I/O threads and one more copy: 100 MB from one host to another went from about
0.9 to about 1 GB/s, and on one host from 1.05 to 1.33 GB/s.
A mixin of ``Runtime``; its methods run on the I/O thread unless said otherwise.
"""

from __future__ import annotations

import logging
import time

import zmq

from rayipy import exceptions
from rayipy.core.objects import PENDING, READY
from rayipy.protocol import errors, landing
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import ObjectValue, TaskResult
from rayipy.transport.stream import StreamConnection

log = logging.getLogger("rayipy.node.client")

DIRECT_RESULT_BYTES = 1 * 2**20


def is_large(result: TaskResult) -> bool:
    return sum(p.nbytes for p in result.values if hasattr(p, "nbytes")) > DIRECT_RESULT_BYTES


DATA_OUT_IDLE_SECONDS = 120.0


class DataPort:
    def send_to(self, address: str, kind: Kind, body: tuple) -> None:
        """Any thread: send one message straight to another process's data port."""
        self.outbox.append(("to", address, kind, body))
        self.waker.wake()

    def send_data(self, address: str, kind: Kind, body: tuple) -> None:
        """Send one message on our connection to a data port, and remember it until
        the connection has written it (``reroute_unwritten``)."""
        out = self.data_out(address)
        self._unwritten.setdefault(out, []).append((kind, body))
        out.send(kind, body)

    def reroute_unwritten(self) -> None:
        """Before each poll: forget what a connection has written; send what a
        connection that failed first had not through the head, which forwards it.
        Nothing else would: the receiver (and, for results, the head) would wait for
        it for ever."""
        for out, messages in list(self._unwritten.items()):
            if out.closed:
                del self._unwritten[out]
                if not out.lost_output:   # all written before it closed: nothing to resend
                    continue
                log.warning("could not send %d large value(s) straight to their receiver (%s); "
                            "sending them through the head", len(messages), out.error)
                for kind, body in messages:
                    if kind is Kind.RESULTS:   # (worker, results): the head's TASK_DONE
                        self.send(Kind.TASK_DONE, (body[1],))
                    else:                      # OBJECT_VALUE: the head forwards it as it is
                        self.send(kind, body)
            elif not out.wants_write():
                del self._unwritten[out]

    def data_out(self, address: str) -> StreamConnection:
        """Our connection to a data port (we only send on it)."""
        entry = self._data_out.get(address)
        if entry is not None and entry[0].closed:
            self._forget_data_out(address, entry[0])   # unwatched and closed, not leaked
            entry = None
        out = entry[0] if entry is not None else StreamConnection.connect(address, self.signer)
        self._data_out[address] = (out, time.monotonic())
        return out

    def release_idle_memory(self) -> None:
        """Give back landing memory of received values that has been unused a while."""
        landing.POOL.trim()

    def watch_data_out(self) -> None:
        """I/O thread, before each poll: watch our outgoing connections that have bytes
        waiting (to write them when the socket has room) or may be closed by the peer."""
        self.reroute_unwritten()
        for address, (out, _last) in list(self._data_out.items()):
            fd = out.fileno()
            if out.closed:
                self._forget_data_out(address, out)
                continue
            self._watch(fd, zmq.POLLIN | (zmq.POLLOUT if out.wants_write() else 0))

    def poll_data(self, events: dict) -> None:
        """I/O thread, after each poll: accept, read what came in, write what waits out."""
        for fd in self.data_port.filenos():
            if fd in events:
                for incoming in self.data_port.accept(fd):
                    self._data_in[incoming.fileno()] = incoming
                    self._watch(incoming.fileno(), zmq.POLLIN)
        for fd, incoming in list(self._data_in.items()):
            if fd in events:
                for message in incoming.receive():
                    self._handle(message, incoming)
                if incoming.closed:
                    self._watch(fd, 0)
                    del self._data_in[fd]
                    incoming.close()
        for address, (out, _last) in list(self._data_out.items()):
            flags = events.get(out.fileno(), 0) if out.fileno() in self._watched else 0
            if flags & zmq.POLLOUT:
                out.on_writable()
                self._data_out[address] = (out, time.monotonic())   # a transfer moving
            if flags & (zmq.POLLIN | zmq.POLLERR):
                out.receive()    # nothing is sent back: this sees the peer close
            if out.closed:
                self._forget_data_out(address, out)

    def _forget_data_out(self, address: str, out: StreamConnection) -> None:
        fd = out.fileno()
        self._watch(fd, 0)
        if self._data_out.get(address, (None,))[0] is out:
            del self._data_out[address]
        if out.error not in ("closed", "closed by the peer"):
            log.info("connection to the data port %s closed: %s", address, out.error)
        out.close()

    def close_idle_data_out(self, now: float) -> None:
        """Close connections unused for a while: to a process that is gone, what waits in
        the connection would otherwise wait (and take memory) for ever."""
        for address, (out, last) in list(self._data_out.items()):
            if now - last > DATA_OUT_IDLE_SECONDS:
                self._forget_data_out(address, out)

    def close_data(self) -> None:
        self.data_port.close()
        for incoming in self._data_in.values():
            incoming.close()
        for out, _last in self._data_out.values():
            out.close()
        self._data_in.clear()
        self._data_out.clear()

    def _on_results(self, body: tuple) -> None:
        worker_id, results = body
        for result in results:
            self._finish(result)
        self.send(Kind.RESULTS_RECEIVED,
                  (worker_id, [(r.task_id, r.duration, r.status) for r in results]))

    def _on_get_object(self, body: tuple) -> None:
        object_id, requester, address = body
        if address:
            self._data_addresses[requester] = address
        state, payload = self.objects.answer_when_ready(object_id, requester)
        if state == PENDING:
            return   # sent by _finish when the value comes
        if payload is None:
            payload = errors.capture_system_error(exceptions.ObjectLostError(
                f"ObjectRef({object_id.hex()}) was already freed by its owner"))
        self._send_value(object_id, ObjectValue(state == READY, payload), requester)

    def _send_value(self, object_id: bytes, value: ObjectValue, requester: bytes) -> None:
        address = self._data_addresses.get(requester)
        if address:
            self.send_to(address, Kind.OBJECT_VALUE, (object_id, value, requester))
        else:
            self.send(Kind.OBJECT_VALUE, (object_id, value, requester))

    def _on_object_value(self, body: tuple) -> None:
        object_id, value, _requester = body
        cbs, _waiting, effects = self.objects.fulfill(object_id, value.ok, value.payload)
        self._carry_out(effects)
        for fn in cbs:
            _run_callback(fn)


def _run_callback(fn) -> None:
    try:
        fn()
    except Exception:
        log.exception("an ObjectRef done-callback raised")
