"""Signed ZeroMQ sockets, their handshake, and the wake-up a user thread uses to rouse an
I/O thread.

An Endpoint is one socket plus the cluster's Signer. It is owned by exactly one thread;
other threads never touch it, they queue work and call ``Waker.wake()``.

The handshake (``protocol/wire.py`` has the derivation) is the Endpoint's business, so
its users only send and receive::

    DEALER (connect)                         ROUTER (the head)
      HELLO   its nonce, wish    ------>       a pending session for that identity
              (messages sent meanwhile wait)
      CHALLENGE head nonce, salt, wish  <---
      REGISTER, then the rest:   ------>       checked with the pending session: it is
              signed with the session key      the peer's from now on (else AUTH_FAILED,
              and numbered                     throttled per address)

The session is bound to the DEALER's identity: a message moved to another identity
frame does not check. The head keeps a peer's session across ZeroMQ's reconnects; a
new HELLO from an identity makes a pending session that replaces the old one only
once a message checks under it, so nobody can unseat a peer by sending HELLO in its
name. Pending sessions are bounded (the oldest goes).

Each side's wish (one byte) says whether it asks for encryption
(``transport/encryption.py``): the DEALER judges by the address it connects to, the
ROUTER by the address the HELLO came from. The session is encrypted if either asks.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import time
from typing import Any, cast

import zmq

from rayipy.protocol import bulk
from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import (NONCE_BYTES, SALT_BYTES, BadMessage, Frame, Message, Session,
                                  Signer, decode_frames, encode_auth_failed, encode_unsigned,
                                  parse_wish, peek_kind, pickle_body, resign, sign_frames,
                                  wish_byte)
from rayipy.transport import encryption
from rayipy.transport.throttle import FailureThrottle

log = logging.getLogger(__name__)

MAX_PENDING_SESSIONS = 1024      # HELLOs answered whose sender has not signed anything yet
#: Drop reasons that are failed authentications: rate-limited per address.
AUTHENTICATION_FAILURES = frozenset({"bad signature", "no session", "replayed or out of order"})


class Endpoint:
    """A ROUTER (head) or DEALER (everyone else) socket that signs and checks every frame."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], socket_type: int, signer: Signer,
                 identity: bytes | None = None, count_bytes: bool = False,
                 salt: bytes = b"") -> None:
        self.socket = context.socket(socket_type)
        self.socket.setsockopt(zmq.LINGER, 0)
        # Never drop messages silently at a high-water mark: memory is the limit.
        self.socket.setsockopt(zmq.SNDHWM, 0)
        self.socket.setsockopt(zmq.RCVHWM, 0)
        self.is_router = socket_type == zmq.ROUTER
        if self.is_router:
            # Sending to a peer that is gone raises instead of vanishing without a trace.
            self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        elif identity is None:
            identity = os.urandom(8)   # the session is bound to it: we must know it
        if identity is not None:
            self.socket.setsockopt(zmq.IDENTITY, identity)
        self.identity = identity
        self.signer = signer
        self.salt = salt                  # a ROUTER's, sent in CHALLENGE; a DEALER's, as heard
        self.sessions: dict[bytes | None, Session] = {}   # peer identity (None: our DEALER's peer)
        self._pending: collections.OrderedDict[bytes | None, tuple[Session, str]] = \
            collections.OrderedDict()     # ROUTER: identity -> (session, peer address)
        self._nonce = b""                 # DEALER: the nonce of our HELLO
        self._wish = False                # DEALER: whether our HELLO asked for encryption
        self._held: list[tuple[Kind, Any]] = []   # DEALER: sent before the session existed
        self._confirmed = False           # DEALER: a message from the peer has checked
        self.throttle = FailureThrottle()
        self.dropped: collections.Counter[str] = collections.Counter()
        self.assembler = bulk.Assembler()
        self._transfers = 0
        self.count_bytes = count_bytes   # the head's, for cluster_status(); off elsewhere
        self.bytes_received = 0

    def bind(self, address: str) -> str:
        """Bind to ``address`` (a port of 0 or ``*`` picks one); returns the address bound."""
        self.socket.bind(address)
        return self.socket.get_string(zmq.LAST_ENDPOINT)

    def connect(self, address: str) -> None:
        """Connect to ``address`` (ZeroMQ connects in the background, and reconnects) and
        start the handshake: messages sent before it ends wait here."""
        self.socket.connect(address)
        self._nonce = os.urandom(NONCE_BYTES)
        self._wish = encryption.wants(_address_host(address))
        self.send_frames(encode_unsigned(Kind.HELLO, self._nonce + wish_byte(self._wish)))

    @property
    def ready(self) -> bool:
        """A DEALER's session exists (the head's CHALLENGE came)."""
        return None in self.sessions

    def send(self, kind: Kind, body: Any, to: bytes | None = None) -> bool:
        """Send one message; on a ROUTER ``to`` names the peer. False if the peer is gone
        (or has no session)."""
        session = self.sessions.get(to)
        if session is None:
            if not self.is_router:
                self._held.append((kind, body))   # leaves when the CHALLENGE comes
                return True
            self.dropped["no session"] += 1
            return False
        data, buffers = pickle_body(body)
        if buffers and bulk.buffer_bytes(buffers) > bulk.BULK_BYTES:
            self._transfers += 1
            for frames in bulk.chunked(session, kind, data, buffers, self._transfers):
                if not self.send_frames(frames, to):
                    return False
            return True
        seq = session.next_seq()
        return self.send_frames(sign_frames(session.send, kind, data, buffers, seq, session.seal),
                                to)

    def forward(self, frames: list[Frame], to: bytes) -> bool:
        """Pass a checked message's frames on to peer ``to``, signed anew with its session
        (the body is not pickled again); False if the peer is gone or has no session."""
        session = self.sessions.get(to)
        if session is None:
            self.dropped["no session"] += 1
            return False
        return self.send_frames(resign(session.send, frames, session.next_seq(), session.seal),
                                to)

    def send_frames(self, frames: list[Frame], to: bytes | None = None) -> bool:
        """Send frames made already (signed for this peer, or unsigned handshake frames);
        False if the peer is gone."""
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
        """Like recv, plus the message's own frames (for forwarding them), or None
        for a message that came in pieces (forward it with ``send``).

        A piece of a large message, and a handshake message, return
        (sender, None, frames).
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
        kind = peek_kind(frames)
        try:
            if kind is Kind.HELLO or kind is Kind.CHALLENGE or kind is Kind.AUTH_FAILED:
                return sender, self._handshake(sender, kind, frames, received), frames
            session = self.sessions.get(sender)
            try:
                if session is None:
                    raise BadMessage("no session", kind)
                message, frames = decode_frames(session.receive, frames, session=session)
            except BadMessage as e:
                if not self.is_router or sender not in self._pending:
                    raise
                # Perhaps the peer's first message under a new session (a REGISTER).
                pending, _address = self._pending[sender]
                message, frames = decode_frames(pending.receive, frames, session=pending)
                del self._pending[sender]
                self.sessions[sender] = pending
            self._confirmed = True
            if message.kind is Kind.CHUNK:
                return sender, self.assembler.add(sender, message.body, frames), None
            return sender, message, frames
        except BadMessage as e:
            answer = self._drop(e.reason, received)
            if answer and self.is_router and sender is not None and e.kind is Kind.REGISTER \
                    and e.reason == "bad signature":
                # Tell a peer with the wrong key at once, rather than leave it waiting;
                # past the address's rate, it waits (the throttle).
                self.send_frames(encode_auth_failed(), sender)
            return sender, None, frames

    def _handshake(self, sender: bytes | None, kind: Kind, frames: list[Frame],
                   received: list[Any]) -> Message | None:
        """A HELLO (ROUTER), CHALLENGE or AUTH_FAILED (DEALER): unsigned, raw payloads."""
        payload = bytes(frames[2]) if len(frames) >= 3 else b""
        if self.is_router and kind is Kind.HELLO and sender is not None:
            if len(payload) != NONCE_BYTES + 1:
                raise BadMessage("bad hello", kind)
            nonce = os.urandom(NONCE_BYTES)
            address = _peer_address(received)
            try:
                wish = encryption.wants(address)   # "?" (unknown) counts as remote
                encrypt = wish or parse_wish(payload[NONCE_BYTES:])
                session = self.signer.session(nonce, payload[:NONCE_BYTES], sender, encrypt)
            except ValueError as e:
                raise BadMessage(f"bad hello: {e}", kind) from None
            self._pending.pop(sender, None)
            self._pending[sender] = (session, address)
            if len(self._pending) > MAX_PENDING_SESSIONS:
                self._pending.popitem(last=False)
            self.send_frames(encode_unsigned(Kind.CHALLENGE, nonce + self.salt + wish_byte(wish)),
                             sender)
            return None
        if not self.is_router and kind is Kind.CHALLENGE and self._nonce and not self.ready:
            if len(payload) not in (NONCE_BYTES + SALT_BYTES + 1, NONCE_BYTES + 1):
                raise BadMessage("bad challenge", kind)   # (a ROUTER may have no salt)
            assert self.identity is not None
            try:
                encrypt = self._wish or parse_wish(payload[-1:])
                self.sessions[None] = self.signer.session(self._nonce, payload[:NONCE_BYTES],
                                                          self.identity, encrypt)
            except ValueError as e:
                raise BadMessage(f"bad challenge: {e}", kind) from None
            self.salt = payload[NONCE_BYTES:-1]
            held, self._held = self._held, []
            for held_kind, body in held:
                self.send(held_kind, body)
            return None
        if not self.is_router and kind is Kind.AUTH_FAILED and not self._confirmed:
            return Message(kind, None, 0)
        raise BadMessage(f"unexpected {kind.name}", kind)

    def _drop(self, reason: str, received: list[Any]) -> bool:
        """Count a dropped message, per reason and per peer address; the log gets one
        line per interval with the counts. False when the address is over its rate."""
        reason = reason.split(":")[0]
        self.dropped[reason] += 1
        now = time.monotonic()
        allowed = self.throttle.failed(_peer_address(received), reason, now,
                                       rated=reason in AUTHENTICATION_FAILURES)
        line = self.throttle.report(now)
        if line is not None:
            log.warning("%s", line)
        return allowed

    def close(self) -> None:
        """Close the socket at once, dropping what it has not sent."""
        self.socket.close(linger=0)


def _peer_address(received: list[Any]) -> str:
    """The IP address a message came from (ZeroMQ's frame metadata), or "?"."""
    try:
        return str(received[-1].get("Peer-Address"))
    except (zmq.ZMQError, AttributeError, IndexError):
        return "?"


def _address_host(address: str) -> str | None:
    """The host of a ZeroMQ address (``tcp://host:port``), or None for ``ipc://`` and
    ``inproc://``, which never leave the machine."""
    if not address.startswith("tcp://"):
        return None
    host = address.removeprefix("tcp://").rpartition(":")[0]
    return host.strip("[]")


def ask_salt(address: str, timeout: float = 10.0) -> bytes:
    """The KDF salt of the head at ``address`` (``tcp://host:port``): the public half of
    its CHALLENGE, asked before a password can become the key. Raises TimeoutError
    when no head answers in time."""
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, os.urandom(8))
        sock.connect(address)
        sock.send_multipart(encode_unsigned(Kind.HELLO, os.urandom(NONCE_BYTES) + b"\0"))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not sock.poll(int(left * 1000) + 1):
                break
            frames = sock.recv_multipart()
            if peek_kind(frames) is Kind.CHALLENGE \
                    and len(frames[2]) == NONCE_BYTES + SALT_BYTES + 1:
                return frames[2][NONCE_BYTES:NONCE_BYTES + SALT_BYTES]
        raise TimeoutError(f"no rayipy head answered at {address} within {timeout:g} s")
    finally:
        sock.close(0)
        context.term()


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
