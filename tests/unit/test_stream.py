"""Unit tests of rayipy.transport.stream: signed messages on a plain byte stream.

The reader is pure (bytes in, frame lists out); the connection tests use a local socket
pair, no cluster.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import select
import socket
import struct

import blake3
import numpy as np
import pytest

from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import ObjectValue, Payload
from rayipy.protocol.wire import BadMessage, Signer, decode
from rayipy.transport import stream
from rayipy.transport.stream import StreamConnection, StreamReader, pack_message

KEY = b"k" * 32
SIGNER = Signer(KEY)


def wire_bytes(kind, body, signer=SIGNER, seq=0) -> bytes:
    return b"".join(bytes(memoryview(p).cast("B")) for p in pack_message(signer, kind, body, seq))


def as_sent_by(connection: StreamConnection, kind, body) -> bytes:
    """The bytes ``connection`` would write for one message (its session's key, its next
    number), to write on its socket by hand."""
    session = connection.session
    assert session is not None
    return wire_bytes(kind, body, session.send, session.next_seq())


def session_keys(own_nonce: bytes, peer_nonce: bytes, key: bytes = KEY) -> tuple[bytes, bytes]:
    """(send key, receive key) of the end whose nonce is ``own_nonce``, written from the
    docstring of wire.py, independently of Signer.session."""
    low, high = sorted((own_nonce, peer_nonce))
    base = hmac.new(key, b"rayipy session 6\0" + low + high + b"\0", hashlib.sha256).digest()
    return (hmac.new(base, b"from" + own_nonce, hashlib.sha256).digest(),
            hmac.new(base, b"from" + peer_nonce, hashlib.sha256).digest())


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "closed"
        data += chunk
    return data


def raw_handshake(sock: socket.socket, nonce: bytes = b"m" * 32) -> tuple[bytes, bytes]:
    """Play the other end of the handshake by hand on ``sock``: read the connection's
    HELLO, send ours (neither asks for encryption: a Unix socket pair); returns (our
    send key, our receive key)."""
    magic, version, theirs, wish = struct.unpack("!4sH32sB", recv_exactly(sock, 39))
    assert (magic, version, wish) == (b"RYPH", stream.PROTOCOL_VERSION, 0)
    sock.sendall(struct.pack("!4sH32sB", b"RYPH", stream.PROTOCOL_VERSION, nonce, 0))
    return session_keys(nonce, theirs)


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
        messages.append(decode(None, frames, signature_checked=True))  # type: ignore[arg-type]
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
    assert a.wait_ready(5) and b.wait_ready(5)   # the handshake: each reads the other's HELLO
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
        assert connection.wait_ready(5)     # the server's HELLO: now the ping is signed and sent
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


# -- the fast path for small messages: the same bytes as the general path -----------------
def reference_bytes(kind, body, key=KEY, seq=0) -> bytes:
    """One message laid out as the module docstring says, written independently of the
    module: what a peer of any version expects."""
    buffers = []
    data = pickle.dumps(body, protocol=5, buffer_callback=buffers.append)
    frames = [struct.pack("!4sHHIQ", b"RYPY", 6, int(kind), len(buffers), seq), data,
              *(bytes(b.raw()) for b in buffers)]
    prefix = struct.pack(f"!I{len(frames)}Q", len(frames), *map(len, frames))
    mac = hmac.new(key, prefix, hashlib.sha256)
    digest_key = hmac.new(key, b"rayipy frame digest", hashlib.sha256).digest()
    for frame in frames:
        mac.update(frame if len(frame) <= 64 * 1024 else blake3.blake3(frame, key=digest_key).digest())
    return prefix + b"".join(frames) + mac.digest()


def body_pickled_to(size: int) -> bytes:
    """A bytes body whose pickle is exactly ``size`` bytes."""
    for n in range(size, size - 64, -1):   # the overhead depends on the size
        if len(pickle.dumps(b"x" * n, protocol=5)) == size:
            return b"x" * n
    raise AssertionError(f"no bytes body pickles to {size} bytes")


SMALL_BODIES = {
    "tuple": ("ping", 1),
    "call": ([stream.Kind.CALL], [(b"f" * 16, b"function bytes")]),
    "at the limit": body_pickled_to(stream.SMALL_FRAME_BYTES),
    "small buffer": (b"o", np.arange(10)),
    "small buffers": tuple(np.arange(i) for i in range(13)),
}
LARGE_BODIES = {   # each takes the general path: a frame signed by its digest, or buffers
    "one over": body_pickled_to(stream.SMALL_FRAME_BYTES + 1),
    "14 buffers": tuple(np.arange(i) for i in range(14)),
    "buffers over": (np.arange(4096), np.arange(4096)),   # 64 KiB of buffers and a pickle
    "large buffer": (b"o", np.arange(100_000)),
    "signed as sent": (b"o", np.arange(1_000_000)),   # 8 MB: over SIGN_AS_SENT_BYTES
}


def test_the_fast_path_writes_the_bytes_of_the_old_code():
    """Bytes computed at dd15ac8 (before the fast path), by pack_message; the header
    (bytes 24-43: version 6 and the sequence number, here 0) and so the signature
    have changed since, with the protocol."""
    golden = bytes.fromhex(
        "0000000200000000000000140000000000000017525950590006003e00000000000000000000"
        "00008005950c000000000000008c0470696e67944b0186942e010390a5b6eff4e6b548fda97d9c"
        "0a81a85b75fdd5c6e1b194e61ce322fcf3fe")
    data = pickle.dumps(("ping", 1), protocol=5)
    assert stream.pack_small(SIGNER, Kind.CALL, data) == golden == wire_bytes(Kind.CALL, ("ping", 1))
    assert reference_bytes(Kind.CALL, ("ping", 1)) == golden


@pytest.mark.parametrize("name", SMALL_BODIES)
def test_the_fast_path_writes_the_bytes_of_the_general_path(name):
    body = SMALL_BODIES[name]
    buffers: list = []
    data = pickle.dumps(body, protocol=5, buffer_callback=buffers.append)
    fast = stream.pack_small(SIGNER, Kind.CALL, data, buffers)
    assert fast == wire_bytes(Kind.CALL, body) == reference_bytes(Kind.CALL, body)
    (message,) = read_all(StreamReader(SIGNER), fast, 4096)
    assert equal(message.body, body)


@pytest.mark.parametrize("name", ["one over", "14 buffers", "buffers over"])
def test_the_fast_path_leaves_what_is_not_small_to_the_general_path(name):
    buffers: list = []
    data = pickle.dumps(LARGE_BODIES[name], protocol=5, buffer_callback=buffers.append)
    assert stream.pack_small(SIGNER, Kind.CALL, data, buffers) is None


def test_the_fast_reader_reads_the_general_paths_small_messages_and_leaves_the_rest():
    bodies = [SMALL_BODIES[name] for name in ("tuple", "call", "at the limit")]
    small = [wire_bytes(Kind.CALL, body) for body in bodies]
    with_buffer = reference_bytes(Kind.CALL, SMALL_BODIES["small buffer"])
    data = bytearray(b"".join(small) + with_buffer + small[0])
    messages: list = []
    used = stream.take_small(SIGNER, memoryview(data), len(data), messages)
    assert used == sum(map(len, small))
    assert [(m.kind, m.body) for m in messages] == [(Kind.CALL, b) for b in bodies]
    assert messages[0].version == stream.PROTOCOL_VERSION
    # A message cut short is left whole for the reader, whatever the cut.
    for cut in (1, 31, 32, 33, len(small[0]) - 1):
        assert stream.take_small(SIGNER, memoryview(small[0]), cut, []) == 0


def raw_pair():
    left, right = socket.socketpair()
    left.settimeout(30)
    right.settimeout(30)
    return left, right


@pytest.mark.parametrize("name", [*SMALL_BODIES, *LARGE_BODIES])
def test_a_new_sender_writes_what_an_old_reader_expects(name):
    """The connection's bytes (fast path or general) are the documented ones, and the
    general reader reads them."""
    import threading

    body = {**SMALL_BODIES, **LARGE_BODIES}[name]
    left, right = raw_pair()
    sender = StreamConnection(left, SIGNER)
    _, its_key = raw_handshake(right)    # what we receive with is what it sends with
    assert sender.wait_ready(5)
    # First the proof of the key (a signed HELLO, empty body), then the message.
    expected = (reference_bytes(Kind.HELLO, None, key=its_key, seq=1)
                + reference_bytes(Kind.CALL, body, key=its_key, seq=2))
    thread = threading.Thread(target=sender.send, args=(Kind.CALL, body), kwargs={"block": True})
    thread.start()
    try:
        received = bytearray()
        while len(received) < len(expected):
            received += right.recv(1 << 20)
    finally:
        thread.join(30)
        sender.close()
        right.close()
    assert received == expected
    proof, message = read_all(StreamReader(Signer(its_key)), bytes(received), stream.READ_BYTES)
    assert proof.kind is Kind.HELLO and equal(message.body, body)


@pytest.mark.parametrize("name", [*SMALL_BODIES, *LARGE_BODIES])
def test_a_new_receiver_reads_what_an_old_sender_writes(name):
    import threading

    body = {**SMALL_BODIES, **LARGE_BODIES}[name]
    left, right = raw_pair()
    receiver = StreamConnection(right, SIGNER)
    send_key, _ = raw_handshake(left)
    data = (reference_bytes(Kind.HELLO, None, key=send_key, seq=1)   # the proof of the key
            + reference_bytes(Kind.CALL, body, key=send_key, seq=2)
            + reference_bytes(Kind.CALL, ("after",), key=send_key, seq=3))
    thread = threading.Thread(target=left.sendall, args=(data,))
    thread.start()
    try:
        messages = receive_until(receiver, 2)
    finally:
        thread.join(30)
        left.close()
        receiver.close()
    assert len(messages) == 2 and equal(messages[0].body, body)
    assert messages[1].body == ("after",)


def equal(a, b) -> bool:
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(map(equal, a, b))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def test_small_messages_cut_anywhere_between_reads_arrive_whole_and_in_order(pair):
    """The fast path takes whole messages; a cut one goes to the reader, and after it
    the fast path goes on."""
    a, b = pair
    data = b"".join(as_sent_by(a, Kind.CALL, (i, "x" * (i * 37 % 300))) for i in range(40))
    received = []
    for start in range(0, len(data), 1000):    # cuts in headers, bodies and signatures
        a.sock.sendall(data[start:start + 1000])
        select.select([b.fileno()], [], [], 5)
        received += b.receive()
    received += receive_until(b, 40 - len(received)) if len(received) < 40 else []
    assert [m.body[0] for m in received] == list(range(40))
    assert not b.closed


class Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('unpickled!')",))


def test_the_fast_path_checks_the_signature_before_unpickling(pair):
    a, b = pair
    forged = stream.pack_small(Signer(b"w" * 32), Kind.CALL, pickle.dumps(Boom(), protocol=5))
    with pytest.raises(BadMessage, match="bad signature"):
        stream.take_small(SIGNER, memoryview(forged), len(forged), [])
    a.sock.sendall(as_sent_by(a, Kind.CALL, ("before",)) + forged
                   + as_sent_by(a, Kind.CALL, ("after",)))
    assert [m.body for m in receive_until(b, 2)] == [("before",)]
    assert b.closed and "bad signature" in b.error
    assert b.dropped["bad signature"] == 1


@pytest.mark.parametrize("header, reason", [
    # (sequence number 2: 1 was the connection's proof of the key, a signed HELLO)
    (struct.pack("!4sHHIQ", b"RYPY", 5, 9999, 0, 2), "unknown kind 9999"),
    (struct.pack("!4sHHIQ", b"NOPE", 5, int(Kind.CALL), 0, 2), "bad magic"),
    (struct.pack("!4sHHIQ", b"RYPY", 5, int(Kind.CALL), 1, 2), "header announces 1 buffers"),
])
def test_a_signed_message_of_an_odd_shape_gets_the_general_paths_verdict(pair, header, reason):
    a, b = pair
    message = struct.pack("!I2Q", 2, len(header), 5) + header + b"\x80\x05N.."
    a.sock.sendall(message + a.session.send.mac(message))
    assert receive_until(b, 1) == []
    assert b.closed and reason in b.error


def test_a_signed_body_that_does_not_unpickle_closes_the_connection(pair):
    a, b = pair
    a.sock.sendall(stream.pack_small(a.session.send, Kind.CALL, b"not a pickle",
                                     seq=a.session.next_seq()))
    assert receive_until(b, 1) == []
    assert b.closed and "body does not unpickle" in b.error


class Trickle:
    """A socket that takes at most 7 bytes per write: every send is partial."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def send(self, data, flags=0):
        return self._sock.send(memoryview(data)[:7], flags)

    def sendmsg(self, buffers, ancdata=(), flags=0):
        return self._sock.send(memoryview(buffers[0])[:7], flags)

    def __getattr__(self, name):
        return getattr(self._sock, name)


@pytest.mark.parametrize("block", [True, False])
def test_small_messages_the_kernel_takes_in_part_leave_whole_and_in_order(block):
    left, right = socket.socketpair()
    a, b = StreamConnection(Trickle(left), SIGNER), StreamConnection(right, SIGNER)
    assert a.wait_ready(5) and b.wait_ready(5)
    try:
        for i in range(3):
            assert a.send(Kind.CALL, (i,), block=block)
        assert [m.body for m in receive_until(b, 3, writer=a)] == [(0,), (1,), (2,)]
        assert not a.wants_write()
    finally:
        a.close()
        b.close()


def test_small_sends_the_kernel_cannot_take_wait_and_leave_in_order(pair):
    a, b = pair
    sent = 0
    while not a.wants_write():    # until the socket's buffer is full
        assert a.send(Kind.CALL, (sent, b"x" * 1000))
        sent += 1
        assert sent < 100_000, "the socket never filled"
    for _ in range(3):             # these wait behind it
        assert a.send(Kind.CALL, (sent, b"y"))
        sent += 1
    messages = receive_until(b, sent, writer=a)
    assert [m.body[0] for m in messages] == list(range(sent))
    assert not a.wants_write()
