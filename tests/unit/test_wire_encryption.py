"""Encryption of messages (protocol 6): the cipher, the agreement in the handshake, and
that no marker crosses a connection in clear, on ZeroMQ frames and on plain sockets."""

from __future__ import annotations

import os
import select
import socket
import time

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from rayipy.protocol import bulk, cipher
from rayipy.protocol.cipher import PIECE_BYTES, FrameCipher
from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import (BadMessage, Signer, decode, decode_frames, encode, pickle_body,
                                  resign)
from rayipy.transport import encryption, stream
from rayipy.transport.stream import StreamConnection, StreamListener, StreamReader

from test_wire_replay import Recording, accept_one, read

KEY = b"k" * 32
SIGNER = Signer(KEY)
MARKER = b"MARKER-7f3a9c"
NONCE_A, NONCE_B = b"a" * 32, b"b" * 32


def pair(encrypt=True, binding=b""):
    return (SIGNER.session(NONCE_A, NONCE_B, binding, encrypt),
            SIGNER.session(NONCE_B, NONCE_A, binding, encrypt))


def wire_bytes(frames) -> bytes:
    return b"".join(bytes(memoryview(f).cast("B")) for f in frames)


def body_with_marker(nbytes: int = 100):
    array = np.frombuffer((MARKER * (nbytes // len(MARKER) + 1))[:nbytes], dtype=np.uint8)
    return {"arg": MARKER.decode(), "array": array.copy()}


# -- the cipher -------------------------------------------------------------------------

def test_the_keystream_is_aes_ctr_as_documented():
    """Written from cipher.py's docstring with a plain CTR context: nonce = seq (6) +
    frame (2) + piece (4), counter from 2, each piece on its own."""
    key = os.urandom(32)
    data = os.urandom(2 * PIECE_BYTES + 99)
    expected = b"".join(
        Cipher(algorithms.AES(key), modes.CTR(
            (5).to_bytes(6, "big") + (3).to_bytes(2, "big") + p.to_bytes(4, "big") + b"\0\0\0\2")
        ).encryptor().update(data[p * PIECE_BYTES:(p + 1) * PIECE_BYTES]) for p in range(3))
    assert bytes(FrameCipher(key).apply(5, 3, data)) == expected


def test_pieces_in_place_and_as_sent_give_the_same_bytes_as_the_whole():
    c = FrameCipher(os.urandom(32))
    data = os.urandom(3 * PIECE_BYTES + 7)
    whole = bytes(c.apply(9, 1, data))
    pieces = b"".join(bytes(c.apply_piece(9, 1, at, data[at:at + PIECE_BYTES]))
                      for at in range(0, len(data), PIECE_BYTES))
    assert pieces == whole
    landing = bytearray(whole)
    c.apply_in_place(9, 1, 0, memoryview(landing)[:2 * PIECE_BYTES])
    c.apply_in_place(9, 1, 2 * PIECE_BYTES, memoryview(landing)[2 * PIECE_BYTES:])
    assert bytes(landing) == data
    with pytest.raises(ValueError, match="piece boundary"):
        c.apply_piece(9, 1, 5, data[:10])
    with pytest.raises(ValueError, match="range"):
        c.apply(cipher.MAX_SEQ + 1, 0, b"x")


# -- sessions and ZeroMQ frames ---------------------------------------------------------

def test_an_encrypted_message_has_no_marker_in_clear_and_round_trips():
    a, b = pair()
    assert a.encrypted and b.encrypted
    body = body_with_marker()
    seq = a.next_seq()
    frames = encode(a.send, Kind.CALL, body, seq, a.seal)
    assert MARKER not in wire_bytes(frames)
    message = decode(b.receive, frames, session=b)
    assert message.body["arg"] == MARKER.decode()
    assert bytes(message.body["array"]) == bytes(body["array"])


def test_a_session_in_clear_leaves_the_marker_in_clear():
    """The test above can fail: without encryption the marker is there."""
    a, b = pair(encrypt=False)
    frames = encode(a.send, Kind.CALL, body_with_marker(), a.next_seq(), a.seal)
    assert MARKER in wire_bytes(frames)
    assert decode(b.receive, frames, session=b).body["arg"] == MARKER.decode()


@pytest.mark.parametrize("frame", [2, 3])   # the body, a buffer
def test_a_tampered_ciphertext_is_a_bad_signature_and_nothing_is_unpickled(frame):
    a, b = pair()
    frames = [bytearray(memoryview(f).cast("B")) for f in
              encode(a.send, Kind.CALL, body_with_marker(), a.next_seq(), a.seal)]
    frames[frame][0] ^= 1
    with pytest.raises(BadMessage, match="bad signature"):
        decode(b.receive, frames, session=b)
    assert b.received == 0   # not even the number was taken


def test_the_two_ends_must_agree_on_encryption():
    """A man in the middle who flips a wish gives the ends different keys."""
    encrypted = SIGNER.session(NONCE_A, NONCE_B, b"", True)
    clear = SIGNER.session(NONCE_B, NONCE_A, b"", False)
    frames = encode(encrypted.send, Kind.CALL, ("x",), encrypted.next_seq(), encrypted.seal)
    with pytest.raises(BadMessage, match="bad signature"):
        decode(clear.receive, frames, session=clear)


def test_a_forwarded_message_is_decrypted_and_encrypted_again_for_its_next_hop():
    a, b = pair(binding=b"worker")
    c, d = pair(binding=b"driver")
    frames = encode(a.send, Kind.CALL, body_with_marker(), a.next_seq(), a.seal)
    _message, plain = decode_frames(b.receive, frames, session=b)
    forwarded = resign(c.send, list(plain), c.next_seq(), c.seal)
    assert MARKER not in wire_bytes(forwarded)
    assert decode(d.receive, forwarded, session=d).body["arg"] == MARKER.decode()


def test_large_messages_in_pieces_are_encrypted_piece_by_piece():
    a, b = pair()
    body = body_with_marker(3 * bulk.CHUNK_BYTES + 5)
    data, buffers = pickle_body(body)
    assembler = bulk.Assembler()
    whole = None
    for frames in bulk.chunked(a, Kind.CALL, data, buffers, 1):
        assert MARKER not in wire_bytes(frames)
        message, plain = decode_frames(b.receive, frames, session=b)
        whole = assembler.add(b"a", message.body, plain)
    assert whole is not None and bytes(whole.body["array"]) == bytes(body["array"])


# -- the setting ------------------------------------------------------------------------

@pytest.mark.parametrize("setting, local, remote", [
    ("auto", False, True), ("always", True, True), ("never", False, False), ("", False, True)])
def test_the_setting_says_which_connections_ask_for_encryption(monkeypatch, setting, local,
                                                               remote):
    monkeypatch.setenv(encryption.ENV, setting)
    assert encryption.wants(None) is local            # a Unix socket
    assert encryption.wants("127.0.0.1") is local
    assert encryption.wants("::1") is local
    assert encryption.wants("192.0.2.1") is remote    # TEST-NET-1: not this machine's


def test_a_bad_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(encryption.ENV, "yes")
    with pytest.raises(ValueError, match="RAYIPY_ENCRYPT='yes'.*auto, always, never"):
        encryption.wants("192.0.2.1")


def test_an_address_of_this_machine_is_local():
    assert encryption.on_this_machine("127.0.0.1")
    assert not encryption.on_this_machine("192.0.2.1")
    assert not encryption.on_this_machine("not an address")


# -- plain sockets ----------------------------------------------------------------------

BODIES = {
    "small": lambda: body_with_marker(100),
    "over 64 KiB": lambda: body_with_marker(200_000),
    "signed as sent": lambda: body_with_marker(5 * PIECE_BYTES + 3),
}


@pytest.mark.parametrize("setting, encrypted", [("always", True), ("auto", False)])
@pytest.mark.parametrize("name", BODIES)
def test_a_plain_socket_carries_no_marker_in_clear_when_encrypted(monkeypatch, setting,
                                                                  encrypted, name):
    """TCP on loopback: ``auto`` leaves it in clear (the test can fail), ``always``
    encrypts every path: the fast path, the general one, the one signed as sent."""
    monkeypatch.setenv(encryption.ENV, setting)
    monkeypatch.setattr(stream, "_connect_local", lambda host, port: None)   # TCP, not Unix
    listener = StreamListener("127.0.0.1", SIGNER)
    try:
        sock = socket.create_connection(stream.parse_tcp_address(listener.address))
        recording = Recording(sock)
        caller = StreamConnection(recording, SIGNER)
        server = accept_one(listener)
        assert caller.wait_ready(5)
        assert caller.session is not None and caller.session.encrypted is encrypted
        body = BODIES[name]()
        assert caller.send(Kind.CALL, body)   # what the kernel does not take waits
        messages: list = []
        end = time.monotonic() + 20
        while not messages and not server.closed and time.monotonic() < end:
            if caller.wants_write():
                caller.on_writable()       # as the caller's I/O thread would
            select.select([server.fileno()], [], [], 0.01)
            messages += server.receive()
        (message,) = messages
        assert message.body["arg"] == MARKER.decode()
        assert bytes(message.body["array"]) == bytes(body["array"])
        assert (MARKER in bytes(recording.written)) is not encrypted
        # And back: the server's answer, on the fast path.
        server.send(Kind.CALL_DONE, (MARKER.decode(),), block=True)
        assert [m.body for m in read(caller, 1)] == [(MARKER.decode(),)]
        server.close()
        caller.close()
    finally:
        listener.close()


@pytest.mark.parametrize("step", [7, 4096, stream.READ_BYTES, 3 * PIECE_BYTES])
def test_the_reader_decrypts_whatever_the_reads(step):
    a, b = pair()
    body = body_with_marker(3 * PIECE_BYTES + 11)
    seq = a.next_seq()
    data = wire_bytes(stream.pack_message(a.send, Kind.CALL, body, seq, a.seal))
    assert MARKER not in data
    reader = StreamReader(b.receive, b.open)
    view = memoryview(data)
    while view:
        target = reader.direct_target()
        n = min(step, view.nbytes, target.nbytes if target is not None else step)
        if target is not None:
            target[:n] = view[:n]
            reader.filled(n)
        else:
            reader.feed(view[:n])
        view = view[n:]
    ((frames, good),) = reader.take()
    assert good
    message = decode(b.receive, frames, signature_checked=True, session=b, decrypted=True)
    assert bytes(message.body["array"]) == bytes(body["array"])
