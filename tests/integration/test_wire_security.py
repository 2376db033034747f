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
from rayipy.protocol.wire import (NONCE_BYTES, PROTOCOL_VERSION, Session, Signer, decode,
                                  encode, encode_unsigned)

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


def handshake(sock, key: bytes, record: list | None = None) -> Session:
    """Play a DEALER's side of the handshake by hand (HELLO, the head's CHALLENGE)."""
    nonce = os.urandom(NONCE_BYTES)
    hello = encode_unsigned(Kind.HELLO, nonce + b"\0")   # no wish to encrypt
    sock.send_multipart(hello)
    if record is not None:
        record.append(hello)
    assert sock.poll(5000), "no CHALLENGE"
    challenge = sock.recv_multipart()
    assert decode(Signer(key), challenge).kind is Kind.CHALLENGE
    return Signer(key).session(nonce, challenge[2][:NONCE_BYTES], sock.getsockopt(zmq.IDENTITY),
                               encrypt=challenge[2][-1:] == b"\1")


def sign(session: Session, kind: Kind, body) -> list:
    return [bytes(f) for f in encode(session.send, kind, body, session.next_seq())]


def answer(sock, session: Session | None = None):
    assert sock.poll(5000), "no answer"
    frames = sock.recv_multipart()
    if session is None:
        return decode(Signer(b"k" * 32), frames)   # unsigned answers only
    return decode(session.receive, frames, session=session)


def registration(version: int = PROTOCOL_VERSION) -> Registration:
    return Registration("driver", b"X" * 8, b"", os.getpid(), version, {})


def test_bad_frames_are_dropped_and_counted(raw_socket):
    key = session._cluster.key
    link = handshake(raw_socket, key)
    before = dropped()
    good = sign(link, Kind.HEARTBEAT, ())
    raw_socket.send_multipart([b"garbage"])                               # too short
    raw_socket.send_multipart([b"x" * 32, b"not a header", b"body"])      # bad header
    raw_socket.send_multipart([b"\0" * 32, *good[1:]])                    # unsigned
    tampered_body = sign(link, Kind.SUBMIT, ([],))
    tampered_body[2] = tampered_body[2][:-1] + b"."
    raw_socket.send_multipart(tampered_body)                              # body changed
    wrong_key = encode(Signer(os.urandom(32)), Kind.SUBMIT, ([],), 99)
    raw_socket.send_multipart(wrong_key)                                  # another key
    wait_until(lambda: dropped() >= before + 5, timeout=10,
               message="the head did not count the bad messages")
    assert rayipy.get(ping.remote(), timeout=30) == "pong"


def test_tampered_buffer_frame_is_rejected(raw_socket):
    key = session._cluster.key
    link = handshake(raw_socket, key)
    before = dropped()
    value = Payload(b"", (bytearray(b"z" * 100_000),))
    frames = sign(link, Kind.OBJECT_VALUE, (b"o" * 18, ObjectValue(True, value), b"X" * 8))
    assert len(frames) == 4  # the payload's buffer travels as its own frame
    frames[3] = b"y" * 100_000
    raw_socket.send_multipart(frames)
    wait_until(lambda: dropped() >= before + 1, timeout=10)
    assert rayipy.get(ping.remote(), timeout=30) == "pong"


def test_wrong_key_registration_is_answered_at_once(raw_socket):
    wrong = handshake(raw_socket, os.urandom(32))
    raw_socket.send_multipart(sign(wrong, Kind.REGISTER, registration()))
    assert answer(raw_socket).kind is Kind.AUTH_FAILED


def test_wrong_key_registrations_are_answered_at_a_bounded_rate(raw_socket):
    wrong = handshake(raw_socket, os.urandom(32))
    for _ in range(50):
        raw_socket.send_multipart(sign(wrong, Kind.REGISTER, registration()))
    answers = 0
    while raw_socket.poll(1000):
        raw_socket.recv_multipart()
        answers += 1
    assert 1 <= answers <= 10, f"{answers} answers to 50 wrong-key registrations in a second"


def test_other_protocol_version_is_refused(raw_socket):
    key = session._cluster.key
    link = handshake(raw_socket, key)
    raw_socket.send_multipart(sign(link, Kind.REGISTER, registration(version=999)))
    refused = answer(raw_socket, link)
    assert refused.kind is Kind.REFUSED
    assert "protocol version mismatch" in refused.body[0]


def test_unregistered_sender_is_ignored(raw_socket):
    key = session._cluster.key
    link = handshake(raw_socket, key)
    before = dropped()
    raw_socket.send_multipart(sign(link, Kind.SUBMIT, ([],)))
    wait_until(lambda: dropped() >= before + 1, timeout=10)
    assert rayipy.get(ping.remote(), timeout=30) == "pong"


# -- replay on ZeroMQ: what a driver sent, recorded and sent again -------------------------

@pytest.fixture
def recorded(cluster, monkeypatch):
    """A client with the key registers and sends one LOG for this driver (the head
    forwards it here); returns (its socket, its session, everything it sent, the lines
    this driver has received). The marker must arrive once, whatever is replayed."""
    runtime = current_runtime()
    received: list = []
    monkeypatch.setattr(runtime.task_logs, "printer",
                        lambda lines, label: received.extend(text for _, text, *_ in lines))
    context = zmq.Context()
    socks = []

    def dealer(identity: bytes):
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, identity)
        sock.connect("tcp://" + session._context.address)
        socks.append(sock)
        return sock

    sent: list = []
    sock = dealer(b"R" + os.urandom(7))
    link = handshake(sock, session._cluster.key, sent)
    sent.append(sign(link, Kind.REGISTER, Registration("driver", sock.getsockopt(zmq.IDENTITY),
                                                        b"", os.getpid(), PROTOCOL_VERSION, {})))
    sock.send_multipart(sent[-1])
    assert answer(sock, link).kind is Kind.WELCOME
    sent.append(sign(link, Kind.LOG, (runtime.process_id, [("stdout", "marker\n", "recorded", b"")],
                                      "recorded")))
    sock.send_multipart(sent[-1])
    wait_until(lambda: received == ["marker\n"], timeout=10, message="the LOG did not come")
    try:
        yield sock, link, sent, received, dealer
    finally:
        for s in socks:
            s.close(0)
        context.term()


def test_a_recording_replayed_on_a_new_connection_does_nothing(recorded):
    _sock, _link, sent, received, dealer = recorded
    for identity in (b"R" + os.urandom(7), b"another"):   # its own identity frame, or another
        replay = dealer(identity)
        before = dropped()
        for frames in sent:                 # HELLO, REGISTER, LOG, as recorded
            replay.send_multipart(frames)
        wait_until(lambda: dropped() >= before + 2, timeout=10,
                   message="the replayed messages were not dropped")
    assert rayipy.get(ping.remote(), timeout=30) == "pong"
    assert received == ["marker\n"], "a replayed message ran again"


def test_a_message_replayed_on_the_same_connection_is_dropped(recorded):
    sock, _link, sent, received, _dealer = recorded
    before = rayipy.cluster_status()["dropped_messages"].get("replayed or out of order", 0)
    sock.send_multipart(sent[-1])
    wait_until(lambda: rayipy.cluster_status()["dropped_messages"].get(
        "replayed or out of order", 0) == before + 1, timeout=10)
    assert rayipy.get(ping.remote(), timeout=30) == "pong"
    assert received == ["marker\n"]


def test_a_message_of_another_session_is_dropped(recorded):
    _sock, _link, sent, received, dealer = recorded
    other = dealer(b"S" + os.urandom(7))
    handshake(other, session._cluster.key)       # a genuine session of its own
    before = dropped()
    other.send_multipart(sent[-1])               # but the recorded client's LOG
    wait_until(lambda: dropped() >= before + 1, timeout=10)
    assert rayipy.get(ping.remote(), timeout=30) == "pong"
    assert received == ["marker\n"]


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
    from rayipy.transport.stream import pack_hello, pack_message, parse_tcp_address

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
    if what != "garbage":   # past the handshake: a HELLO record of our own first
        data = pack_hello(os.urandom(32)) + data
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

    from rayipy.transport.stream import pack_hello, pack_message, parse_tcp_address

    runtime = current_runtime()
    value = ObjectValue(True, Payload(b"forged", ()))
    data = {
        "garbage": b"\xff" * 64,
        "wrong key": b"".join(bytes(memoryview(p).cast("B")) for p in pack_message(
            Signer(b"w" * 32), Kind.OBJECT_VALUE, (b"o" * 18, value, b"X" * 8))),
    }[what]
    if what != "garbage":   # past the handshake: a HELLO record of our own first
        data = pack_hello(os.urandom(32)) + data
    with socketlib.create_connection(parse_tcp_address(runtime.info["data"]), timeout=10) as sock:
        sock.sendall(data)
        assert _closed_by_worker(sock)
    assert len(rayipy.get(two_megabytes.remote(), timeout=30)) == 2 * 2**20


# -- encryption (protocol 6) ------------------------------------------------------------

def test_a_local_cluster_on_loopback_is_left_in_clear_by_default(raw_socket):
    """RAYIPY_ENCRYPT=auto (the default): the head does not ask to encrypt a peer on
    this machine, so a peer that does not ask either gets a session in clear."""
    link = handshake(raw_socket, session._cluster.key)
    assert not link.encrypted
    raw_socket.send_multipart(sign(link, Kind.HEARTBEAT, ()))
    assert rayipy.get(ping.remote(), timeout=30) == "pong"


ENCRYPTED_CLUSTER = """
import os, sys
import numpy as np
import zmq
import rayipy
from rayipy import session
from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import NONCE_BYTES, Signer, encode, encode_unsigned
sys.path.insert(0, {tests!r})
from helpers import wait_until

rayipy.init(num_cpus=2)
try:
    @rayipy.remote
    def double(x):
        return x * 2

    @rayipy.remote
    class Box:
        def __init__(self, value):
            self.value = value
        def get(self):
            return self.value

    big = np.arange(3_000_000, dtype=np.int64)          # 24 MB: data ports, pieces
    assert (rayipy.get(double.remote(big), timeout=60) == big * 2).all()
    assert rayipy.get(Box.remote("secret").get.remote(), timeout=60) == "secret"
    ref = rayipy.put(big)
    assert (rayipy.get(double.remote(ref), timeout=60) == big * 2).all()

    # The head asks to encrypt even a peer on loopback, and a tampered ciphertext is
    # dropped and counted as a bad signature.
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, os.urandom(8))
    sock.connect("tcp://" + session._context.address)
    nonce = os.urandom(NONCE_BYTES)
    sock.send_multipart(encode_unsigned(Kind.HELLO, nonce + b"\\0"))
    assert sock.poll(5000)
    challenge = sock.recv_multipart()[2]
    assert challenge[-1:] == b"\\1", "the head did not ask for encryption"
    key = session._cluster.key
    link = Signer(key).session(nonce, challenge[:NONCE_BYTES], sock.getsockopt(zmq.IDENTITY),
                               encrypt=True)
    def bad_signatures():
        return rayipy.cluster_status()["dropped_messages"].get("bad signature", 0)
    before = bad_signatures()
    seq = link.next_seq()
    frames = [bytes(f) for f in encode(link.send, Kind.SUBMIT, ([],), seq, link.seal)]
    frames[2] = bytes([frames[2][0] ^ 1]) + frames[2][1:]
    sock.send_multipart(frames)
    wait_until(lambda: bad_signatures() >= before + 1, timeout=10)
    sock.close(0)
    context.term()
    assert rayipy.get(double.remote(21), timeout=30) == 42
    print("ENCRYPTED CLUSTER OK")
finally:
    rayipy.shutdown()
"""


def test_always_encrypts_a_local_cluster_and_it_still_works(tmp_path):
    """RAYIPY_ENCRYPT=always, in a driver of its own (the setting reaches the head,
    agent and workers through their environment): tasks, actors and large values work
    on encrypted sessions, the head asks for encryption on loopback, and a tampered
    ciphertext is dropped like a bad MAC."""
    import subprocess
    import sys
    from pathlib import Path

    tests = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, RAYIPY_ENCRYPT="always", RAYIPY_HOME=str(tmp_path))
    env.pop("RAYIPY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-c", ENCRYPTED_CLUSTER.format(tests=tests)],
                          env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0 and "ENCRYPTED CLUSTER OK" in done.stdout, \
        done.stdout + done.stderr


def test_a_bad_setting_fails_before_a_cluster_starts(monkeypatch):
    from rayipy.node.launch import LocalCluster
    monkeypatch.setenv("RAYIPY_ENCRYPT", "sometimes")
    with pytest.raises(ValueError, match="RAYIPY_ENCRYPT='sometimes'"):
        LocalCluster.__new__(LocalCluster).start()
