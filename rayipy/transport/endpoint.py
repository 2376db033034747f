"""Signed ZeroMQ sockets and the wake-up a user thread uses to rouse an I/O thread.

An Endpoint is one socket plus the cluster's Signer. It is owned by exactly one thread;
other threads never touch it, they queue work and call ``Waker.wake()``.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
from typing import Any, cast

import zmq

from rayipy.protocol import bulk
from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import (BadMessage, Frame, Message, Signer, decode,
                                  encode_auth_failed, pickle_body, sign_frames)

log = logging.getLogger(__name__)


class Endpoint:
    """A ROUTER (head) or DEALER (everyone else) socket that signs and checks every frame."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], socket_type: int, signer: Signer,
                 identity: bytes | None = None, count_bytes: bool = False) -> None:
        self.socket = context.socket(socket_type)
        self.socket.setsockopt(zmq.LINGER, 0)
        # Never drop messages silently at a high-water mark: memory is the limit.
        self.socket.setsockopt(zmq.SNDHWM, 0)
        self.socket.setsockopt(zmq.RCVHWM, 0)
        if socket_type == zmq.ROUTER:
            # Sending to a peer that is gone raises instead of vanishing without a trace.
            self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if identity is not None:
            self.socket.setsockopt(zmq.IDENTITY, identity)
        self.signer = signer
        self.is_router = socket_type == zmq.ROUTER
        self.dropped: collections.Counter[str] = collections.Counter()
        self.assembler = bulk.Assembler()
        self._transfers = 0
        self.count_bytes = count_bytes   # the head's, for cluster_status(); off elsewhere
        self.bytes_received = 0

    def set_heartbeats(self, interval: float, timeout: float) -> None:
        """Ping each peer every ``interval`` seconds at the ZeroMQ level (ZMTP PING) and
        close a connection that sent nothing for ``timeout`` seconds after a ping. The
        peer's libzmq I/O thread answers, without its GIL: a busy interpreter still
        answers, a stopped process does not. Call before ``bind``/``connect``."""
        self.socket.setsockopt(zmq.HEARTBEAT_IVL, max(1, round(interval * 1000)))
        self.socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(1, round(timeout * 1000)))

    def bind(self, address: str) -> str:
        """Bind to ``address`` (a port of 0 or ``*`` picks one); returns the address bound."""
        self.socket.bind(address)
        return self.socket.get_string(zmq.LAST_ENDPOINT)

    def connect(self, address: str) -> None:
        """Connect to ``address`` (ZeroMQ connects in the background, and reconnects)."""
        self.socket.connect(address)

    def send(self, kind: Kind, body: Any, to: bytes | None = None) -> bool:
        """Send one message; on a ROUTER ``to`` names the peer. False if the peer is gone."""
        data, buffers = pickle_body(body)
        if buffers and bulk.buffer_bytes(buffers) > bulk.BULK_BYTES:
            self._transfers += 1
            for frames in bulk.chunked(self.signer, kind, data, buffers, self._transfers):
                if not self.send_frames(frames, to):
                    return False
            return True
        return self.send_frames(sign_frames(self.signer, kind, data, buffers), to)

    def send_frames(self, frames: list[Frame], to: bytes | None = None) -> bool:
        """Send frames made already (signed, or forwarded unchanged); False if the peer is gone."""
        if to is not None:
            frames = [to, *frames]
        try:
            self.socket.send_multipart(frames, copy=False)
            return True
        except zmq.ZMQError as e:
            if e.errno == zmq.EHOSTUNREACH:
                self.dropped["unreachable peer"] += 1
                return False
            raise

    def recv(self) -> tuple[bytes | None, Message | None]:
        """One message: (sender identity or None, message), or (sender, None) if dropped."""
        sender, message, _frames = self.recv_raw()
        return sender, message

    def recv_raw(self) -> tuple[bytes | None, Message | None, list[Frame] | None]:
        """Like recv, plus the message's own frames (for forwarding them unchanged), or None
        for a message that came in pieces (forward it with ``send``).

        A piece of a large message returns (sender, None, frames) until the last one.
        """
        received = self.socket.recv_multipart(copy=False)
        if self.count_bytes:
            self.bytes_received += sum(len(f) for f in received)
        sender = None
        if self.is_router:
            sender = received[0].bytes
            received = received[1:]
        # A zmq.Frame exports the buffer protocol, which pyzmq's type hints do not say.
        frames = cast("list[Frame]", received)
        try:
            message = decode(self.signer, frames)
            if message.kind is Kind.CHUNK:
                return sender, self.assembler.add(sender, message.body, frames), None
            return sender, message, frames
        except BadMessage as e:
            self.dropped[e.reason.split(":")[0]] += 1
            log.warning("dropped a message from %r: %s", sender, e.reason)
            if e.reason == "bad signature" and e.kind is Kind.REGISTER and sender is not None:
                # Tell a peer with the wrong key at once, rather than leave it waiting.
                self.send_frames(encode_auth_failed(), sender)
            return sender, None, frames

    def close(self) -> None:
        """Close the socket at once, dropping what it has not sent."""
        self.socket.close(linger=0)


class Waker:
    """A pipe whose read end a zmq Poller watches: any thread may wake the owner thread."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._pending = False

    @property
    def fd(self) -> int:
        return self._read

    def wake(self) -> None:
        """Wake the owner thread (from any thread); cheap when it is awake already."""
        # One byte in flight is enough; skipping the write saves a syscall per task.
        if not self._pending:
            self._pending = True
            try:
                os.write(self._write, b"x")
            except BlockingIOError:
                pass
            except OSError:
                pass  # closed during shutdown

    def clear(self) -> None:
        """Empty the pipe, then allow new writes. The owner looks at its work after this.

        In this order a wake that races with clear() is never lost: either its byte is
        still to come (and wakes the next poll), or it skipped writing while the flag was
        still set, before the owner looks at its work. The other order could leave the
        flag set with the pipe empty, and every later wake would be skipped.
        """
        try:
            while os.read(self._read, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        self._pending = False

    def close(self) -> None:
        """Close both ends of the pipe."""
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the caller retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
