"""The head's loop: handlers from a table, every failure logged and counted, the loop
serving on; the scheduler's instructions carried out through one carrier per type.

A real Head on a random loopback port and real signed DEALER sockets, in this process:
no other process is started. Each message is handled by calling ``receive_one`` once
it has arrived (polled with a deadline).
"""

from __future__ import annotations

import collections
import time
import logging
from typing import Iterator, NamedTuple

import pytest
import zmq

from rayipy.core import instructions
from rayipy.core.instructions import INSTRUCTION_TYPES
from rayipy.core.message_faults import MessageFaults
from rayipy.node.head import Head
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import Registration
from rayipy.protocol.wire import PROTOCOL_VERSION, Signer
from rayipy.transport.endpoint import Endpoint

KEY = b"k" * 32
DRIVER, AGENT, WORKER = b"D" * 8, b"A" * 8, b"W" * 8
NODE = b"node-001"


@pytest.fixture
def head() -> Iterator[Head]:
    h = Head(KEY, "127.0.0.1", 0)
    yield h
    h.close()


@pytest.fixture
def connect(head: Head) -> Iterator:
    """connect(identity) -> a signed DEALER to the head; all are closed afterwards."""
    context = zmq.Context()
    endpoints: list[Endpoint] = []

    def make(identity: bytes) -> Endpoint:
        # The handshake: the head takes the HELLO, the DEALER the CHALLENGE. An identity
        # that comes back right after its connection closed may find the ROUTER still
        # tearing the old one down: libzmq refuses the new connection, and a HELLO written
        # meanwhile is lost with it; a new connection then gets through.
        deadline = time.monotonic() + 10
        while True:
            endpoint = Endpoint(context, zmq.DEALER, Signer(KEY), identity)
            endpoint.connect(head.address)
            endpoints.append(endpoint)
            if head.endpoint.socket.poll(1000, zmq.POLLIN):
                break
            assert time.monotonic() < deadline, "no HELLO came"
            endpoint.close()
            endpoints.remove(endpoint)
        head.receive_one()
        assert endpoint.socket.poll(5000, zmq.POLLIN), "no CHALLENGE came"
        endpoint.recv()
        assert endpoint.ready
        return endpoint

    yield make
    for endpoint in endpoints:
        endpoint.close()
    context.term()


def deliver(head: Head, endpoint: Endpoint, kind: Kind, body: object) -> None:
    """Send one message and have the head handle it."""
    endpoint.send(kind, body)
    assert head.endpoint.socket.poll(5000, zmq.POLLIN), "the message did not arrive"
    head.receive_one()


def register(head: Head, endpoint: Endpoint, role: str, identity: bytes,
             info: dict | None = None) -> None:
    deliver(head, endpoint, Kind.REGISTER,
            Registration(role, identity, NODE, 1, PROTOCOL_VERSION, info or {}))
    assert identity in head.peers


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "rayipy.head" and r.levelno >= logging.ERROR]


# -- handler errors and unknown kinds ---------------------------------------------------
def test_a_key_error_inside_the_scheduler_is_logged_as_a_handler_error(head, connect, caplog,
                                                                       monkeypatch):
    driver = connect(DRIVER)
    register(head, driver, "driver", DRIVER)

    def broken(specs: list) -> list:
        raise KeyError("a record the scheduler lost")

    monkeypatch.setattr(head.scheduler, "submit", broken)
    with caplog.at_level(logging.WARNING, logger="rayipy.head"):
        deliver(head, driver, Kind.SUBMIT, ([],))
    assert head.endpoint.dropped["handler error"] == 1
    assert head.endpoint.dropped["unexpected kind"] == 0
    [record] = errors_logged(caplog)
    assert record.exc_info is not None and record.exc_info[0] is KeyError
    assert "SUBMIT" in record.getMessage()
    # The loop serves on.
    deliver(head, driver, Kind.FUNCTION, (b"fid", b"code"))
    assert head.scheduler.functions[b"fid"] == b"code"


def test_a_malformed_body_is_a_handler_error_not_an_unexpected_kind(head, connect, caplog):
    driver = connect(DRIVER)
    register(head, driver, "driver", DRIVER)
    with caplog.at_level(logging.WARNING, logger="rayipy.head"):
        deliver(head, driver, Kind.CANCEL, ("not", "four"))
    assert dict(head.endpoint.dropped) == {"handler error": 1}
    [record] = errors_logged(caplog)
    assert record.exc_info is not None and record.exc_info[0] is ValueError


def test_a_kind_the_head_does_not_handle_is_counted_and_logged_once_a_while(head, connect, caplog):
    driver = connect(DRIVER)
    register(head, driver, "driver", DRIVER)
    with caplog.at_level(logging.WARNING, logger="rayipy.head"):
        for _ in range(3):
            deliver(head, driver, Kind.EXECUTE, ([], [], {}))   # head -> worker only
    assert dict(head.endpoint.dropped) == {"unexpected kind": 3}
    logged = [r for r in caplog.records if "unexpected kind" in r.getMessage()]
    assert len(logged) == 1 and "EXECUTE" in logged[0].getMessage()


def test_unexpected_kinds_are_logged_again_after_the_quiet_interval(caplog):
    counts: collections.Counter[str] = collections.Counter()
    faults = MessageFaults(logging.getLogger("rayipy.test"), counts, quiet_seconds=10.0)
    with caplog.at_level(logging.WARNING, logger="rayipy.test"):
        for now in (0.0, 5.0, 9.9, 10.0, 15.0, 20.5):
            faults.unexpected(Kind.EXECUTE, b"peer", now)
    assert counts["unexpected kind"] == 6
    assert len(caplog.records) == 3          # at 0, 10 and 20.5


# -- decisions are the scheduler's; the head carries them out ---------------------------------
def test_a_lost_node_is_listed_dead_and_its_workers_are_forgotten(head, connect):
    agent, worker, driver = connect(AGENT), connect(WORKER), connect(DRIVER)
    register(head, agent, "agent", AGENT, {"resources": {"CPU": 1.0}, "ip": "10.0.0.9"})
    register(head, worker, "worker", WORKER)
    register(head, driver, "driver", DRIVER)
    deliver(head, agent, Kind.NODE_LEAVING, ("its node agent stopped",))
    assert set(head.peers) == {DRIVER}           # the agent, and its worker with it
    assert head.scheduler.workers == {}
    [dead] = head.queries.request_nodes(DRIVER)
    assert (dead["Alive"], dead["alive"], dead["DeathReason"], dead["Resources"]) == (
        False, False, "its node agent stopped", {"CPU": 1.0})
    assert dead["NodeManagerAddress"] == "10.0.0.9"


def test_a_driver_that_disconnects_is_no_longer_an_owner(head, connect):
    driver = connect(DRIVER)
    register(head, driver, "driver", DRIVER)
    assert DRIVER in head.scheduler.live_owners and DRIVER in head.scheduler.drivers
    assert head.request_disconnect(DRIVER) is True
    assert DRIVER not in head.scheduler.live_owners and DRIVER not in head.peers


def test_get_actor_answers_with_the_schedulers_error(head):
    with pytest.raises(ValueError, match="no live actor is named 'x' in namespace 'n'; named "
                                         "actors there now: none"):
        head.request_get_actor(DRIVER, "x", "n")


# -- one carrier per instruction --------------------------------------------------------------
def test_every_instruction_type_has_a_carrier(head):
    assert set(head.carriers) == set(INSTRUCTION_TYPES)


def test_the_instruction_set_is_every_record_the_module_defines():
    defined = {obj for obj in vars(instructions).values()
               if isinstance(obj, type) and issubclass(obj, tuple)
               and obj.__module__ == instructions.__name__}
    assert defined == set(INSTRUCTION_TYPES)


def test_an_instruction_without_a_carrier_fails_loudly(head):
    class Stray(NamedTuple):
        what: str

    with pytest.raises(KeyError):
        head.carry_out([Stray("no carrier")])


def test_a_driver_whose_connection_is_gone_is_dropped_and_told_what_it_lost_on_return(
        head, connect):
    driver = connect(DRIVER)
    register(head, driver, "driver", DRIVER)
    # Silent for an hour in Python, but its connection is up: kept.
    head.peers[DRIVER].last_heard -= 3600
    head.heartbeat(head.drivers.sessions[DRIVER].joined + 3600)
    assert DRIVER in head.peers
    # Its connection closes (it died, or outlived its grace period): unreachable, then
    # dropped once the reconnect allowance has passed.
    driver.close()
    now = head.drivers.sessions[DRIVER].joined

    def unreachable() -> bool:
        head.heartbeat(now)
        return head.drivers.state(DRIVER, now) == "disconnected"
    deadline = time.monotonic() + 5
    while not unreachable():
        assert time.monotonic() < deadline, "the closed connection was never seen"
        time.sleep(0.01)
    head.heartbeat(now + head.drivers.reconnect_s)
    assert DRIVER not in head.peers and DRIVER not in head.scheduler.drivers
    # It comes back (same identity): any message is answered with what it lost.
    back = connect(DRIVER)
    deliver(head, back, Kind.HEARTBEAT, ())
    assert back.socket.poll(5000, zmq.POLLIN)
    _, message = back.recv()
    assert message is not None and message.kind is Kind.SHUTDOWN
    assert "grace period of 300 s" in message.body[1]
    assert "0 actors killed" in message.body[1]
