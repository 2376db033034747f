"""Unit tests of rayipy.protocol.bulk: large messages in signed pieces, put back together."""

from __future__ import annotations

import numpy as np
import pytest
import zmq

from rayipy.protocol import bulk, landing
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import ObjectValue, Payload
from rayipy.protocol.wire import BadMessage, Session, Signer, decode, pickle_body

KEY = b"k" * 32


def pieces(body, kind=Kind.OBJECT_VALUE, transfer=1):
    data, buffers = pickle_body(body)
    return [[zmq.Frame(bytes(f)) for f in frames]
            for frames in bulk.chunked(Session(Signer(KEY), Signer(KEY)), kind, data, buffers, transfer)]


def assemble(frame_lists, sender=b"peer", assembler=None):
    assembler = assembler or bulk.Assembler()
    out = None
    for frames in frame_lists:
        message = decode(Signer(KEY), frames)   # every piece is an ordinary signed message
        assert message.kind is Kind.CHUNK
        assert out is None, "the message came before its last piece"
        out = assembler.add(sender, message.body, frames)
    return out


def big_value(nbytes=3 * bulk.CHUNK_BYTES + 12345):
    array = np.arange(nbytes // 8, dtype=np.int64)
    small = bytearray(b"x" * 100_000)
    return (b"o" * 24, ObjectValue(True, Payload(b"stream", (array, small)))), array, small


def test_large_message_round_trips_through_pieces():
    body, array, small = big_value()
    frame_lists = pieces(body)
    assert len(frame_lists) == 4 + 1 + 1        # 4 pieces, 1 for the small buffer, the message
    message = assemble(frame_lists)
    assert message.kind is Kind.OBJECT_VALUE
    oid, value = message.body
    got_array, got_small = value.payload.buffers
    assert np.array_equal(np.frombuffer(got_array, dtype=np.int64), array)
    assert bytes(got_small) == bytes(small)


def test_each_piece_is_signed():
    body, *_ = big_value()
    frame_lists = pieces(body)
    tampered = list(frame_lists[1])
    data = bytearray(tampered[-1].bytes)
    data[10] ^= 1
    tampered[-1] = zmq.Frame(bytes(data))
    with pytest.raises(BadMessage, match="bad signature"):
        decode(Signer(KEY), tampered)


@pytest.mark.parametrize("damage", ["drop", "swap", "repeat"])
def test_pieces_out_of_order_drop_the_transfer(damage):
    body, *_ = big_value()
    frame_lists = pieces(body)
    if damage == "drop":
        del frame_lists[1]
    elif damage == "swap":
        frame_lists[1], frame_lists[2] = frame_lists[2], frame_lists[1]
    else:
        frame_lists.insert(2, frame_lists[1])
    with pytest.raises(BadMessage):
        assemble(frame_lists)


def test_a_new_transfer_replaces_an_unfinished_one():
    assembler = bulk.Assembler()
    body, array, _ = big_value()
    first = pieces(body, transfer=1)
    for frames in first[:2]:                      # the sender died half way, say
        assembler.add(b"peer", decode(Signer(KEY), frames).body, frames)
    message = assemble(pieces(body, transfer=2), assembler=assembler)
    assert np.array_equal(np.frombuffer(message.body[1].payload.buffers[0], dtype=np.int64), array)


def test_senders_are_assembled_apart():
    assembler = bulk.Assembler()
    body_a, array_a, _ = big_value()
    body_b, array_b, _ = big_value(bulk.CHUNK_BYTES * 2)
    a, b = pieces(body_a), pieces(body_b)
    done = {}
    for i in range(max(len(a), len(b))):
        for sender, frame_lists in ((b"a", a), (b"b", b)):
            if i < len(frame_lists):
                frames = frame_lists[i]
                out = assembler.add(sender, decode(Signer(KEY), frames).body, frames)
                if out is not None:
                    done[sender] = out
    assert len(done[b"a"].body[1].payload.buffers[0]) == array_a.nbytes
    assert len(done[b"b"].body[1].payload.buffers[0]) == array_b.nbytes


def test_malformed_chunk_body_is_bad_message():
    with pytest.raises(BadMessage, match="malformed"):
        bulk.Assembler().add(b"p", ("not", "a", "chunk"), [])


@pytest.fixture
def pool(monkeypatch):
    pool = landing.LandingPool()
    monkeypatch.setattr(landing, "POOL", pool)
    return pool


def test_large_buffers_land_in_memory_used_again_once_free(pool):
    body, array, _ = big_value()
    first = assemble(pieces(body)).body[1].payload.buffers[0]
    where = np.frombuffer(first, dtype=np.uint8).ctypes.data
    kept = np.frombuffer(first, dtype=np.int64)[5:]       # the user's value, say
    del first
    second = assemble(pieces(body)).body[1].payload.buffers[0]
    assert np.frombuffer(second, dtype=np.uint8).ctypes.data != where   # still in use
    assert np.array_equal(kept, array[5:])
    del kept, second
    third = assemble(pieces(body)).body[1].payload.buffers[0]
    assert np.frombuffer(third, dtype=np.uint8).ctypes.data == where     # free again
    assert pool.held_bytes()[0] == landing.size_class(array.nbytes)


def test_a_dropped_transfer_gives_its_memory_back(pool):
    body, *_ = big_value()
    frame_lists = pieces(body)
    del frame_lists[2]
    with pytest.raises(BadMessage, match="out of order"):
        assemble(frame_lists)
    assert pool.held_bytes() == (0, landing.size_class(3 * bulk.CHUNK_BYTES + 12345))
