"""The head against hostile or broken peers: unsigned, tampered, garbage and wrong-key frames."""

from __future__ import annotations

import os

import pytest
import zmq

import rayipy
from rayipy import session
from rayipy.core.object_ref import current_runtime
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import ObjectValue, Payload, Registration
from rayipy.protocol.wire import PROTOCOL_VERSION, Signer, decode, encode

from helpers import wait_until


@rayipy.remote
def ping():
    return "pong"


@pytest.fixture
def raw_socket(cluster):
    """A DEALER connected to the head, outside of rayipy's own runtime."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, b"X" + os.urandom(7))
    sock.connect("tcp://" + session._context.address)
    try:
        yield sock
    finally:
        sock.close(0)
        context.term()


def dropped() -> int:
    return sum(rayipy.cluster_status()["dropped_messages"].values())


def registration(version: int = PROTOCOL_VERSION) -> Registration:
    return Registration("driver", b"X" * 8, b"", os.getpid(), version, {})


def test_bad_frames_are_dropped_and_counted(raw_socket):
    key = session._cluster.key
    before = dropped()
    good = encode(Signer(key), Kind.HEARTBEAT, ())
    raw_socket.send_multipart([b"garbage"])                               # too short
    raw_socket.send_multipart([b"x" * 32, b"not a header", b"body"])      # bad header
    raw_socket.send_multipart([b"\0" * 32, *good[1:]])                    # unsigned
    tampered_body = encode(Signer(key), Kind.SUBMIT, ([],))
    tampered_body[2] = tampered_body[2][:-1] + b"."
    raw_socket.send_multipart(tampered_body)                              # body changed
    wrong_key = encode(Signer(os.urandom(32)), Kind.SUBMIT, ([],))
    raw_socket.send_multipart(wrong_key)                                  # another key
    wait_until(lambda: dropped() >= before + 5, timeout=10,
               message="the head did not count the bad messages")
    assert rayipy.get(ping.remote(), timeout=30) == "pong"


def test_tampered_buffer_frame_is_rejected(raw_socket):
    key = session._cluster.key
    before = dropped()
    value = Payload(b"", (bytearray(b"z" * 100_000),))
    frames = encode(Signer(key), Kind.OBJECT_VALUE, (b"o" * 18, ObjectValue(True, value), b"X" * 8))
    assert len(frames) == 4  # the payload's buffer travels as its own frame
    frames[3] = b"y" * 100_000
    raw_socket.send_multipart(frames)
    wait_until(lambda: dropped() >= before + 1, timeout=10)
    assert rayipy.get(ping.remote(), timeout=30) == "pong"


def test_wrong_key_registration_is_answered_at_once(raw_socket):
    raw_socket.send_multipart(encode(Signer(os.urandom(32)), Kind.REGISTER, registration()))
    assert raw_socket.poll(5000), "no answer to a registration with the wrong key"
    answer = decode(Signer(b"k" * 32), raw_socket.recv_multipart())
    assert answer.kind is Kind.AUTH_FAILED


def test_other_protocol_version_is_refused(raw_socket):
    key = session._cluster.key
    raw_socket.send_multipart(encode(Signer(key), Kind.REGISTER, registration(version=999)))
    assert raw_socket.poll(5000)
    answer = decode(Signer(key), raw_socket.recv_multipart())
    assert answer.kind is Kind.REFUSED
    assert "protocol version mismatch" in answer.body[0]


def test_unregistered_sender_is_ignored(raw_socket):
    key = session._cluster.key
    before = dropped()
    raw_socket.send_multipart(encode(Signer(key), Kind.SUBMIT, ([],)))
    wait_until(lambda: dropped() >= before + 1, timeout=10)
    assert rayipy.get(ping.remote(), timeout=30) == "pong"


# -- a worker's direct inbox (plain TCP, rayipy/transport/stream.py) ---------------------

@rayipy.remote
class Echo:
    def echo(self, value):
        return value


def _direct_address_of_an_actor() -> tuple:
    actor = Echo.remote()
    assert rayipy.get(actor.echo.remote(1)) == 1
    runtime = current_runtime()
    workers = [w for w in runtime.request("workers") if w["actor"]]
    return actor, workers[-1]["address"]


def _closed_by_worker(sock, deadline: float = 10.0) -> bool:
    """True once the worker closes our connection (EOF), read with a deadline."""
    sock.settimeout(deadline)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


@pytest.mark.parametrize("what", ["garbage", "wrong key", "tampered", "absurd lengths"])
def test_the_direct_inbox_closes_a_connection_that_sends_a_bad_message(cluster, what):
    import socket as socketlib
    import struct

    from rayipy.protocol.messages import TaskSpec
    from rayipy.transport.stream import pack_message, parse_tcp_address

    actor, address = _direct_address_of_an_actor()
    key = current_runtime().signer
    spec = TaskSpec(b"X" * 16, b"", "evil", b"", (), 1, (), 0, 0, b"", "echo", ())
    good = b"".join(bytes(memoryview(p).cast("B")) for p in pack_message(key, Kind.CALL, ([spec], [])))
    data = {
        "garbage": b"GET / HTTP/1.0\r\n\r\n" + b"\0" * 64,
        "wrong key": b"".join(bytes(memoryview(p).cast("B")) for p in
                              pack_message(Signer(b"w" * 32), Kind.CALL, ([spec], []))),
        "tampered": good[:-40] + bytes([good[-40] ^ 1]) + good[-39:],
        "absurd lengths": struct.pack("!I2Q", 2, 12, 1 << 62),
    }[what]
    with socketlib.create_connection(parse_tcp_address(address), timeout=10) as sock:
        sock.sendall(data)
        assert _closed_by_worker(sock)
    # Nothing ran, and the actor still serves its real callers.
    assert rayipy.get(actor.echo.remote("still here"), timeout=10) == "still here"


@rayipy.remote
def two_megabytes():
    return b"x" * (2 * 2**20)   # a large result: it comes to the driver's data port


@pytest.mark.parametrize("what", ["garbage", "wrong key"])
def test_a_data_port_closes_a_connection_that_sends_a_bad_message(cluster, what):
    import socket as socketlib

    from rayipy.transport.stream import pack_message, parse_tcp_address

    runtime = current_runtime()
    value = ObjectValue(True, Payload(b"forged", ()))
    data = {
        "garbage": b"\xff" * 64,
        "wrong key": b"".join(bytes(memoryview(p).cast("B")) for p in pack_message(
            Signer(b"w" * 32), Kind.OBJECT_VALUE, (b"o" * 18, value, b"X" * 8))),
    }[what]
    with socketlib.create_connection(parse_tcp_address(runtime.info["data"]), timeout=10) as sock:
        sock.sendall(data)
        assert _closed_by_worker(sock)
    assert len(rayipy.get(two_megabytes.remote(), timeout=30)) == 2 * 2**20
