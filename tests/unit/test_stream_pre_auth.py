"""Before a plain-socket peer has authenticated, only handshake-sized messages are taken:
a stranger that announces a larger one is cut off at its lengths, before any of its
bytes are read or memory is claimed for them. A real peer's first message may be large
all the same: each end proves the key first with a small signed HELLO."""

from __future__ import annotations

import os
import select
import socket
import struct

import pytest

from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import Signer
from rayipy.transport import stream
from rayipy.transport.stream import (PRE_AUTH_MESSAGE_BYTES, StreamConnection, StreamListener,
                                     pack_hello)

SIGNER = Signer(b"k" * 32)


def read_until_closed(connection: StreamConnection, rounds: int = 50) -> list:
    messages = []
    for _ in range(rounds):
        select.select([connection.fileno()], [], [], 0.05)
        messages += connection.receive()
        if connection.closed:
            break
    return messages


@pytest.mark.parametrize("lengths", [
    [24, 2**20],                 # one large frame (a landing buffer would be mapped)
    [24, 2000, 2000, 2000],      # small frames that add up past the limit
    [24, 2**39],                 # absurd, and still under MAX_MESSAGE_BYTES
], ids=["large frame", "many small frames", "absurd"])
def test_a_stranger_announcing_a_large_message_is_cut_off_at_its_lengths(lengths):
    listener = StreamListener("127.0.0.1", SIGNER)
    try:
        with socket.create_connection(stream.parse_tcp_address(listener.address)) as stranger:
            (fd,) = [fd for fd, s in listener.socks.items() if s.family == socket.AF_INET]
            assert select.select([fd], [], [], 5)[0]
            (server,) = listener.accept(fd)
            count = struct.pack(f"!I{len(lengths)}Q", len(lengths), *lengths)
            stranger.sendall(pack_hello(os.urandom(32)) + count)   # and not one byte more
            assert read_until_closed(server) == []
            assert server.closed and "before authentication" in server.error, server.error
            assert server.reader.direct_target() is None     # no buffer made for it
            assert not server.authenticated
            server.close()
    finally:
        listener.close()


def test_a_message_at_the_limit_is_read_and_checked():
    ours, theirs = socket.socketpair()
    server = StreamConnection(ours, SIGNER)
    try:
        body = b"x" * (PRE_AUTH_MESSAGE_BYTES - 24)
        frames = struct.pack("!I2Q", 2, 24, len(body)) + b"\0" * 24 + body + b"s" * 32
        theirs.sendall(pack_hello(os.urandom(32)) + frames)
        assert read_until_closed(server) == []
        assert server.closed and "bad signature" in server.error   # read, then refused
    finally:
        server.close()
        theirs.close()


def test_a_real_peers_first_message_may_be_large():
    left, right = socket.socketpair()
    a, b = StreamConnection(left, SIGNER), StreamConnection(right, SIGNER)
    try:
        big = os.urandom(4 * 2**20)
        a.send(Kind.CALL, ("first", big))
        assert a.wait_ready(5)
        got: list = []
        for _ in range(500):
            if a.wants_write():
                a.on_writable()
            select.select([b.fileno()], [], [], 0.02)
            got += b.receive()
            if got:
                break
        assert not b.closed, b.error
        assert [m.kind for m in got] == [Kind.CALL]       # the proof is not passed on
        assert got[0].body[0] == "first" and bytes(got[0].body[1]) == big
        assert b.authenticated
    finally:
        a.close()
        b.close()
