"""Fuzzing a ZeroMQ endpoint's receiving side, the head's (ROUTER) and an agent's or
driver's (DEALER), over real sockets in this process: random and mutated frames, from a
stranger and from a peer with a valid session. ``recv_raw`` drops what is bad and never
raises; the endpoint then still takes good messages."""

from __future__ import annotations

import os
import pickle
from typing import Iterator

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import (HEADER, MAGIC, NONCE_BYTES, PROTOCOL_VERSION, Session, Signer,
                                  encode, encode_unsigned, parse_wish, wish_byte)
from rayipy.transport.endpoint import Endpoint

KEY = b"k" * 32
FUZZ = settings(max_examples=150, deadline=3000,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])
frames_strategy = st.lists(st.binary(max_size=48), min_size=1, max_size=5)


class Pair:
    """A ROUTER Endpoint and a raw DEALER that has done the handshake by hand."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.router = Endpoint(self.context, zmq.ROUTER, Signer(KEY))
        address = self.router.bind("tcp://127.0.0.1:0")
        self.raw = self.context.socket(zmq.DEALER)
        self.raw.setsockopt(zmq.LINGER, 0)
        self.raw.setsockopt(zmq.IDENTITY, b"R" + os.urandom(7))
        self.raw.connect(address)
        nonce = os.urandom(NONCE_BYTES)
        self.raw.send_multipart(encode_unsigned(Kind.HELLO, nonce + wish_byte(False)))
        self.receive()
        assert self.raw.poll(5000), "no CHALLENGE"
        challenge = self.raw.recv_multipart()
        encrypt = parse_wish(challenge[2][-1:])   # the head's wish (none on loopback)
        self.session: Session = Signer(KEY).session(nonce, challenge[2][:NONCE_BYTES],
                                                    self.raw.getsockopt(zmq.IDENTITY), encrypt)
        self.send_signed(Kind.HEARTBEAT, ())
        assert self.receive()[1] is not None   # the session is the peer's now

    def send_signed(self, kind: Kind, body) -> None:
        self.raw.send_multipart([bytes(f) for f in encode(self.session.send, kind, body,
                                                          self.session.next_seq())])

    def receive(self):
        assert self.router.socket.poll(5000, zmq.POLLIN), "nothing came"
        return self.router.recv_raw()

    def close(self) -> None:
        self.raw.close(0)
        self.router.close()
        self.context.term()


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    p.close()


def still_serves(pair: Pair) -> None:
    pair.send_signed(Kind.HEARTBEAT, ("still here",))
    while True:
        _sender, message, _frames = pair.receive()
        if message is not None and message.body == ("still here",):
            return


@FUZZ
@given(frames_strategy)
def test_a_router_drops_random_frames(pair, frames):
    pair.raw.send_multipart(frames)
    pair.receive()                     # dropped, or a HELLO answered: never raises
    still_serves(pair)


@FUZZ
@given(st.integers(0, 2**16 - 1), st.binary(max_size=100),
       st.lists(st.binary(max_size=32), max_size=2))
def test_a_router_survives_signed_nonsense(pair, kind_no, data, buffers):
    header = HEADER.pack(MAGIC, PROTOCOL_VERSION, kind_no, len(buffers), pair.session.next_seq())
    rest = [header, data, *buffers]
    pair.raw.send_multipart([pair.session.send.sign(rest), *rest])
    pair.receive()
    still_serves(pair)


@FUZZ
@given(st.one_of(st.none(), st.integers(), st.binary(max_size=8),
                 st.tuples(st.integers(-2, 3), st.integers(-2, 3), st.integers(-2, 3),
                           st.lists(st.integers(-3, 2**62), max_size=3).map(tuple),
                           st.none())),
       st.lists(st.binary(max_size=16), max_size=2))
def test_a_router_survives_signed_malformed_chunks(pair, body, pieces):
    data = pickle.dumps(body, protocol=5)
    header = HEADER.pack(MAGIC, PROTOCOL_VERSION, Kind.CHUNK, len(pieces), pair.session.next_seq())
    rest = [header, data, *pieces]
    pair.raw.send_multipart([pair.session.send.sign(rest), *rest])
    pair.receive()
    still_serves(pair)


def test_regression_a_chunk_for_a_buffer_past_the_last_is_dropped(pair):
    """Found by fuzzing: a signed CHUNK naming buffer 0 of a transfer with no buffers
    raised IndexError out of ``recv_raw``, which would have ended the head's loop."""
    before = sum(pair.router.dropped.values())
    header = HEADER.pack(MAGIC, PROTOCOL_VERSION, Kind.CHUNK, 1, pair.session.next_seq())
    rest = [header, pickle.dumps((7, 0, 0, (), None)), b"piece"]
    pair.raw.send_multipart([pair.session.send.sign(rest), *rest])
    assert pair.receive()[1] is None
    assert sum(pair.router.dropped.values()) == before + 1
    still_serves(pair)


def test_regression_a_chunk_claiming_an_absurd_buffer_is_dropped(pair):
    """Found by fuzzing: a chunk announcing a buffer of 2**62 bytes raised MemoryError
    (or ValueError) from the landing buffer, out of ``recv_raw``."""
    header = HEADER.pack(MAGIC, PROTOCOL_VERSION, Kind.CHUNK, 1, pair.session.next_seq())
    rest = [header, pickle.dumps((8, 0, 0, (2**62,), None)), b"piece"]
    pair.raw.send_multipart([pair.session.send.sign(rest), *rest])
    assert pair.receive()[1] is None
    still_serves(pair)


@FUZZ
@given(frames_strategy)
def test_a_dealer_drops_random_frames_from_a_fake_head(frames):
    """An agent's or driver's socket: whoever answers at the head's address."""
    context = zmq.Context()
    fake_head = context.socket(zmq.ROUTER)
    fake_head.setsockopt(zmq.LINGER, 0)
    dealer = Endpoint(context, zmq.DEALER, Signer(KEY))
    try:
        port = fake_head.bind_to_random_port("tcp://127.0.0.1")
        dealer.connect(f"tcp://127.0.0.1:{port}")
        assert fake_head.poll(5000)
        identity, *hello = fake_head.recv_multipart()
        fake_head.send_multipart([identity, *frames])
        assert dealer.socket.poll(5000, zmq.POLLIN)
        dealer.recv_raw()
    finally:
        dealer.close()
        fake_head.close(0)
        context.term()
