"""rayipy.node.direct.DirectInbox on local sockets (no cluster): calls in, wake-ups,
replies out, a caller that goes away."""

from __future__ import annotations

import time

import pytest

from rayipy.node.direct import DirectInbox
from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import Signer
from rayipy.transport.stream import StreamConnection

SIGNER = Signer(b"k" * 32)


@pytest.fixture
def inbox():
    box = DirectInbox(SIGNER, "127.0.0.1")
    yield box
    box.close()


def wait_for_calls(inbox: DirectInbox, count: int, caller: StreamConnection | None = None,
                   deadline: float = 5.0) -> list:
    """The calls that came, reading ``caller`` meanwhile as its I/O thread would: the
    inbox's HELLO ends the handshake, and the calls held until then leave."""
    calls: list = []
    end = time.monotonic() + deadline
    while len(calls) < count and time.monotonic() < end:
        calls += inbox.wait(50)
        if caller is not None:
            caller.receive()
            if caller.wants_write():
                caller.on_writable()
    return calls


def test_nothing_came_drain_returns_nothing_and_wait_times_out(inbox):
    assert inbox.drain() == []
    assert inbox.wait(0) == []


def test_drain_keeps_a_wakeup_pending_and_wait_clears_it(inbox):
    inbox.waker.wake()
    assert inbox.drain() == []
    assert inbox.poller.poll(0), "drain must leave the wake-up pending"
    assert inbox.wait(0) == []
    assert not inbox.poller.poll(0), "wait must clear the wake-up"


def test_calls_arrive_in_order_and_replies_go_back(inbox):
    caller = StreamConnection.connect(inbox.address, SIGNER)
    try:
        assert caller.send(Kind.CALL, (["spec-1"], {}), block=True)
        assert caller.send(Kind.CALL, (["spec-2"], {}), block=True)
        calls = wait_for_calls(inbox, 2, caller)
        assert [body for _, body in calls] == [(["spec-1"], {}), (["spec-2"], {})]
        connection = calls[0][0]
        inbox.add_reply(connection, "result-1")
        inbox.flush()
        end = time.monotonic() + 5
        replies: list = []
        while not replies and time.monotonic() < end:
            replies = list(caller.receive())
        assert [(m.kind, m.body) for m in replies] == [(Kind.CALL_DONE, (["result-1"], []))]
    finally:
        caller.close()


def test_a_caller_that_closes_is_forgotten(inbox):
    caller = StreamConnection.connect(inbox.address, SIGNER)
    caller.send(Kind.CALL, (["spec"], {}), block=True)
    assert len(wait_for_calls(inbox, 1, caller)) == 1
    caller.close()
    end = time.monotonic() + 5
    while inbox.callers and time.monotonic() < end:
        inbox.wait(50)
    assert inbox.callers == {}
