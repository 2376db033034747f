"""Fuzzing the decoders (Hypothesis, a bounded number of examples each): the ZeroMQ
frames (``wire.decode``, ``peek_kind``), large messages in pieces (``bulk.Assembler``),
and the plain-socket stream of direct inboxes and data ports (``StreamReader``,
``take_small``, ``StreamConnection.receive``), with random, truncated and mutated input,
unsigned and signed with a valid session. The only error any of them may raise is
``BadMessage``: anything else would end the loop of the process that reads it."""

from __future__ import annotations

import os
import pickle
import socket
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayipy.protocol import bulk
from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import (HEADER, MAGIC, PROTOCOL_VERSION, BadMessage, Message, Session,
                                  Signer, UNSIGNED_KINDS, decode, encode,
                                  peek_kind)
from rayipy.transport import stream
from rayipy.transport.stream import (StreamConnection, StreamReader, pack_hello, pack_message,
                                     take_small)

KEY = b"k" * 32
SIGNER = Signer(KEY)
FUZZ = settings(max_examples=300, deadline=2000,
                suppress_health_check=[HealthCheck.too_slow])

kinds = st.sampled_from(list(Kind))
signed_kinds = st.sampled_from([k for k in Kind if k not in UNSIGNED_KINDS])
kind_numbers = st.one_of(kinds.map(int), st.integers(0, 2**16 - 1))
bodies = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.binary(max_size=64), st.text(max_size=16)),
    lambda inner: st.one_of(st.lists(inner, max_size=4).map(tuple), st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=12)


def session_pair() -> tuple[Session, Session]:
    """Two ends of one session: (ours, the peer's)."""
    a, b = os.urandom(32), os.urandom(32)
    return SIGNER.session(a, b, b"id"), SIGNER.session(b, a, b"id")


def only_bad_message(call) -> Message | None:
    """Run ``call``; a BadMessage is a verdict, any other exception fails the test."""
    try:
        return call()
    except BadMessage:
        return None


@st.composite
def mutated(draw, frames: list[bytes]) -> list[bytes]:
    """A frame list with a few random edits: bytes flipped, frames cut, dropped, added."""
    frames = [bytes(f) for f in frames]
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "truncate", "drop", "add", "replace"]))
        if action == "add" or not frames:
            frames.insert(draw(st.integers(0, len(frames))), draw(st.binary(max_size=40)))
            continue
        i = draw(st.integers(0, len(frames) - 1))
        if action == "drop":
            del frames[i]
        elif action == "replace":
            frames[i] = draw(st.binary(max_size=40))
        elif action == "truncate":
            frames[i] = frames[i][:draw(st.integers(0, len(frames[i])))]
        elif frames[i]:
            at = draw(st.integers(0, len(frames[i]) - 1))
            frames[i] = frames[i][:at] + bytes([frames[i][at] ^ draw(st.integers(1, 255))]) \
                + frames[i][at + 1:]
    return frames


def signed(session: Session, kind_no: int, data: bytes, buffers: list[bytes], seq: int,
           nbuf: int | None = None) -> list[bytes]:
    """A frame list that checks under ``session``, whatever it says."""
    header = HEADER.pack(MAGIC, PROTOCOL_VERSION, kind_no,
                         len(buffers) if nbuf is None else nbuf, seq)
    rest = [header, data, *buffers]
    return [session.send.sign(rest), *rest]


# -- ZeroMQ frames ------------------------------------------------------------------------

@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=6))
def test_random_frames(frames):
    ours, _peer = session_pair()
    peek_kind(frames)
    only_bad_message(lambda: decode(ours.receive, frames, session=ours))
    only_bad_message(lambda: decode(SIGNER, frames))


@FUZZ
@given(st.data(), kinds, bodies)
def test_mutated_frames_of_a_real_message(data, kind, body):
    ours, peer = session_pair()
    frames = [bytes(f) for f in encode(peer.send, kind, body, peer.next_seq())]
    frames = data.draw(mutated(frames))
    peek_kind(frames)
    message = only_bad_message(lambda: decode(ours.receive, frames, session=ours))
    if message is not None and frames[0] != b"":   # an unsigned kind comes back raw
        assert message.kind is kind


@FUZZ
@given(kind_numbers, st.binary(max_size=200), st.lists(st.binary(max_size=32), max_size=3),
       st.integers(0, 2**64 - 1), st.one_of(st.none(), st.integers(0, 2**32 - 1)))
def test_signed_garbage_bodies_and_headers(kind_no, data, buffers, seq, nbuf):
    """A peer holding a valid session (a bug, or the key) sends nonsense that checks."""
    ours, peer = session_pair()
    frames = signed(peer, kind_no, data, buffers, seq, nbuf)
    peek_kind(frames)
    only_bad_message(lambda: decode(ours.receive, frames, session=ours))


@FUZZ
@given(bodies)
def test_signed_well_formed_bodies_come_back_as_sent(body):
    ours, peer = session_pair()
    frames = encode(peer.send, Kind.HEARTBEAT, body, peer.next_seq())
    message = decode(ours.receive, frames, session=ours)
    assert message.kind is Kind.HEARTBEAT and message.body == body
    # The same frames again are a replay.
    assert only_bad_message(lambda: decode(ours.receive, frames, session=ours)) is None


# -- large messages in pieces ------------------------------------------------------------

chunk_bodies = st.one_of(
    bodies,
    st.tuples(st.integers(-2, 3), st.integers(-2, 3), st.integers(-2, 2**20),
              st.lists(st.one_of(st.integers(-5, 2**62), st.text(max_size=3)), max_size=3)
              .map(tuple), st.one_of(st.none(), bodies,
                                     st.tuples(kind_numbers, st.binary(max_size=30)))))


@FUZZ
@given(st.lists(st.tuples(chunk_bodies, st.lists(st.binary(max_size=40), max_size=2)),
                max_size=8))
def test_assembler_takes_any_sequence_of_signed_pieces(pieces):
    assembler = bulk.Assembler()
    for body, extra in pieces:
        frames = [b"sig", b"header", pickle.dumps(body), *extra]
        only_bad_message(lambda: assembler.add(b"peer", body, frames))


@FUZZ
@given(st.data(), st.lists(st.binary(min_size=1, max_size=3 * bulk.CHUNK_BYTES // 2), min_size=1,
                           max_size=3))
def test_a_real_transfer_with_pieces_dropped(data, buffers):
    ours, peer = session_pair()
    raw = pickle.dumps([pickle.PickleBuffer(bytearray(b)) for b in buffers], protocol=5,
                       buffer_callback=lambda b: False)
    messages = list(bulk.chunked(peer, Kind.SUBMIT, raw, [memoryview(b) for b in buffers], 1))
    assembler = bulk.Assembler()
    drop = data.draw(st.sets(st.integers(0, len(messages) - 1), max_size=2))
    result = None
    for i, frames in enumerate(messages):
        if i in drop:
            continue
        frames = [bytes(memoryview(f)) for f in frames]
        message = decode(ours.receive, frames, session=ours)
        result = only_bad_message(lambda: assembler.add(b"peer", message.body, frames))
    if not drop:
        assert result is not None and result.kind is Kind.SUBMIT
        assert [bytes(b) for b in result.body] == buffers


# -- the plain-socket stream (direct inboxes, data ports) --------------------------------

@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(1, 64), max_size=8))
def test_stream_reader_on_random_bytes_cut_anywhere(data, cuts):
    reader = StreamReader(SIGNER)
    at = 0
    for size in [*cuts, len(data)]:
        piece, at = data[at:at + size], at + size
        if only_bad_message(lambda: _feed(reader, piece)) is None:
            return
        reader.take()


def _feed(reader: StreamReader, piece: bytes) -> bool:
    """Feed bytes as a connection does: into a large frame's buffer while one is under
    way, else to ``feed``."""
    while piece:
        target = reader.direct_target()
        if target is None:
            reader.feed(piece)
            return True
        n = min(target.nbytes, len(piece))
        target[:n] = piece[:n]
        reader.filled(n)
        piece = piece[n:]
    return True


@FUZZ
@given(st.binary(max_size=400))
def test_take_small_on_random_bytes(data):
    ours, _peer = session_pair()
    into: list[Message] = []
    view = memoryview(bytearray(data))
    only_bad_message(lambda: take_small(ours.receive, view, len(data), into, ours))


def stream_bytes(session: Session, kind: Kind, body) -> bytes:
    return b"".join(bytes(memoryview(p).cast("B"))
                    for p in pack_message(session.send, kind, body, session.next_seq()))


@FUZZ
@given(st.data(), st.lists(st.tuples(signed_kinds, bodies), min_size=1, max_size=3))
def test_a_connection_reads_mutated_streams_without_crashing(data, messages):
    """The receiving side of a direct inbox or data port, as a worker's thread runs it:
    a peer that completes the handshake (a valid session), then sends real messages
    with a few bytes changed, cut or added. It is closed, never crashes."""
    ours, theirs = socket.socketpair()
    connection = StreamConnection(ours, SIGNER)
    try:
        theirs.setblocking(True)
        peer_nonce = os.urandom(32)
        their_record = theirs.recv(stream.HELLO.size)   # the connection's HELLO
        _magic, _version, connection_nonce, wish = stream.HELLO.unpack(their_record)
        peer = SIGNER.session(peer_nonce, connection_nonce, encrypt=bool(wish))
        wire = stream_bytes(peer, Kind.HELLO, None) + b"".join(   # the proof of the key first
            stream_bytes(peer, kind, body) for kind, body in messages)
        edits = data.draw(st.lists(st.tuples(st.integers(0, max(len(wire) - 1, 0)),
                                             st.sampled_from(["flip", "cut", "insert"]),
                                             st.binary(min_size=1, max_size=8)), max_size=3))
        for at, action, extra in edits:
            at = at % len(wire) if wire else 0   # earlier cuts may have shortened it
            if action == "flip" and wire:
                wire = wire[:at] + bytes([wire[at] ^ extra[0] or 1]) + wire[at + 1:]
            elif action == "cut":
                wire = wire[:at] + wire[at + len(extra):]
            else:
                wire = wire[:at] + extra + wire[at:]
        theirs.sendall(pack_hello(peer_nonce) + wire)
        theirs.shutdown(socket.SHUT_WR)
        received: list[Message] = []
        for _ in range(50):
            received += connection.receive()
            if connection.closed:
                break
        assert connection.closed   # the peer's end came, or a bad message closed it
        if not edits:
            assert [(m.kind, m.body) for m in received] == messages
    finally:
        connection.close()
        theirs.close()


@FUZZ
@given(st.binary(max_size=300))
def test_a_connection_reads_random_bytes_after_a_handshake_or_instead(data):
    for with_hello in (True, False):
        ours, theirs = socket.socketpair()
        connection = StreamConnection(ours, SIGNER)
        try:
            prefix = pack_hello(os.urandom(32)) if with_hello else b""
            theirs.sendall(prefix + data)
            theirs.shutdown(socket.SHUT_WR)
            for _ in range(50):
                connection.receive()
                if connection.closed:
                    break
            assert connection.closed
        finally:
            connection.close()
            theirs.close()


def test_absurd_frame_lengths_are_refused():
    for count, lengths in ((1, [5]), (5000, [1]), (2, [2**40, 2**40])):
        header = struct.pack("!I", count) + b"".join(struct.pack("!Q", n) for n in lengths)
        reader = StreamReader(SIGNER)
        assert only_bad_message(lambda: reader.feed(header + b"\0" * 64)) is None


def test_regression_a_frame_too_large_to_map_is_refused_not_raised():
    """Found by fuzzing: a stranger's HELLO record followed by a count and a frame length
    of 2**39 bytes (under MAX_MESSAGE_BYTES) made the landing buffer's mmap raise
    OSError(ENOMEM) out of ``StreamConnection.receive``: the reading thread (a worker's
    main thread for its direct inbox, the I/O thread for a data port) died."""
    reader = StreamReader(SIGNER)
    assert only_bad_message(
        lambda: reader.feed(struct.pack("!I2Q", 2, 20, 2**39) + b"\0" * 64)) is None
    ours, theirs = socket.socketpair()
    connection = StreamConnection(ours, SIGNER)
    try:
        # A peer that has authenticated (its signed HELLO checked): before that, any
        # message over PRE_AUTH_MESSAGE_BYTES is refused at its lengths.
        theirs.setblocking(True)
        _magic, _version, connection_nonce, wish = stream.HELLO.unpack(
            theirs.recv(stream.HELLO.size))
        peer_nonce = os.urandom(32)
        peer = SIGNER.session(peer_nonce, connection_nonce, encrypt=bool(wish))
        theirs.sendall(pack_hello(peer_nonce) + stream_bytes(peer, Kind.HELLO, None)
                       + struct.pack("!I2Q", 2, 20, 2**39)
                       + b"\0" * 20)   # the first frame (a header's size), then the big one
        for _ in range(10):
            connection.receive()
            if connection.closed:
                break
        assert connection.closed and "no memory" in connection.error
    finally:
        connection.close()
        theirs.close()
