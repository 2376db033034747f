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
name. Pending sessions are bounded (the oldest goes), and so are the CHALLENGEs sent to
an identity that keeps saying HELLO (``transport/pending_sessions.py``): a stranger that
floods HELLOs and never reads gets a handful of answers, not one per HELLO.

A DEALER whose CHALLENGE does not come (its HELLO lost, or the head was away) sends the
same HELLO again every ``HELLO_RESEND_SECONDS`` (``check_link``), so it connects once a
head is there to answer.

Rejecting a stranger's flood costs the receiving thread at most half its time: after
each millisecond of rejections it rests (``throttle.RejectPacer``), so that on a small
machine the processes doing real work are not left waiting behind it for the CPU.

Each side's wish (one byte) says whether it asks for encryption
(``transport/encryption.py``): the DEALER judges by the address it connects to, the
ROUTER by the address the HELLO came from. The session is encrypted if either asks.

A restarted head knows no session. A DEALER watches its connection (a ZeroMQ monitor,
``check_link``): when it breaks, messages are held from then on, and when it is made
again the DEALER sends a new HELLO; its ``greeting`` (the peer's registration) leaves
first under the new session, then what was held. Messages from the head signed under
the old session (sent before a blip) still check until the new session's first one.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import time
from typing import Any, Callable, cast

import zmq

from rayipy.protocol import bulk
from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import (NONCE_BYTES, SALT_BYTES, BadMessage, Frame, Message, Session,
                                  Signer, decode_frames, encode_auth_failed, encode_unsigned,
                                  parse_wish, peek_kind, pickle_body, resign, sign_frames,
                                  wish_byte)
from rayipy.transport import encryption
from rayipy.transport.pending_sessions import (HELLO_RESEND_SECONDS, MAX_PENDING_SESSIONS,
                                               HelloAnswer, PendingSessions)
from rayipy.transport.throttle import FailureThrottle, RejectPacer

log = logging.getLogger(__name__)

#: Drop reasons that are failed authentications: rate-limited per address.
AUTHENTICATION_FAILURES = frozenset({"bad signature", "no session", "replayed or out of order"})
#: Messages waiting to be read, per connection, before ZeroMQ stops reading it. The head
#: reads far faster than one peer sends (SUBMIT carries a whole batch of tasks), so a
#: legitimate peer meets it only when the head is busy, and then just waits.
RECEIVE_HWM = 1000
#: The largest frame a socket takes (ZeroMQ's MAXMSGSIZE applies per frame). A message
#: with more than 8 MiB of buffers goes in 1 MiB pieces (``protocol/bulk.py``), so only
#: a body's own pickle can be large: a SUBMIT batch (its specs hold arguments under
#: 100 KiB, or under 1 MiB without a store, and values of ref arguments up to 1 MiB), an
#: EXECUTE batch, a FUNCTION, results with inline values under 100 KiB, LOG batches:
#: tens of MiB at the very most. 1 GiB leaves room for an actor's constructor arguments,
#: which are never put in the store; a bigger frame is refused by the sender with an
#: error in its log (``send``), not sent to be cut off.
MAX_FRAME_BYTES = 2**30
_FRAME_SLACK = 1024       # what a body's frame may carry besides its pickle (a CHUNK's)


class Endpoint:
    """A ROUTER (head) or DEALER (everyone else) socket that signs and checks every frame.

    ``max_frame_bytes``: the largest frame taken or sent (0: ``MAX_FRAME_BYTES``)."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], socket_type: int, signer: Signer,
                 identity: bytes | None = None, count_bytes: bool = False,
                 salt: bytes = b"", max_frame_bytes: int = 0) -> None:
        max_frame_bytes = max_frame_bytes or MAX_FRAME_BYTES
        self.socket = context.socket(socket_type)
        self.socket.setsockopt(zmq.LINGER, 0)
        # Sending never waits and never drops: a ROUTER (ROUTER_MANDATORY) at its
        # high-water mark would block the head's whole loop on one slow peer (a stopped
        # driver), and a DEALER would block its I/O thread while the head is away. What
        # a process sends goes to peers it has authenticated (or is a throttled answer).
        self.socket.setsockopt(zmq.SNDHWM, 0)
        # Receiving is bounded: past RECEIVE_HWM messages waiting from one connection,
        # ZeroMQ stops reading it (TCP pushes back on the sender; nothing is dropped), so
        # a flood of messages that fail the MAC costs at most that much memory.
        self.socket.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        # A frame larger than this closes the connection that sent it, before it is
        # kept: far above any legitimate frame (MAX_FRAME_BYTES).
        if max_frame_bytes < 1:
            raise ValueError(f"max_frame_bytes must be positive, got {max_frame_bytes}")
        self.socket.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes)
        self.max_frame_bytes = max_frame_bytes
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
        self._pending: PendingSessions[Session] = PendingSessions()   # ROUTER: by identity
        self._nonce = b""                 # DEALER: the nonce of our HELLO
        self._hello_sent = 0.0            # DEALER: when our HELLO last left (monotonic)
        self._link_up = False             # DEALER: its ZeroMQ connection is made
        self._wish = False                # DEALER: whether our HELLO asked for encryption
        self._held: list[tuple[Kind, Any]] = []   # DEALER: sent before the session existed
        self._confirmed = False           # DEALER: a message from the peer has checked
        # DEALER: what to send first under a new session after a reconnection (the
        # registration: a restarted head drops messages from unregistered peers).
        self.greeting: Callable[[], tuple[Kind, Any]] | None = None
        self._monitor: Any = None         # DEALER: its connection's events
        self._handshakes = 0              # DEALER: ZeroMQ connections made so far
        self._old_session: Session | None = None   # DEALER: before the last reconnection
        self.reconnections = 0            # DEALER: new sessions after the first
        self.throttle = FailureThrottle()
        self.pacer = RejectPacer()
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
        """Connect to ``address`` (ZeroMQ connects in the background, and reconnects) and
        start the handshake: messages sent before it ends wait here."""
        self._monitor = self.socket.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        self.socket.connect(address)
        self._nonce = os.urandom(NONCE_BYTES)
        self._wish = encryption.wants(_address_host(address))
        self._send_hello()

    def _send_hello(self) -> None:
        """DEALER: say HELLO with our current nonce (again, if it was said already)."""
        self._hello_sent = time.monotonic()
        self.send_frames(encode_unsigned(Kind.HELLO, self._nonce + wish_byte(self._wish)))

    def check_link(self) -> bool:
        """DEALER, its owner's thread, each turn: read the connection's events. Broken:
        hold messages from now on. Made again: a new handshake (the head may be a new
        one, which knows no session). True when a new handshake started. No CHALLENGE
        for HELLO_RESEND_SECONDS: the same HELLO again (it or its answer was lost)."""
        monitor = self._monitor
        if monitor is None:
            return False
        started = False
        if monitor.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            started = self._link_events(monitor)
        if self._link_up and not self.ready and self._nonce \
                and time.monotonic() - self._hello_sent >= HELLO_RESEND_SECONDS:
            # The same nonce: a late CHALLENGE for the first HELLO still fits. Only on
            # a live connection: while the head is away, one HELLO waits, not many.
            self._send_hello()
        return started

    def _link_events(self, monitor: Any) -> bool:
        """check_link's reading of the monitor; True when a new handshake started."""
        from zmq.utils.monitor import recv_monitor_message
        started = False
        while monitor.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            event = recv_monitor_message(monitor, zmq.NOBLOCK)["event"]
            if event == zmq.EVENT_DISCONNECTED:
                self._link_up = False
                session = self.sessions.pop(None, None)
                if session is not None:
                    self._old_session = session
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._link_up = True
                self._handshakes += 1
                if self._handshakes == 1:
                    self._hello_sent = time.monotonic()   # the waiting HELLO leaves now
                else:
                    self.sessions.pop(None, None)
                    self._nonce = os.urandom(NONCE_BYTES)
                    self._send_hello()
                    started = True
        return started

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
        if len(data) + _FRAME_SLACK > self.max_frame_bytes:
            # The peer would cut the connection at this frame and lose what follows it.
            self.dropped["message too large"] += 1
            log.error("not sent: a %s message whose pickled body is %d bytes, over the "
                      "%d-byte frame limit (large values belong in the object store: "
                      "rayipy.put)", kind.name, len(data), self.max_frame_bytes)
            return False
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
        started = time.perf_counter()
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
                if not self.is_router and self._old_session is not None:
                    # Sent by the head before our reconnection, under the old session.
                    old = self._old_session
                    message, frames = decode_frames(old.receive, frames, session=old)
                    return sender, message, frames
                entry = self._pending.get(sender) if sender is not None else None
                if not self.is_router or sender is None or entry is None:
                    raise
                # Perhaps the peer's first message under a new session (a REGISTER).
                pending = entry.session
                message, frames = decode_frames(pending.receive, frames, session=pending)
                self._pending.take(sender)
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
            now = time.perf_counter()   # rejecting a flood may not take the whole core
            rest = self.pacer.rejected(now - started, now)
            if rest:
                time.sleep(rest)
            return sender, None, frames

    def _handshake(self, sender: bytes | None, kind: Kind, frames: list[Frame],
                   received: list[Any]) -> Message | None:
        """A HELLO (ROUTER), CHALLENGE or AUTH_FAILED (DEALER): unsigned, raw payloads."""
        payload = bytes(frames[2]) if len(frames) >= 3 else b""
        if self.is_router and kind is Kind.HELLO and sender is not None:
            if len(payload) != NONCE_BYTES + 1:
                raise BadMessage("bad hello", kind)
            peer_nonce = payload[:NONCE_BYTES]
            now = time.monotonic()
            answer = self._pending.on_hello(sender, peer_nonce, now)
            if answer is HelloAnswer.IGNORE:   # answered a moment ago: nothing queued
                self.dropped["repeated hello"] += 1
                return None
            if answer is HelloAnswer.AGAIN:    # the same HELLO: the same CHALLENGE
                entry = self._pending.get(sender)
                assert entry is not None
                self.send_frames(encode_unsigned(Kind.CHALLENGE, entry.challenge), sender)
                return None
            nonce = os.urandom(NONCE_BYTES)
            address = _peer_address(received)
            try:
                wish = encryption.wants(address)   # "?" (unknown) counts as remote
                encrypt = wish or parse_wish(payload[NONCE_BYTES:])
                session = self.signer.session(nonce, peer_nonce, sender, encrypt)
            except ValueError as e:
                raise BadMessage(f"bad hello: {e}", kind) from None
            challenge = nonce + self.salt + wish_byte(wish)
            self._pending.add(sender, session, address, peer_nonce, challenge, now)
            self.send_frames(encode_unsigned(Kind.CHALLENGE, challenge), sender)
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
            if self._handshakes > 1:
                self.reconnections += 1
                if self.greeting is not None:
                    held.insert(0, self.greeting())
            for held_kind, body in held:
                self.send(held_kind, body)
            return None
        if not self.is_router and kind is Kind.CHALLENGE and self.ready:
            # The answer to a HELLO we said again (check_link) while the first one's
            # was on its way: the head sent the same CHALLENGE, or answers a HELLO
            # under a session it will replace only once a message checks under it.
            self.dropped["repeated challenge"] += 1
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
        if self._monitor is not None:
            self.socket.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None
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
        hello = encode_unsigned(Kind.HELLO, os.urandom(NONCE_BYTES) + b"\0")
        deadline = time.monotonic() + timeout
        next_hello = 0.0
        while (left := deadline - (now := time.monotonic())) > 0:
            if now >= next_hello:   # again after each wait: it, or its answer, may be lost
                sock.send_multipart(hello)
                next_hello = now + HELLO_RESEND_SECONDS
            if not sock.poll(int(min(left, next_hello - now) * 1000) + 1):
                continue
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
