"""The data port's outgoing connections (rayipy.node.data_port.DataPort), without a cluster."""

from __future__ import annotations

import time

import zmq

from rayipy.node.client import Runtime
from rayipy.node.data_port import DataPort
from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import Signer
from rayipy.transport.stream import StreamConnection, StreamListener

SIGNER = Signer(b"k" * 32)


class Port(DataPort):
    """Just what the mixin uses of a Runtime."""

    def __init__(self) -> None:
        self.signer = SIGNER
        self._poller = zmq.Poller()
        self._data_out: dict = {}
        self._unwritten: dict = {}
        self._watched: dict = {}
        self.through_head: list = []

    def send(self, kind, body) -> None:    # a Runtime's way to the head
        self.through_head.append((kind, body))

    _watch = Runtime._watch


def test_a_closed_connection_is_let_go_before_a_new_one_is_made():
    listener = StreamListener("127.0.0.1", SIGNER)
    port = Port()
    try:
        first = port.data_out(listener.address)
        port.watch_data_out()
        fd = first.fileno()
        assert fd in port._watched
        first._fail("the peer went away")     # as a failed send marks it
        second = port.data_out(listener.address)
        assert second is not first
        assert first.sock.fileno() == -1, "the old socket must be closed, not leaked"
        assert fd not in port._watched and all(fd != s for s, _ in port._poller.sockets)
        assert port._data_out[listener.address][0] is second
    finally:
        for out, _ in port._data_out.values():
            out.close()
        listener.close()


def dead_address() -> str:
    listener = StreamListener("127.0.0.1", SIGNER)
    listener.close()    # nobody listens there now
    return listener.address


def test_what_a_failed_connection_did_not_write_goes_through_the_head():
    port = Port()
    address = dead_address()
    port.send_data(address, Kind.RESULTS, (b"worker", ["result 1", "result 2"]))
    port.send_data(address, Kind.OBJECT_VALUE, (b"object", "value", b"requester"))
    out = port._data_out[address][0]
    deadline = time.monotonic() + 10
    while not out.closed and time.monotonic() < deadline:   # refused: seen once writable
        port.watch_data_out()
        for fd, flags in port._poller.poll(100):
            if flags & zmq.POLLOUT:
                out.on_writable()
    port.watch_data_out()
    assert port.through_head == [(Kind.TASK_DONE, (["result 1", "result 2"],)),
                                 (Kind.OBJECT_VALUE, (b"object", "value", b"requester"))]
    assert not port._unwritten


def test_what_a_connection_has_written_is_forgotten():
    listener = StreamListener("127.0.0.1", SIGNER)
    port = Port()
    try:
        port.send_data(listener.address, Kind.RESULTS, (b"worker", ["result"]))
        out = port._data_out[listener.address][0]
        deadline = time.monotonic() + 10
        while out.wants_write() and time.monotonic() < deadline:
            port.watch_data_out()
            for fd, flags in port._poller.poll(100):
                if flags & zmq.POLLOUT:
                    out.on_writable()
        port.watch_data_out()
        assert not port._unwritten and port.through_head == []
        port.send_data(listener.address, Kind.RESULTS, (b"worker", ["another"]))
        assert not out.wants_write()       # the kernel took it at once
        out._fail("the peer went away")    # before the next look at what was written
        port.watch_data_out()
        assert port.through_head == []     # it had all been written: not sent twice
    finally:
        for out, _ in port._data_out.values():
            out.close()
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
    port.send_data(dead_address(), Kind.RESULTS, (b"worker", ["result"]))
    port.watch_data_out()
    assert port.through_head == [(Kind.TASK_DONE, (["result"],))]
