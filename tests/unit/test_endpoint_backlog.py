"""Unit tests of Endpoint's paced sending (``send_queue``): sends never wait, a large
message's pieces are signed only as ZeroMQ takes them, and everything arrives in order."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from rayipy.protocol import bulk
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import ObjectValue, Payload
from rayipy.protocol.wire import Signer
from rayipy.transport.endpoint import Endpoint

KEY = b"k" * 32


class CountingSigner(Signer):
    def __init__(self, key: bytes) -> None:
        super().__init__(key)
        self.signed = 0

    def sign(self, frames):
        self.signed += 1
        return super().sign(frames)


@pytest.fixture
def pair():
    context = zmq.Context()
    signer = CountingSigner(KEY)
    receiver = Endpoint(context, zmq.ROUTER, Signer(KEY), receive_queue=1)
    sender = Endpoint(context, zmq.DEALER, signer, b"sender", send_queue=1)
    try:
        sender.connect(receiver.bind("tcp://127.0.0.1:*"))
        yield sender, receiver, signer
    finally:
        sender.close()
        receiver.close()
        context.term()


def big_body(nbytes: int = bulk.BULK_BYTES + 3 * bulk.CHUNK_BYTES):
    array = np.arange(nbytes // 8, dtype=np.int64)
    return (b"o" * 24, ObjectValue(True, Payload(b"stream", (array,)))), array


def receive_all(sender: Endpoint, receiver: Endpoint, count: int, deadline: float = 10.0):
    """Pump the sender and read the receiver, as the I/O loops of two processes would."""
    got = []
    end = time.monotonic() + deadline
    while len(got) < count:
        assert time.monotonic() < end, f"only {len(got)} of {count} messages arrived"
        sender.pump()
        if receiver.socket.poll(10, zmq.POLLIN):
            _, message = receiver.recv()
            if message is not None:
                got.append(message)
    return got


def test_send_does_not_wait_and_signs_pieces_only_as_they_go(pair):
    sender, receiver, signer = pair
    body, array = big_body()
    pieces = -(-array.nbytes // bulk.CHUNK_BYTES) + 1
    assert sender.send(Kind.OBJECT_VALUE, body) is True      # nobody reads yet: no wait
    assert sender.backlogged
    assert signer.signed < pieces                           # the rest are not signed yet
    [message] = receive_all(sender, receiver, 1)
    assert signer.signed == pieces and not sender.backlogged
    got = np.frombuffer(message.body[1].payload.buffers[0], dtype=np.int64)
    assert np.array_equal(got, array)


def test_messages_queued_behind_a_large_one_keep_their_order(pair):
    sender, receiver, _ = pair
    body, array = big_body()
    sender.send(Kind.LOG, ("before",))
    sender.send(Kind.OBJECT_VALUE, body)
    sender.send(Kind.LOG, ("after",))
    sender.send(Kind.OBJECT_VALUE, body)
    got = receive_all(sender, receiver, 4)
    assert [m.kind for m in got] == [Kind.LOG, Kind.OBJECT_VALUE, Kind.LOG, Kind.OBJECT_VALUE]
    assert got[0].body == ("before",) and got[2].body == ("after",)
    for message in (got[1], got[3]):
        assert np.array_equal(np.frombuffer(message.body[1].payload.buffers[0], np.int64), array)


def test_an_unpaced_endpoint_hands_everything_to_zeromq_at_once():
    context = zmq.Context()
    signer = CountingSigner(KEY)
    sender = Endpoint(context, zmq.DEALER, signer, b"sender")
    try:
        sender.connect("tcp://127.0.0.1:9")                  # nobody there
        body, array = big_body()
        sender.send(Kind.OBJECT_VALUE, body)
        assert signer.signed == -(-array.nbytes // bulk.CHUNK_BYTES) + 1
        assert not sender.backlogged
    finally:
        sender.close()
        context.term()
