"""The runtime's data port: values travel holder to requester, never through the head.

Every driver and worker binds a ROUTER of its own (its *data port*, on the address other
hosts reach it by) and registers the address with the head. Two kinds arrive there:

- ``RESULTS``: a worker's large task results (over ``DIRECT_RESULT_BYTES``), sent straight
  to the task's owner; the head told the worker the owner's address with the task
  (``EXECUTE``). The owner then tells the head (``RESULTS_RECEIVED``), and only then
  does the head count the tasks finished: if the worker dies first, they are retried.
- ``OBJECT_VALUE``: the answer to a ``GET_OBJECT``. The request goes through the head
  (which knows where every owner is and adds the requester's data address); the owner
  answers on a DEALER of its own straight to the requester's data port.

Small results keep the head's path: one message fewer, and the head learns at once that
the worker is free. Large messages travel in signed pieces (``protocol/bulk.py``), at the
receiver's pace: our DEALERs to data ports keep what does not fit yet in a backlog that
``pump_data_out`` hands on before each poll.
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
from rayipy.transport.endpoint import Endpoint

log = logging.getLogger("rayipy.node.client")

DIRECT_RESULT_BYTES = 1 * 2**20


def is_large(result: TaskResult) -> bool:
    return sum(p.nbytes for p in result.values if hasattr(p, "nbytes")) > DIRECT_RESULT_BYTES


DATA_OUT_IDLE_SECONDS = 120.0

# Messages read ahead per peer before ZeroMQ stops reading from it (TCP then holds the
# peer back; nothing is dropped). A large message's pieces otherwise pile up here
# faster than they are checked: each in fresh memory the kernel must zero, while the
# sender's pieces are views of its value that cost nothing to keep waiting.
DATA_PORT_QUEUE = 8
# Messages handed to ZeroMQ per data port we send to; the rest wait in the Endpoint's
# backlog, a large one as pieces not yet signed (Endpoint.pump).
DATA_OUT_QUEUE = 1


def open_data_port(context: zmq.Context, signer) -> Endpoint:
    """The ROUTER other processes send values to (bind it to an address they reach)."""
    return Endpoint(context, zmq.ROUTER, signer, receive_queue=DATA_PORT_QUEUE)


class DataPort:
    def send_to(self, address: str, kind: Kind, body: tuple) -> None:
        """Any thread: send one message straight to another process's data port."""
        self.outbox.append(("to", address, kind, body))
        self.waker.wake()

    def data_out(self, address: str) -> Endpoint:
        """Our DEALER to a data port (send only: nothing comes back on it)."""
        entry = self._data_out.get(address)
        out = entry[0] if entry else Endpoint(self.context, zmq.DEALER, self.signer,
                                              self.process_id, send_queue=DATA_OUT_QUEUE)
        if entry is None:
            out.connect(address)
        self._data_out[address] = (out, time.monotonic())
        return out

    def release_idle_memory(self) -> None:
        """Give back landing memory of received values that has been unused a while."""
        landing.POOL.trim()

    def pump_data_out(self) -> None:
        """I/O thread, before each poll: send what waits for data ports that have room,
        and have the poll wake us when the others do."""
        for address, (out, last) in list(self._data_out.items()):
            if out.backlogged and out.pump():
                self._data_out[address] = (out, time.monotonic())   # a transfer moving
            self._poller.register(out.socket, zmq.POLLOUT if out.backlogged else 0)

    def close_idle_data_out(self, now: float) -> None:
        """Close connections unused for a while: to a process that is gone, what waits in
        the queue would otherwise wait (and take memory) for ever."""
        for address, (out, last) in list(self._data_out.items()):
            if now - last > DATA_OUT_IDLE_SECONDS:
                self._poller.register(out.socket, 0)
                out.close()
                del self._data_out[address]

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
