"""A worker's direct inbox: calls that come straight from callers, not through the head.

The worker's main thread owns this ROUTER socket (its own ZeroMQ context, so it never
waits on the I/O thread's) and waits on it, and on a wake-up pipe for work the head sent
through the I/O thread, whenever it has nothing to run. A call that arrives is run by
the thread that received it, and its result leaves on the same socket: no thread
hand-off on either side of the worker.

Replies are batched per caller. Borrow registrations made while running a caller's call
ride in the same message, before the results, so the caller learns of them before it
releases what the call pinned.
"""

from __future__ import annotations

import zmq

from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import Signer
from rayipy.transport.endpoint import Endpoint, Waker


class DirectInbox:
    def __init__(self, signer: Signer, ip: str) -> None:
        self.context = zmq.Context()
        self.endpoint = Endpoint(self.context, zmq.ROUTER, signer)
        self.address = self.endpoint.bind(f"tcp://{ip}:*")
        self.waker = Waker()
        self.poller = zmq.Poller()
        self.poller.register(self.endpoint.socket, zmq.POLLIN)
        self.poller.register(self.waker.fd, zmq.POLLIN)
        self.replies: dict[bytes, list] = {}     # caller identity -> results
        self.borrows: dict[bytes, list] = {}     # caller identity -> [(oid, delta, borrower)]

    def wait(self, timeout_ms: int) -> list[tuple[bytes, tuple]]:
        """Block until a call or a wake-up arrives; returns the calls as (caller, body)."""
        events = dict(self.poller.poll(timeout_ms))
        if self.waker.fd in events:
            self.waker.clear()
        return self.drain()

    def drain(self) -> list[tuple[bytes, list]]:
        calls = []
        socket = self.endpoint.socket
        while socket.poll(0, zmq.POLLIN):
            caller, message = self.endpoint.recv()
            if message is None:
                continue
            if message.kind is Kind.CALL:
                calls.append((caller, message.body))
            else:
                self.endpoint.dropped["unexpected kind"] += 1
        return calls

    def add_reply(self, caller: bytes, result) -> None:
        self.replies.setdefault(caller, []).append(result)

    def add_borrow(self, caller: bytes, change: tuple) -> None:
        self.borrows.setdefault(caller, []).append(change)

    def has_replies(self) -> bool:
        return bool(self.replies)

    def flush(self) -> None:
        replies, self.replies = self.replies, {}
        borrows, self.borrows = self.borrows, {}
        for caller in replies.keys() | borrows.keys():
            self.endpoint.send(Kind.CALL_DONE, (replies.get(caller, []), borrows.get(caller, [])),
                               caller)

    def close(self) -> None:
        self.endpoint.close()
        self.waker.close()
        self.context.term()
