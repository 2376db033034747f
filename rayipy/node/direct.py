"""A worker's direct inbox: calls that come straight from callers, not through the head.

The worker's main thread owns a listening TCP socket and the connections callers open to
it (``rayipy/transport/stream.py``: signed messages on plain sockets), and waits on them,
and on a wake-up pipe for work the head sent through the I/O thread, whenever it has
nothing to run. A call that arrives is run by the thread that read it, and its result
leaves on the same connection, written by that thread: no thread hand-off on either side
of the worker, and no ZeroMQ I/O thread between the worker and the kernel.

Replies are batched per caller. Borrow registrations made while running a caller's call
ride in the same message, before the results, so the caller learns of them before it
releases what the call pinned.
"""

from __future__ import annotations

import collections
import select

from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import Signer
from rayipy.transport.endpoint import Waker
from rayipy.transport.stream import StreamConnection, StreamListener


class DirectInbox:
    def __init__(self, signer: Signer, ip: str) -> None:
        self.listener = StreamListener(ip, signer)
        self.address = self.listener.address
        self.waker = Waker()
        # Plain file descriptors only: the kernel's poll, without ZeroMQ's wrapper.
        self.poller = select.poll()
        self.listener_fds = frozenset(self.listener.filenos())
        for fd in self.listener_fds:
            self.poller.register(fd, select.POLLIN)
        self.poller.register(self.waker.fd, select.POLLIN)
        self.callers: dict[int, StreamConnection] = {}          # fd -> connection
        self.replies: dict[StreamConnection, list] = {}         # caller -> results
        self.borrows: dict[StreamConnection, list] = {}         # caller -> [(oid, delta, borrower)]
        self.dropped: collections.Counter[str] = collections.Counter()

    def wait(self, timeout_ms: int) -> list[tuple[StreamConnection, tuple]]:
        """Block until a call or a wake-up arrives; returns the calls as (caller, body)."""
        return self._read(self.poller.poll(timeout_ms), clear_waker=True)

    def drain(self) -> list[tuple[StreamConnection, tuple]]:
        """The calls that have arrived, without waiting. A wake-up stays pending: while the
        main thread is busy, more wakes then cost no write."""
        return self._read(self.poller.poll(0), clear_waker=False)

    def _read(self, events: list[tuple[int, int]],
              clear_waker: bool) -> list[tuple[StreamConnection, tuple]]:
        calls: list[tuple[StreamConnection, tuple]] = []
        callers = self.callers
        # One pass over what poll returned: most often nothing, or the wake-up pipe alone
        # (between queued tasks), or one caller (a direct call).
        for fd, _ in events:
            caller = callers.get(fd)
            if caller is None:
                if fd == self.waker.fd:
                    if clear_waker:
                        self.waker.clear()
                elif fd in self.listener_fds:
                    for accepted in self.listener.accept(fd):
                        callers[accepted.fileno()] = accepted
                        self.poller.register(accepted.fileno(), select.POLLIN)
                continue
            for message in caller.receive():
                if message.kind is Kind.CALL:
                    calls.append((caller, message.body))
                else:
                    self.dropped["unexpected kind"] += 1
            if caller.closed:
                self.dropped.update(caller.dropped)
                self.poller.unregister(fd)
                del callers[fd]
                caller.close()
        return calls

    def add_reply(self, caller: StreamConnection, result) -> None:
        self.replies.setdefault(caller, []).append(result)

    def add_borrow(self, caller: StreamConnection, change: tuple) -> None:
        self.borrows.setdefault(caller, []).append(change)

    def has_replies(self) -> bool:
        return bool(self.replies)

    def flush(self) -> None:
        """Send the replies; each is written whole before the next task runs (a caller's
        I/O thread always reads), so a long task never holds back an earlier result."""
        replies, self.replies = self.replies, {}
        borrows, self.borrows = self.borrows, {}
        for caller in replies.keys() | borrows.keys():
            caller.send(Kind.CALL_DONE, (replies.get(caller, []), borrows.get(caller, [])),
                        block=True)

    def close(self) -> None:
        for caller in self.callers.values():
            caller.close()
        self.callers.clear()
        self.listener.close()
        self.waker.close()
