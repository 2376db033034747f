"""The data port's outgoing connections (rayipy.node.data_port.DataPort), without a cluster."""

from __future__ import annotations

import select
import time

from rayipy.node.data_port import DataPort
from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import Signer
from rayipy.transport.endpoint import Waker
from rayipy.transport.poll_set import PollSet
from rayipy.transport.stream import StreamConnection, StreamListener

SIGNER = Signer(b"k" * 32)

class Port:
    """A DataPort with its dependencies made visible: what it sends through the head."""

    def __init__(self) -> None:
        self.through_head: list = []
        self.waker = Waker()
        self.poll = PollSet()
        self.port = DataPort("127.0.0.1", SIGNER, self.waker, lambda message, source: None,
                             lambda kind, body: self.through_head.append((kind, body)))
        self.port.open(self.poll)

    def send(self, address: str, kind: Kind, body: tuple) -> StreamConnection:
        self.port.send_to(address, kind, body)
        self.port.before_poll()
        return self.port.connection_to(address)

    def turn(self) -> None:
        """One turn of the I/O thread's loop, as far as the data port goes."""
        self.port.before_poll()
        self.port.after_poll(self.poll.poll(100))

    def close(self) -> None:
        self.port.close()
        self.waker.close()

def test_a_closed_connection_is_let_go_before_a_new_one_is_made():
    listener = StreamListener("127.0.0.1", SIGNER)
    port = Port()
    try:
        first = port.port.connection_to(listener.address)
        port.port.before_poll()
        fd = first.fileno()
        assert port.poll.watching(fd)
        first._fail("the peer went away")     # as a failed send marks it
        second = port.port.connection_to(listener.address)
        assert second is not first
        assert first.sock.fileno() == -1, "the old socket must be closed, not leaked"
        assert not port.poll.watching(fd) and all(fd != s for s, _ in port.poll.poller.sockets)
        assert port.port.connection_to(listener.address) is second
    finally:
        port.close()
        listener.close()

def dead_address() -> str:
    listener = StreamListener("127.0.0.1", SIGNER)
    listener.close()    # nobody listens there now
    return listener.address

def test_what_a_failed_connection_did_not_write_goes_through_the_head():
    port = Port()
    address = dead_address()
    try:
        port.port.send_to(address, Kind.RESULTS, (b"worker", ["result 1", "result 2"]))
        out = port.send(address, Kind.OBJECT_VALUE, (b"object", "value", b"requester"))
        deadline = time.monotonic() + 10
        while not out.closed and time.monotonic() < deadline:   # refused: seen once writable
            port.turn()
        port.port.before_poll()
        assert port.through_head == [(Kind.TASK_DONE, (["result 1", "result 2"],)),
                                     (Kind.OBJECT_VALUE, (b"object", "value", b"requester"))]
        assert port.port.unwritten() == 0
    finally:
        port.close()

def test_what_a_connection_has_written_is_forgotten():
    listener = StreamListener("127.0.0.1", SIGNER)
    port = Port()
    try:
        out = port.send(listener.address, Kind.RESULTS, (b"worker", ["result"]))
        accepted = []      # the listener's end sends its HELLO: the handshake can end
        deadline = time.monotonic() + 10
        while not accepted and time.monotonic() < deadline:
            for fd in select.select(listener.filenos(), [], [], 0.1)[0]:
                accepted += listener.accept(fd)
        while out.unsent() and time.monotonic() < deadline:
            port.turn()
        port.port.before_poll()
        assert port.port.unwritten() == 0 and port.through_head == []
        port.send(listener.address, Kind.RESULTS, (b"worker", ["another"]))
        assert not out.wants_write()       # the kernel took it at once
        out._fail("the peer went away")    # before the next look at what was written
        port.port.before_poll()
        assert port.through_head == []     # it had all been written: not sent twice
    finally:
        for connection in accepted:
            connection.close()
        port.close()
        listener.close()

def test_a_message_given_to_a_connection_already_closed_goes_through_the_head(monkeypatch):
    from rayipy.node import data_port
    connect = StreamConnection.connect

    def refused_at_once(address, signer):       # as connect() marks an immediate refusal
        out = connect(address, signer)
        out._fail("refused at once")
        return out

    monkeypatch.setattr(data_port.StreamConnection, "connect", staticmethod(refused_at_once))
    port = Port()
    try:
        port.port.send_to(dead_address(), Kind.RESULTS, (b"worker", ["result"]))
        port.port.before_poll()
        assert port.through_head == [(Kind.TASK_DONE, (["result"],))]
    finally:
        port.close()
