"""The data port's outgoing connections (rayipy.node.data_port.DataPort), without a cluster."""

from __future__ import annotations

import zmq

from rayipy.node.client import Runtime
from rayipy.node.data_port import DataPort
from rayipy.protocol.wire import Signer
from rayipy.transport.stream import StreamListener

SIGNER = Signer(b"k" * 32)


class Port(DataPort):
    """Just what the mixin uses of a Runtime."""

    def __init__(self) -> None:
        self.signer = SIGNER
        self._poller = zmq.Poller()
        self._data_out: dict = {}
        self._watched: dict = {}

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
