"""Unit tests of rayipy.transport.stream: signed messages on a plain byte stream.

The reader is pure (bytes in, frame lists out); the connection tests use a local socket
pair, no cluster.
"""

from __future__ import annotations

import select
import socket
import struct

import numpy as np
import pytest

from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import ObjectValue, Payload
from rayipy.protocol.wire import BadMessage, Signer, decode
from rayipy.transport import stream
from rayipy.transport.stream import StreamConnection, StreamReader, pack_message

KEY = b"k" * 32
SIGNER = Signer(KEY)


def wire_bytes(kind, body, signer=SIGNER) -> bytes:
    return b"".join(bytes(memoryview(p).cast("B")) for p in pack_message(signer, kind, body))


def read_all(reader: StreamReader, data: bytes, step: int) -> list:
    """Feed ``data`` in pieces of ``step`` bytes, filling large frames in place as the
    connection does."""
    view = memoryview(data)
    while view:
        target = reader.direct_target()
        if target is not None:
            n = min(step, target.nbytes, view.nbytes)
            target[:n] = view[:n]
            reader.filled(n)
        else:
            n = min(step, view.nbytes)
            reader.feed(view[:n])
        view = view[n:]
    messages = []
    for frames, signed in reader.take():
        assert signed
        messages.append(decode(SIGNER, frames, signature_checked=True))
    return messages


@pytest.mark.parametrize("step", [1, 7, 4096, 10**9])
def test_messages_survive_any_cutting_of_the_stream(step):
    array = np.arange(200_000, dtype=np.int64)          # a frame larger than SMALL_FRAME_BYTES
    big = (b"oid", ObjectValue(True, Payload(b"p", (array, b"small"))))
    first, last = wire_bytes(Kind.CALL, ("first", 1)), wire_bytes(Kind.CALL, ("last", 3))
    if step == 1:   # byte by byte: small messages only, to stay quick
        messages = read_all(StreamReader(SIGNER), first + last, step)
        assert [m.body for m in messages] == [("first", 1), ("last", 3)]
        return
    messages = read_all(StreamReader(SIGNER), first + wire_bytes(Kind.OBJECT_VALUE, big) + last, step)
    assert [m.kind for m in messages] == [Kind.CALL, Kind.OBJECT_VALUE, Kind.CALL]
    assert messages[0].body == ("first", 1) and messages[2].body == ("last", 3)
    received = messages[1].body[1].payload.buffers[0]
    assert np.array_equal(np.frombuffer(received, dtype=np.int64), array)


def test_a_changed_byte_anywhere_fails_the_signature():
    data = bytearray(wire_bytes(Kind.CALL, ("call", b"x" * 100)))
    for position in (len(data) - 40, len(data) - 1, 40):   # body, signature, header
        forged = bytearray(data)
        forged[position] ^= 1
        reader = StreamReader(SIGNER)
        reader.feed(bytes(forged))
        ((frames, signed),) = reader.take()
        assert not signed


@pytest.mark.parametrize("body", [
    (b"big", np.arange(50_000)),            # a 400 KB out-of-band buffer
    ("call", list(range(150_000))),         # a pickle frame of more than 64 KiB
], ids=["buffer", "pickle"])
def test_a_changed_byte_in_a_frame_signed_by_its_digest_fails_the_signature(body):
    data = wire_bytes(Kind.CALL, body)
    assert len(data) > 4 * stream.SMALL_FRAME_BYTES
    assert signatures(data) == [True]
    frame_end = len(data) - stream.SIGNATURE_BYTES
    for position in (frame_end - 300_000, frame_end - 1):   # inside the large frame
        forged = bytearray(data)
        forged[position] ^= 1
        assert signatures(bytes(forged)) == [False]


def signatures(data: bytes) -> list[bool]:
    """Whether each message in ``data`` checks, read as the connection reads."""
    reader, view = StreamReader(SIGNER), memoryview(data)
    while view:
        target = reader.direct_target()
        if target is None:
            reader.feed(view[:stream.READ_BYTES])
            view = view[stream.READ_BYTES:]
        else:
            n = min(target.nbytes, view.nbytes)
            target[:n] = view[:n]
            reader.filled(n)
            view = view[n:]
    return [signed for _, signed in reader.take()]


def test_a_message_signed_with_another_key_is_refused():
    reader = StreamReader(SIGNER)
    reader.feed(wire_bytes(Kind.CALL, ("call",), signer=Signer(b"w" * 32)))
    ((frames, signed),) = reader.take()
    assert not signed
    with pytest.raises(BadMessage, match="bad signature"):   # as the ZeroMQ path says it
        decode(SIGNER, frames)


@pytest.mark.parametrize("prefix", [
    struct.pack("!I", 0),                                   # no frames at all
    struct.pack("!I", 1) + struct.pack("!Q", 3),            # too few to be a message
    struct.pack("!I", stream.MAX_FRAMES + 1),               # absurdly many
    struct.pack("!I", 2) + struct.pack("!2Q", 12, 1 << 62),  # absurdly large
])
def test_impossible_framing_is_refused_before_any_memory_is_claimed(prefix):
    reader = StreamReader(SIGNER)
    with pytest.raises(BadMessage):
        reader.feed(prefix + b"\0" * 64)


@pytest.fixture
def pair():
    left, right = socket.socketpair()
    a, b = StreamConnection(left, SIGNER), StreamConnection(right, SIGNER)
    yield a, b
    a.close()
    b.close()


def receive_until(connection: StreamConnection, count: int, writer=None) -> list:
    """Read until ``count`` messages came, letting ``writer`` write what waits meanwhile."""
    messages = []
    for _ in range(10_000):
        if writer is not None and writer.wants_write():
            writer.on_writable()
        select.select([connection.fileno()], [], [], 0.05)
        messages += connection.receive()
        if len(messages) >= count or connection.closed:
            return messages
    raise AssertionError(f"only {len(messages)} of {count} messages came")


def test_a_send_the_kernel_cannot_take_at_once_waits_and_leaves_in_order(pair):
    a, b = pair
    array = np.arange(4_000_000, dtype=np.int64)     # 32 MB: far more than a socket buffer
    assert a.send(Kind.OBJECT_VALUE, (b"big", array))
    assert a.wants_write(), "the rest should wait in the connection, not block the sender"
    assert a.send(Kind.CALL, ("after",))
    messages = receive_until(b, 2, writer=a)
    assert np.array_equal(messages[0].body[1], array)
    assert messages[1].body == ("after",)
    assert not a.wants_write()


def test_a_bad_message_closes_the_connection(pair):
    a, b = pair
    a.sock.sendall(wire_bytes(Kind.CALL, ("forged",), signer=Signer(b"w" * 32)))
    assert receive_until(b, 1) == []
    assert b.closed and "bad signature" in b.error


def test_the_peer_closing_is_seen(pair):
    a, b = pair
    a.send(Kind.CALL, ("last words",))
    a.sock.shutdown(socket.SHUT_WR)
    assert [m.body for m in receive_until(b, 2)] == [("last words",)]
    assert b.closed and "closed by the peer" in b.error
    assert not b.send(Kind.CALL, ("too late",))


def test_connecting_to_a_dead_address_fails_without_blocking():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]     # bound but not listening: connections are refused
        connection = StreamConnection.connect(f"tcp://127.0.0.1:{port}", SIGNER)
        connection.send(Kind.CALL, ("anyone?",))
        select.select([], [connection.fileno()], [], 5)
        connection.on_writable()
        assert connection.closed and "cannot connect" in connection.error
        connection.close()


def test_a_large_blocking_send_is_signed_piece_by_piece_and_checks(pair):
    """The worker's way of answering: it waits until all is written, and signs as it goes."""
    import threading

    a, b = pair
    array = np.random.default_rng(0).integers(0, 2**62, 3_000_000)   # 24 MB
    sender = threading.Thread(target=a.send, args=(Kind.CALL_DONE, (b"r", array)),
                              kwargs={"block": True})
    sender.start()
    try:
        (message,) = receive_until(b, 1)
    finally:
        sender.join(10)
    assert message.kind is Kind.CALL_DONE and np.array_equal(message.body[1], array)
    assert not a.wants_write() and not a.closed


def test_a_forged_piece_of_a_large_message_is_caught(pair):
    a, b = pair
    data = bytearray(wire_bytes(Kind.OBJECT_VALUE, (b"big", np.zeros(1_000_000))))
    data[len(data) // 2] ^= 1            # inside the 8 MB buffer
    import threading

    def send_all():
        try:
            a.sock.sendall(bytes(data))
        except OSError:
            pass    # the receiver may close before the last bytes are written

    sender = threading.Thread(target=send_all)
    sender.start()
    try:
        assert receive_until(b, 1) == []
    finally:
        sender.join(10)
    assert b.closed and "bad signature" in b.error


def exchange(listener, connection):
    """A call and its answer across a listener's accepted connection."""
    if connection.wants_write():
        select.select([], [connection.fileno()], [], 5)
        connection.on_writable()
    connection.send(Kind.CALL, ("ping",))
    accepted = []
    for _ in range(100):
        for fd in select.select(listener.filenos(), [], [], 0.05)[0]:
            accepted += listener.accept(fd)
        if accepted:
            break
    (server,) = accepted
    try:
        assert [m.body for m in receive_until(server, 1)] == [("ping",)]
        server.send(Kind.CALL_DONE, ("pong",), block=True)
        assert [m.body for m in receive_until(connection, 1)] == [("pong",)]
    finally:
        server.close()


def test_a_caller_on_the_same_machine_uses_the_unix_socket():
    listener = stream.StreamListener("127.0.0.1", SIGNER)
    connection = StreamConnection.connect(listener.address, SIGNER)
    try:
        assert connection.sock.family == socket.AF_UNIX
        exchange(listener, connection)
    finally:
        connection.close()
        listener.close()


def test_without_the_unix_socket_the_caller_uses_tcp():
    """As on another host, where the abstract name does not exist."""
    listener = stream.StreamListener("127.0.0.1", SIGNER)
    for fd, sock in list(listener.socks.items()):
        if sock.family == socket.AF_UNIX:
            sock.close()
            del listener.socks[fd]
    connection = StreamConnection.connect(listener.address, SIGNER)
    try:
        assert connection.sock.family == socket.AF_INET
        exchange(listener, connection)
    finally:
        connection.close()
        listener.close()


def test_a_frame_too_large_to_hold_is_a_bad_message_not_a_crash(monkeypatch):
    def no_memory(nbytes):
        raise MemoryError

    monkeypatch.setattr(stream.landing, "buffer", no_memory)
    reader = StreamReader(SIGNER)
    with pytest.raises(BadMessage, match="no memory"):
        reader.feed(struct.pack("!I2Q", 2, 12, 1 << 39) + b"h" * 12)
