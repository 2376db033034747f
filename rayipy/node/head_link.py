"""A process's connection to the head: one DEALER socket, an outbox, requests.

The I/O thread owns the socket. Any thread queues a message with ``send``: an entry of
the outbox is always ``(Kind, body)``. ``SUBMIT`` entries carry one spec each, and
consecutive ones leave as one ``SUBMIT`` message (a burst of ``f.remote`` calls costs
one message, not one each). ``request`` asks the head a question (``REQUEST``) and
blocks the calling thread until the ``REPLY``; ``ask`` is its form that does not wait.

``silence`` counts how long the head has said nothing, only while this process ran
(``core/liveness.SilenceClock``): the I/O thread turns it each loop, and a turn that
comes late (the process was stopped, or its I/O thread starved of the GIL) is no proof
that the head is gone.

A head that restarts (``docs/cluster.md``, "If the head dies") knows no session: the
Endpoint redoes the handshake when ZeroMQ reconnects, and sends ``greeting`` (our
registration, made afresh each time) before anything else.
"""

from __future__ import annotations

import collections
import itertools
import time
from concurrent.futures import Future
from typing import Any, Callable

import zmq

from rayipy import exceptions
from rayipy.core.liveness import SilenceClock
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import TaskSpec
from rayipy.protocol.wire import Message, Signer
from rayipy.transport.endpoint import Endpoint, Waker
from rayipy.transport.poll_set import PollSet

RECEIVE_BATCH = 1000     # messages read per turn at most, so sending is never starved


class HeadLink:
    def __init__(self, address: str, signer: Signer, process_id: bytes, waker: Waker,
                 silence_limit: float) -> None:
        self.address = address
        self.outbox: collections.deque[tuple[Kind, Any]] = collections.deque()
        self.silence = SilenceClock(silence_limit, time.monotonic())
        self._signer = signer
        self._process_id = process_id
        self._waker = waker
        self._context = zmq.Context()
        self._endpoint: Endpoint | None = None
        self._requests: dict[int, Future] = {}
        self._request_ids = itertools.count(1)
        # Our registration, made afresh for each new session (set before ``open``).
        self.greeting: Callable[[], tuple[Kind, Any]] | None = None

    # -- any thread ------------------------------------------------------------------------
    def send(self, kind: Kind, body: Any) -> None:
        self.outbox.append((kind, body))
        self._waker.wake()

    def submit(self, spec: TaskSpec) -> None:
        """Queue a task for the head; the caller wakes the I/O thread (once per batch)."""
        self.outbox.append((Kind.SUBMIT, spec))

    def request(self, name: str, args: tuple, timeout: float) -> Any:
        """Ask the head ``name(*args)`` and wait for its answer; raises what it raised."""
        request_id, fut = self._ask(name, args)
        try:
            ok, value = fut.result(timeout)
        except TimeoutError:
            raise exceptions.RayipySystemError(
                f"the head did not answer {name!r} within {timeout:g} s") from None
        finally:
            self._requests.pop(request_id, None)
        if not ok:
            raise value
        return value

    def ask(self, name: str, args: tuple[Any, ...]) -> Future[tuple[bool, Any]]:
        """Ask the head ``name(*args)`` without waiting: the future's result is ``(ok,
        value)``; its callbacks run on the I/O thread (or with ``fail_requests``)."""
        return self._ask(name, args)[1]

    def _ask(self, name: str, args: tuple[Any, ...]) -> tuple[int, Future[tuple[bool, Any]]]:
        request_id = next(self._request_ids)
        fut: Future[tuple[bool, Any]] = Future()
        self._requests[request_id] = fut
        self.send(Kind.REQUEST, (request_id, name, args))
        return request_id, fut

    # -- the I/O thread ------------------------------------------------------------------------
    def open(self, poll_set: PollSet) -> None:
        self._endpoint = Endpoint(self._context, zmq.DEALER, self._signer, self._process_id)
        self._endpoint.greeting = self.greeting
        self._endpoint.connect(self.address)
        poll_set.register(self._endpoint.socket)

    @property
    def socket(self) -> Any:
        return self._endpoint.socket if self._endpoint is not None else None

    def flush(self) -> None:
        """Send everything queued, in order."""
        endpoint = self._endpoint
        assert endpoint is not None
        endpoint.check_link()     # a broken connection holds what follows; a new one greets
        outbox = self.outbox
        specs: list[TaskSpec] = []
        while outbox:
            kind, body = outbox.popleft()
            if kind is Kind.SUBMIT:
                specs.append(body)
                continue
            if specs:
                endpoint.send(Kind.SUBMIT, (specs,))
                specs = []
            endpoint.send(kind, body)
        if specs:
            endpoint.send(Kind.SUBMIT, (specs,))

    def receive(self, handle: Callable[[Message, Any], None]) -> None:
        """Hand each message that has come to ``handle(message, source)``."""
        endpoint = self._endpoint
        assert endpoint is not None
        socket = endpoint.socket
        for _ in range(RECEIVE_BATCH):
            if not socket.poll(0, zmq.POLLIN):
                return
            _, message = endpoint.recv()
            if message is None:
                continue
            self.silence.heard(time.monotonic())
            handle(message, endpoint)

    def on_reply(self, body: tuple) -> None:
        request_id, ok, value = body
        fut = self._requests.pop(request_id, None)
        if fut is not None and not fut.done():
            fut.set_result((ok, value))

    def fail_requests(self, error: BaseException) -> None:
        """The head is gone: every question waiting gets ``error``."""
        for fut in list(self._requests.values()):
            if not fut.done():
                fut.set_result((False, error))

    @property
    def reconnections(self) -> int:
        """New sessions with the head after the first (it restarted, or a blip)."""
        return self._endpoint.reconnections if self._endpoint is not None else 0

    def close(self) -> None:
        if self._endpoint is not None:
            self._endpoint.close()
        self._context.term()
