"""Fuzzed frames at a live head and a live worker's direct inbox (Hypothesis, bounded),
unsigned and signed with a valid session; afterwards the cluster still runs a task and
an actor call."""

from __future__ import annotations

import os
import socket

import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rayipy
from rayipy import session
from rayipy.core.object_ref import current_runtime
from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import (HEADER, MAGIC, NONCE_BYTES, PROTOCOL_VERSION, Signer,
                                  encode_unsigned, parse_wish, wish_byte)
from rayipy.transport import stream
from rayipy.transport.stream import pack_hello, parse_tcp_address

LIVE = settings(max_examples=60, deadline=5000,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])
frames_strategy = st.lists(st.binary(max_size=64), min_size=1, max_size=5)
signed_parts = st.tuples(st.integers(0, 120), st.binary(max_size=120),
                         st.lists(st.binary(max_size=32), max_size=2))


@rayipy.remote
def add(a, b):
    return a + b


@rayipy.remote
class Echo:
    def echo(self, value):
        return value


def still_serves(actor) -> None:
    assert rayipy.get(add.remote(1, 2), timeout=30) == 3
    assert rayipy.get(actor.echo.remote("ok"), timeout=30) == "ok"


@LIVE
@given(st.lists(st.one_of(frames_strategy.map(lambda f: ("raw", f)),
                          signed_parts.map(lambda p: ("signed", p))), min_size=1, max_size=20))
def _fuzz_head(address: str, key: bytes, batch) -> None:
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, b"F" + os.urandom(7))
    sock.connect(address)
    try:
        nonce = os.urandom(NONCE_BYTES)
        sock.send_multipart(encode_unsigned(Kind.HELLO, nonce + wish_byte(False)))
        assert sock.poll(5000), "the head did not answer HELLO"
        challenge = sock.recv_multipart()
        link = Signer(key).session(nonce, challenge[2][:NONCE_BYTES],
                                   sock.getsockopt(zmq.IDENTITY),
                                   parse_wish(challenge[2][-1:]))
        for what, item in batch:
            if what == "raw":
                sock.send_multipart(item)
            else:
                kind_no, data, buffers = item
                header = HEADER.pack(MAGIC, PROTOCOL_VERSION, kind_no, len(buffers),
                                     link.next_seq())
                rest = [header, data, *buffers]
                sock.send_multipart([link.send.sign(rest), *rest])
    finally:
        sock.close(0)
        context.term()


def test_fuzzed_frames_at_the_head(cluster):
    actor = Echo.remote()
    still_serves(actor)
    _fuzz_head("tcp://" + session._context.address, session._cluster.key)
    still_serves(actor)


def test_fuzzed_streams_at_a_worker_inbox(cluster):
    actor = Echo.remote()
    still_serves(actor)
    address = [w for w in current_runtime().request("workers") if w["actor"]][-1]["address"]
    key = session._cluster.key

    @LIVE
    @given(st.binary(max_size=300), st.booleans(), signed_parts)
    def fuzz(data: bytes, with_session: bool, parts) -> None:
        try:
            send(data, with_session, parts)
        except OSError:
            pass   # closed or refused by the worker (bad message, or past its failure rate)

    def send(data: bytes, with_session: bool, parts) -> None:
        with socket.create_connection(parse_tcp_address(address), timeout=5) as sock:
            nonce = os.urandom(32)
            sock.sendall(pack_hello(nonce))
            if with_session:
                record = b""
                while len(record) < stream.HELLO.size:
                    chunk = sock.recv(stream.HELLO.size - len(record))
                    if not chunk:
                        return
                    record += chunk
                _magic, _version, theirs, wish = stream.HELLO.unpack(record)
                link = Signer(key).session(nonce, theirs, encrypt=bool(wish))
                kind_no, body, buffers = parts
                header = HEADER.pack(MAGIC, PROTOCOL_VERSION, kind_no, len(buffers),
                                     link.next_seq())
                frames = [header, body, *buffers]
                prefix = (len(frames).to_bytes(4, "big")
                          + b"".join(len(f).to_bytes(8, "big") for f in frames))
                mac = link.send.start()
                mac.update(prefix)
                for f in frames:
                    mac.update(f)
                sock.sendall(prefix + b"".join(frames) + mac.digest())
            sock.sendall(data)

    fuzz()
    still_serves(actor)
