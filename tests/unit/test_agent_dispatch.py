"""The node agent's dispatch: a table of handlers; a malformed message, even correctly
signed, is logged and counted, and the agent keeps serving.

The agent runs its real loop in a thread of this process against a ROUTER socket that
stands in for the head; ``spawn`` is replaced by a recorder, so no process is started.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Iterator

import pytest
import zmq

from rayipy.node.agent import Agent
from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import Signer
from rayipy.transport.endpoint import Endpoint

KEY = b"k" * 32


class FakeHead:
    """A signed ROUTER the agent connects to, with a deadline on every receive."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.endpoint = Endpoint(self.context, zmq.ROUTER, Signer(KEY))
        self.address = self.endpoint.bind("tcp://127.0.0.1:0")

    def receive(self, kind: Kind, timeout_ms: int = 5000) -> tuple[bytes, Any]:
        """The next message of ``kind`` (heartbeats and others are skipped)."""
        while True:
            assert self.endpoint.socket.poll(timeout_ms, zmq.POLLIN), f"no {kind.name} came"
            sender, message = self.endpoint.recv()
            if message is not None and message.kind is kind:
                assert sender is not None
                return sender, message.body

    def close(self) -> None:
        self.endpoint.close()
        self.context.term()


class CountingAgent(Agent):
    """An agent whose ``spawn`` counts instead of starting a worker process."""

    def __init__(self, head_address: str) -> None:
        super().__init__(head_address, KEY, 0, {}, b"node-001", "127.0.0.1", None)
        self.spawned = 0
        self.spawned_one = threading.Event()

    def spawn(self) -> None:
        self.spawned += 1
        self.spawned_one.set()


@pytest.fixture
def agent() -> Iterator[CountingAgent]:
    """An agent that is not serving (its socket connects to nothing)."""
    a = CountingAgent("tcp://127.0.0.1:9")
    yield a
    a.endpoint.close()
    a.context.term()


@pytest.mark.parametrize("kind, body, error", [
    (Kind.SPAWN_WORKER, "x", ValueError),               # not a 1-tuple
    (Kind.SPAWN_WORKER, ("two",), ValueError),          # not a count
    (Kind.SPAWN_WORKER, (-1,), ValueError),
    (Kind.RETIRE_WORKER, (b"worker",), ValueError),     # a field missing
    (Kind.RETIRE_WORKER, ([b"unhashable"], True), TypeError),
    (Kind.REFUSED, (), IndexError),
])
def test_a_malformed_body_is_logged_with_its_traceback_and_counted(agent, caplog, kind, body,
                                                                   error):
    with caplog.at_level(logging.ERROR, logger="rayipy.agent"):
        agent.handle(kind, body)
    assert dict(agent.endpoint.dropped) == {"handler error": 1}
    [record] = caplog.records
    assert record.exc_info is not None and record.exc_info[0] is error
    assert kind.name in record.getMessage()
    assert agent.running and agent.spawned == 0
    agent.handle(Kind.SPAWN_WORKER, (2,))
    assert agent.spawned == 2


def test_a_kind_the_agent_does_not_handle_is_counted_and_dropped(agent, caplog):
    with caplog.at_level(logging.WARNING, logger="rayipy.agent"):
        agent.handle(Kind.EXECUTE, ([], [], {}))
        agent.handle(Kind.SUBMIT, ([],))
    assert dict(agent.endpoint.dropped) == {"unexpected kind": 2}
    assert len(caplog.records) == 1 and agent.running


def test_what_the_head_sends_every_agent_is_handled(agent):
    for kind, body in [(Kind.HEARTBEAT, ()), (Kind.WELCOME, ("c", 1, {})),
                       (Kind.RETIRE_WORKER, (b"gone already", False))]:
        agent.handle(kind, body)
    assert dict(agent.endpoint.dropped) == {} and agent.running
    agent.handle(Kind.SHUTDOWN, ("bye",))
    assert not agent.running


def test_the_serving_agent_survives_a_signed_malformed_message_and_still_spawns():
    head = FakeHead()
    agent = CountingAgent(head.address)
    loop = threading.Thread(target=agent.serve, daemon=True)
    loop.start()
    try:
        sender, registration = head.receive(Kind.REGISTER)
        assert registration.role == "agent"
        head.endpoint.send(Kind.SPAWN_WORKER, "x", sender)            # signed, malformed
        head.endpoint.send(Kind.RETIRE_WORKER, (b"w",), sender)
        head.endpoint.send(Kind.SPAWN_WORKER, (1,), sender)
        assert agent.spawned_one.wait(5), "the agent stopped serving"
        head.endpoint.send(Kind.SHUTDOWN, ("the test is over",), sender)
        loop.join(5)
        assert not loop.is_alive()
        assert agent.endpoint.dropped["handler error"] == 2 and agent.spawned == 1
        assert agent.store is not None and not os.path.exists(agent.store.arena.path)
    finally:
        if loop.is_alive():
            agent.running = False
            loop.join(5)
        head.close()


def test_an_agent_that_does_not_serve_makes_no_object_store(agent):
    # Its store (a file in /dev/shm, sockets, a thread) comes with serve, which removes it.
    assert agent.store is None
    agent.handle(Kind.FREE_OBJECTS, ([b"x" * 18],))     # nothing to tell: dropped quietly
    assert dict(agent.endpoint.dropped) == {}
