"""Unit tests of rayipy.protocol.wire: framing, HMAC signing, out-of-band buffers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from rayipy.protocol import serialization, wire
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import ObjectValue, Payload, Registration, TaskSpec
from rayipy.protocol.wire import BadMessage, Signer, decode, encode

KEY = b"k" * 32
BIG = 64 * 1024


def signer(key: bytes = KEY) -> Signer:
    return Signer(key)


def with_buffer(size: int = BIG) -> tuple:
    """A GET_OBJECT answer whose payload has one large out-of-band buffer."""
    data = bytearray(range(256)) * (size // 256)
    return (b"o" * 24, ObjectValue(True, Payload(b"pickle-stream", (data,)))), data


def bad(frames, key: bytes = KEY) -> BadMessage:
    with pytest.raises(BadMessage) as info:
        decode(signer(key), frames)
    assert info.value.reason == str(info.value)
    return info.value


# -- round trips ------------------------------------------------------------------
@pytest.mark.parametrize("kind, body", [
    (Kind.HEARTBEAT, ()),
    (Kind.SHUTDOWN, ("bye",)),
    (Kind.CANCEL, (b"t" * 16, True)),
    (Kind.REGISTER, Registration("driver", b"p" * 8, b"n" * 8, 42, 1, {"host": "h"})),
    (Kind.REPLY, (7, True, {"a": [1, 2.5, None], "b": (b"x", "y")})),
    (Kind.SUBMIT, ([TaskSpec(b"t" * 16, b"f" * 16, "f", Payload(b"args"), (), 1,
                             (("CPU", 1.0),), 3)],)),
])
def test_round_trip_of_plain_bodies(kind, body):
    frames = encode(signer(), kind, body)
    assert len(frames) == 3
    assert len(frames[0]) == wire.SIGNATURE_BYTES
    assert len(frames[1]) == wire.HEADER.size
    message = decode(signer(), frames)
    assert message.kind is kind
    assert message.body == body
    assert message.version == wire.PROTOCOL_VERSION


def test_header_layout():
    frames = encode(signer(), Kind.LOG, ([("stdout", "hi")], "w"))
    magic, version, kind, nbuf, seq = wire.HEADER.unpack(frames[1])
    assert (magic, version, kind, nbuf, seq) == (b"RYPY", wire.PROTOCOL_VERSION, int(Kind.LOG),
                                                 0, 0)


def test_same_message_signs_the_same_and_keys_differ():
    a = encode(signer(), Kind.SHUTDOWN, ("x",))
    b = encode(signer(), Kind.SHUTDOWN, ("x",))
    c = encode(signer(b"z" * 32), Kind.SHUTDOWN, ("x",))
    assert a[0] == b[0]
    assert a[0] != c[0]
    assert a[1:] == c[1:]


# -- out-of-band buffers -----------------------------------------------------------
def test_large_buffer_becomes_its_own_frame():
    body, data = with_buffer()
    frames = encode(signer(), Kind.OBJECT_VALUE, body)
    assert len(frames) == 4
    assert wire.HEADER.unpack(frames[1])[3] == 1
    assert memoryview(frames[3]).nbytes == len(data)
    assert len(frames[2]) < 1024  # the body frame does not carry the buffer


def test_buffer_frame_is_not_copied_on_encode_or_decode():
    body, data = with_buffer()
    frames = encode(signer(), Kind.OBJECT_VALUE, body)
    message = decode(signer(), frames)
    buf = message.body[1].payload.buffers[0]
    assert buf is frames[3]          # the received frame itself, no copy
    assert bytes(buf) == bytes(data)
    data[0] ^= 0xFF                  # the frame is a view over the sender's bytearray
    assert memoryview(buf)[0] == data[0]


def test_received_bytes_frames_are_used_as_is():
    body, data = with_buffer()
    frames = [bytes(f) for f in encode(signer(), Kind.OBJECT_VALUE, body)]
    message = decode(signer(), frames)
    assert message.body[1].payload.buffers[0] is frames[3]
    assert message.body[1].payload.buffers[0] == bytes(data)


def test_numpy_value_travels_through_serialization_and_wire_without_copy():
    array = np.arange(20_000, dtype=np.int64)
    payload, refs = serialization.dumps(array, snapshot=False)
    assert refs == [] and len(payload.buffers) == 1
    frames = encode(signer(), Kind.OBJECT_VALUE, (b"o" * 24, ObjectValue(True, payload)))
    assert len(frames) > 3
    message = decode(signer(), frames)
    got = serialization.loads(message.body[1].payload)
    assert np.array_equal(got, array)
    assert np.shares_memory(got, array)


def test_several_buffers_keep_their_order():
    parts = [bytearray([i]) * (5000 + i) for i in range(3)]
    frames = encode(signer(), Kind.OBJECT_VALUE, (b"o", Payload(b"d", tuple(parts))))
    assert len(frames) == 6
    got = decode(signer(), frames).body[1].buffers
    assert [bytes(b) for b in got] == [bytes(p) for p in parts]


# -- tampering: every frame is covered by the signature ----------------------------
def flip(frame, index: int = -1) -> bytes:
    b = bytearray(bytes(frame))
    b[index] ^= 0x01
    return bytes(b)


def signed_with_buffer() -> list:
    body, _ = with_buffer()
    return [bytes(f) for f in encode(signer(), Kind.OBJECT_VALUE, body)]


@pytest.mark.parametrize("index", [0, 2, 3])
def test_tampered_frame_is_a_bad_signature(index):
    frames = signed_with_buffer()
    frames[index] = flip(frames[index])
    error = bad(frames)
    assert error.reason == "bad signature"
    assert error.kind is Kind.OBJECT_VALUE


@pytest.mark.parametrize("position", [0, 100_000, -1])
def test_a_changed_byte_in_a_frame_signed_by_its_digest_is_a_bad_signature(position):
    body, _ = with_buffer(4 * BIG)
    frames = [bytes(f) for f in encode(signer(), Kind.OBJECT_VALUE, body)]
    assert len(frames[3]) > wire.DIGESTED_FRAME_BYTES
    frames[3] = flip(frames[3], position)
    assert bad(frames).reason == "bad signature"


def test_a_large_frame_enters_the_mac_as_a_digest_under_the_cluster_key():
    small, large = b"s" * wire.DIGESTED_FRAME_BYTES, b"l" * (wire.DIGESTED_FRAME_BYTES + 1)
    assert bytes(signer().signed_form(small)) == small
    digest = signer().signed_form(large)
    assert len(digest) == 32 and digest == signer().signed_form(large)
    assert digest != signer(b"z" * 32).signed_form(large)   # keyed: not a plain hash
    assert digest != signer().signed_form(large[:-1] + b"m")


def test_tampered_header_kind_is_a_bad_signature():
    frames = [bytes(f) for f in encode(signer(), Kind.SHUTDOWN, ("x",))]
    magic, version, _, nbuf, seq = wire.HEADER.unpack(frames[1])
    frames[1] = wire.HEADER.pack(magic, version, int(Kind.HEARTBEAT), nbuf, seq)
    assert bad(frames).reason == "bad signature"


def test_tampered_header_version_is_a_bad_signature():
    frames = [bytes(f) for f in encode(signer(), Kind.SHUTDOWN, ("x",))]
    magic, version, kind, nbuf, seq = wire.HEADER.unpack(frames[1])
    frames[1] = wire.HEADER.pack(magic, version + 1, kind, nbuf, seq)
    assert bad(frames).reason == "bad signature"


def test_truncated_signature_is_bad():
    frames = signed_with_buffer()
    frames[0] = frames[0][:-1]
    assert bad(frames).reason == "bad signature"


def test_dropped_buffer_frame_is_bad():
    frames = signed_with_buffer()
    error = bad(frames[:-1])
    assert "announces 1 buffers, got 0" in error.reason


def test_added_frame_is_bad():
    frames = signed_with_buffer() + [b"extra"]
    assert "announces 1 buffers, got 2" in bad(frames).reason


def test_added_frame_with_matching_header_is_bad_signature():
    frames = signed_with_buffer()
    magic, version, kind, _, seq = wire.HEADER.unpack(frames[1])
    frames[1] = wire.HEADER.pack(magic, version, kind, 2, seq)
    assert bad(frames + [b"extra"]).reason == "bad signature"


def test_recut_frames_are_bad_even_with_the_same_bytes():
    frames = signed_with_buffer()
    body, buf = frames[2], frames[3]
    recut = frames[:2] + [body + buf[:10], buf[10:]]
    assert b"".join(recut[1:]) == b"".join(frames[1:])
    assert bad(recut).reason == "bad signature"


def test_wrong_key_is_bad_signature():
    frames = encode(signer(), Kind.SHUTDOWN, ("x",))
    assert bad(frames, key=b"w" * 32).reason == "bad signature"


def test_signature_is_checked_before_unpickling():
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))
    frames = [bytes(f) for f in encode(signer(), Kind.SHUTDOWN, (1,))]
    frames[2] = pickle.dumps(Boom(), protocol=5)
    assert bad(frames).reason == "bad signature"


# -- malformed frame lists -----------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 2])
def test_too_few_frames(n):
    frames = encode(signer(), Kind.HEARTBEAT, ())[:n]
    assert bad(frames).reason == f"too few frames ({n})"


def test_bad_magic():
    frames = encode(signer(), Kind.HEARTBEAT, ())
    frames[1] = b"XXXX" + bytes(frames[1])[4:]
    assert bad(frames).reason == "bad magic"


def test_bad_header_size():
    frames = encode(signer(), Kind.HEARTBEAT, ())
    frames[1] = bytes(frames[1]) + b"\0"
    assert bad(frames).reason == "bad header size"


def test_unknown_kind_even_when_signed():
    s = signer()
    parts = [wire.HEADER.pack(wire.MAGIC, wire.PROTOCOL_VERSION, 999, 0, 1), pickle.dumps(())]
    error = bad([s.sign(parts), *parts])
    assert error.reason == "unknown kind 999"
    assert error.kind is None


def test_signed_body_that_does_not_unpickle():
    s = signer()
    parts = [wire.HEADER.pack(wire.MAGIC, wire.PROTOCOL_VERSION, int(Kind.REPLY), 0, 1),
             b"not a pickle"]
    error = bad([s.sign(parts), *parts])
    assert error.reason.startswith("body does not unpickle")
    assert error.kind is Kind.REPLY


# -- peek_kind and AUTH_FAILED ---------------------------------------------------------
def test_peek_kind_reads_the_header_without_checking():
    frames = encode(signer(), Kind.REGISTER, ("anything",))
    frames[0] = b"not a signature"
    assert wire.peek_kind(frames) is Kind.REGISTER


@pytest.mark.parametrize("frames", [
    [],
    [b"sig", wire.HEADER.pack(wire.MAGIC, 1, int(Kind.REGISTER), 0, 0)],
    [b"sig", b"short", b""],
    [b"sig", wire.HEADER.pack(b"NOPE", 1, int(Kind.REGISTER), 0, 0), b""],
    [b"sig", wire.HEADER.pack(wire.MAGIC, 1, 999, 0, 0), b""],
])
def test_peek_kind_of_garbage_is_none(frames):
    assert wire.peek_kind(frames) is None


def test_auth_failed_decodes_without_a_signature():
    frames = wire.encode_auth_failed()
    assert frames[0] == b"" and frames[2] == b""
    assert wire.peek_kind(frames) is Kind.AUTH_FAILED
    message = decode(signer(b"any other key!!!"), frames)
    assert message == wire.Message(Kind.AUTH_FAILED, b"", wire.PROTOCOL_VERSION)


# -- Signer ----------------------------------------------------------------------------
@pytest.mark.parametrize("key", [b"", b"k" * 15, "a string key long enough", None])
def test_signer_rejects_short_or_non_bytes_keys(key):
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Signer(key)


def test_signer_accepts_16_bytes_and_bytearray():
    a, b = Signer(b"k" * 16), Signer(bytearray(b"k" * 16))
    frames = [b"one", b"two"]
    assert a.sign(frames) == b.sign(frames)
    assert a.check(a.sign(frames), frames)
    assert not a.check(a.sign(frames), [b"one", b"tw", b"o"])


@pytest.mark.parametrize("key", [b"k" * 16, b"k" * 32, bytes(range(64)), bytes(range(65)),
                                 bytearray(b"long key " * 30)],
                         ids=["16", "32", "64", "65: hashed first", "270, bytearray"])
def test_mac_in_one_go_is_hmac_sha256_with_the_cluster_key(key):
    """Signer.mac is HMAC built from two SHA-256 states; it must be the library's HMAC
    exactly, and the same as the streamed MAC (Signer.start), or peers disagree."""
    import hashlib
    import hmac

    a = Signer(key)
    for data in (b"", b"x", bytes(range(256)) * 3, b"y" * 64 * 1024):
        expected = hmac.new(bytes(key), data, hashlib.sha256).digest()
        streamed = a.start()
        streamed.update(data)
        assert a.mac(data) == expected == streamed.digest()
        assert a.mac(memoryview(data)) == expected
    assert a.mac(b"x") != Signer(b"other key 16 byt").mac(b"x")


def test_a_signature_is_the_hmac_of_the_documented_bytes():
    """Written from the module docstring, independently of Signer."""
    import hashlib
    import hmac
    import struct

    import blake3

    frames = [b"h" * 20, b"d" * 300, b"", bytes(range(256)) * 1000]   # the last one digested
    digest_key = hmac.new(KEY, b"rayipy frame digest", hashlib.sha256).digest()
    signed = b"".join(struct.pack("!Q", len(f)) + (f if len(f) <= BIG else
                                                   blake3.blake3(f, key=digest_key).digest())
                      for f in frames)
    assert signer().sign(frames) == hmac.new(KEY, signed, hashlib.sha256).digest()


def test_waker_never_loses_a_wake_that_races_with_clear(monkeypatch):
    import os
    import select
    from rayipy.transport import endpoint
    waker = endpoint.Waker()
    real_read = os.read
    raced = []

    def read_racing_a_producer(fd, n):
        if not raced:  # another thread wakes us while we are clearing
            raced.append(True)
            waker.wake()
        return real_read(fd, n)

    try:
        waker.wake()
        monkeypatch.setattr(endpoint.os, "read", read_racing_a_producer)
        waker.clear()
        monkeypatch.setattr(endpoint.os, "read", real_read)
        waker.wake()  # must reach the pipe, or the owner sleeps until its poll times out
        assert select.select([waker.fd], [], [], 0)[0] == [waker.fd]
    finally:
        waker.close()


# -- sessions: handshake keys and sequence numbers (protocol 5) ------------------------
NONCE_A, NONCE_B = b"a" * 32, b"b" * 32


def session_pair(key: bytes = KEY, binding: bytes = b"peer-id!") -> tuple[wire.Session, wire.Session]:
    """Both ends of one connection, as each derives its keys from the nonces."""
    return (Signer(key).session(NONCE_A, NONCE_B, binding),
            Signer(key).session(NONCE_B, NONCE_A, binding))


def send(session: wire.Session, kind: Kind, body) -> list:
    return [bytes(f) for f in encode(session.send, kind, body, session.next_seq())]


def receive(session: wire.Session, frames) -> wire.Message:
    return decode(session.receive, frames, session=session)


def test_both_ends_of_a_session_agree_and_each_direction_has_its_own_key():
    a, b = session_pair()
    assert receive(b, send(a, Kind.SUBMIT, ([],))).body == ([],)
    assert receive(a, send(b, Kind.REPLY, (1, True, 2))).body == (1, True, 2)
    assert a.send.mac(b"x") != a.receive.mac(b"x")
    assert a.send.mac(b"x") != Signer(KEY).mac(b"x")   # never the cluster key itself


def test_a_message_replayed_within_the_session_is_refused_before_unpickling():
    a, b = session_pair()
    first = send(a, Kind.SUBMIT, ([],))
    receive(b, first)
    error = pytest.raises(BadMessage, receive, b, first).value
    assert error.reason == "replayed or out of order"
    later, earlier = send(a, Kind.HEARTBEAT, ()), send(a, Kind.HEARTBEAT, ())
    receive(b, earlier)   # numbers may skip (a message lost in a reconnect) ...
    with pytest.raises(BadMessage, match="replayed"):
        receive(b, later)  # ... but never go back


def test_a_message_reflected_to_its_sender_does_not_check():
    a, _b = session_pair()
    with pytest.raises(BadMessage, match="bad signature"):
        receive(a, send(a, Kind.SHUTDOWN, ("x",)))


def test_a_message_of_another_session_does_not_check():
    a, _b = session_pair()
    _c, d = Signer(KEY).session(NONCE_A, b"c" * 32, b"peer-id!"), \
        Signer(KEY).session(b"c" * 32, NONCE_A, b"peer-id!")
    with pytest.raises(BadMessage, match="bad signature"):
        receive(d, send(a, Kind.SUBMIT, ([],)))


def test_a_session_is_bound_to_the_identity():
    a, _ = session_pair(binding=b"driver-1")
    _, b = session_pair(binding=b"driver-2")
    with pytest.raises(BadMessage, match="bad signature"):
        receive(b, send(a, Kind.SUBMIT, ([],)))


def test_a_peer_that_echoes_our_nonce_is_refused():
    with pytest.raises(ValueError, match="our own nonce"):
        Signer(KEY).session(NONCE_A, NONCE_A)
    with pytest.raises(ValueError, match="32 bytes"):
        Signer(KEY).session(NONCE_A, b"short")


def test_the_session_keys_are_the_documented_hmacs():
    """Written from the module docstring, independently of Signer.session."""
    import hashlib
    import hmac
    base = hmac.new(KEY, b"rayipy session 6\0" + NONCE_A + NONCE_B + b"\0" + b"id",
                    hashlib.sha256).digest()
    a = Signer(KEY).session(NONCE_B, NONCE_A, b"id")
    assert a.send.mac(b"m") == hmac.new(hmac.new(base, b"from" + NONCE_B, hashlib.sha256).digest(),
                                        b"m", hashlib.sha256).digest()
    assert a.seal is None and a.open is None and not a.encrypted


def test_resign_passes_body_and_buffers_on_with_a_new_number_and_key():
    a, b = session_pair(binding=b"worker")
    c, d = session_pair(binding=b"owner")
    body, _data = with_buffer()
    frames = encode(a.send, Kind.OBJECT_VALUE, body, a.next_seq())
    receive(b, frames)
    forwarded = wire.resign(c.send, frames, c.next_seq())
    assert forwarded[2] is frames[2] and forwarded[3] is frames[3]   # not copied
    assert receive(d, forwarded).body[1].payload.buffers[0] == frames[3]
