"""Replay on plain sockets (rayipy.transport.stream): bytes recorded from one connection
do nothing on another, nor twice on the same one (protocol 5's sessions)."""

from __future__ import annotations

import select
import socket
import time

from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import Signer
from rayipy.transport import stream
from rayipy.transport.stream import StreamConnection, StreamListener

SIGNER = Signer(b"k" * 32)


class Recording:
    """A socket that keeps a copy of every byte written to it."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.written = bytearray()

    def send(self, data, flags=0):
        n = self._sock.send(data, flags)
        self.written += bytes(memoryview(data).cast("B")[:n])
        return n

    def sendmsg(self, buffers, ancdata=(), flags=0):
        n = self._sock.sendmsg(buffers, ancdata, flags)
        left = n
        for b in buffers:
            view = memoryview(b).cast("B")[:left]
            self.written += view
            left -= view.nbytes
            if left <= 0:
                break
        return n

    def __getattr__(self, name):
        return getattr(self._sock, name)


def accept_one(listener: StreamListener) -> StreamConnection:
    end = time.monotonic() + 5
    while time.monotonic() < end:
        for fd in select.select(listener.filenos(), [], [], 0.1)[0]:
            accepted = listener.accept(fd)
            if accepted:
                return accepted[0]
    raise AssertionError("nothing connected")


def read(connection: StreamConnection, count: int, deadline: float = 5.0) -> list:
    messages: list = []
    end = time.monotonic() + deadline
    while len(messages) < count and not connection.closed and time.monotonic() < end:
        select.select([connection.fileno()], [], [], 0.05)
        messages += connection.receive()
    return messages


def recorded_call(listener: StreamListener) -> tuple[StreamConnection, Recording, bytes]:
    """A real caller sends one CALL; returns the server's end, the caller's recording
    socket, and the bytes of that CALL message as written."""
    sock = socket.create_connection(stream.parse_tcp_address(listener.address))
    recording = Recording(sock)
    caller = StreamConnection(recording, SIGNER)
    server = accept_one(listener)
    assert caller.wait_ready(5)
    before = len(recording.written)
    caller.send(Kind.CALL, ("run me",), block=True)
    assert [m.body for m in read(server, 1)] == [("run me",)]
    return server, recording, bytes(recording.written[before:])


def test_bytes_recorded_from_a_connection_do_nothing_on_a_new_one():
    listener = StreamListener("127.0.0.1", SIGNER)
    try:
        server, recording, _call = recorded_call(listener)
        # Someone without the key replays everything the caller wrote, HELLO included.
        with socket.create_connection(stream.parse_tcp_address(listener.address)) as replay:
            replay.sendall(bytes(recording.written))
            second = accept_one(listener)
            assert read(second, 1) == []
            assert second.closed and "bad signature" in second.error
            second.close()
        server.close()
        recording.close()
    finally:
        listener.close()


def test_a_message_replayed_on_the_same_connection_is_refused():
    listener = StreamListener("127.0.0.1", SIGNER)
    try:
        server, recording, call = recorded_call(listener)
        recording._sock.sendall(call)          # the same bytes again, in the same stream
        assert read(server, 1) == []
        assert server.closed and "replayed" in server.error
        assert server.dropped["replayed or out of order"] == 1
        server.close()
        recording.close()
    finally:
        listener.close()


def test_a_message_signed_for_another_session_is_refused():
    listener = StreamListener("127.0.0.1", SIGNER)
    try:
        server_1, recording_1, call = recorded_call(listener)
        server_2, recording_2, _ = recorded_call(listener)   # a second, genuine caller
        recording_2._sock.sendall(call)        # sends the first caller's message on its own
        assert read(server_2, 1) == []
        assert server_2.closed and "bad signature" in server_2.error
        for end in (server_1, server_2, recording_1, recording_2):
            end.close()
    finally:
        listener.close()


def test_a_connection_that_does_not_authenticate_is_cheap_and_closed_in_time(monkeypatch):
    monkeypatch.setattr(stream, "PRE_AUTH_SECONDS", 0.2)
    listener = StreamListener("127.0.0.1", SIGNER)
    try:
        with socket.create_connection(stream.parse_tcp_address(listener.address)) as idle:
            silent = accept_one(listener)
            assert len(silent._staging) == stream.PRE_AUTH_READ_BYTES   # not 256 KiB
            time.sleep(0.3)   # the deadline itself is what is tested
            listener.sweep(time.monotonic())
            assert silent.closed and "no authentication" in silent.error
            idle.settimeout(5)
            data = b""
            while chunk := idle.recv(4096):   # the HELLO, then the end of the stream
                data += chunk
            assert len(data) == stream.HELLO.size
            silent.close()
    finally:
        listener.close()


def test_strangers_past_the_cap_are_refused_at_once(monkeypatch):
    monkeypatch.setattr(stream, "MAX_UNAUTHENTICATED", 2)
    listener = StreamListener("127.0.0.1", SIGNER)
    socks = [socket.create_connection(stream.parse_tcp_address(listener.address))
             for _ in range(3)]
    try:
        accepted: list = []
        end = time.monotonic() + 5
        while len(accepted) < 2 and time.monotonic() < end:
            for fd in select.select(listener.filenos(), [], [], 0.1)[0]:
                accepted += listener.accept(fd)
        time.sleep(0.1)   # let the third arrive: it must be refused, not queued
        for fd in select.select(listener.filenos(), [], [], 0.1)[0]:
            accepted += listener.accept(fd)
        assert len(accepted) == 2
        for connection in accepted:
            connection.close()
    finally:
        for s in socks:
            s.close()
        listener.close()
