"""Signed messages over a plain socket (TCP, or Unix on one machine): the transport of
direct calls and of data ports.

Actor calls and tasks on a lease go from a caller straight to a worker and back
(``rayipy/node/direct.py``, ``direct_calls.py``), and large values from their holder to
who needs them (``rayipy/node/data_port.py``). On ZeroMQ each message also passes
through a ZeroMQ I/O thread at both ends: two more thread wake-ups per hop, about half
of a short call's round trip. On a plain socket the thread that sends writes to the
kernel and the thread that waits reads from it.

The messages are the ones ``wire.py`` describes: the same frames, signed with
HMAC-SHA256 and a session key, numbered, and nothing is unpickled before the signature
and the number check. A connection starts with the handshake: each end, the one that
connects and the one that accepts, first writes one ``HELLO`` record::

    magic      4 bytes, b"RYPH"
    version    2 bytes, big-endian: the protocol version
    nonce      32 random bytes, fresh for this connection
    wish       1 byte: 1 if this end asks for encryption (``transport/encryption.py``:
               by default, a TCP connection to another machine), else 0

and derives the session from both nonces and the agreed encryption (either end's wish;
``Signer.session``, no binding: the nonces are this connection's). Messages sent before
the peer's record has come wait, unsigned, in the connection (``_held``), and are
signed and written once it comes. A record with another magic or version closes the
connection. Each message then carries the next
sequence number of its direction in its header; a number that is not above the last one
is refused (a replay), and so is a message recorded on another connection (other
nonces: another key). The first message that checks *authenticates* the connection;
until then it reads into a small buffer (``PRE_AUTH_READ_BYTES``), takes no message
announcing more than ``PRE_AUTH_MESSAGE_BYTES`` (the connection is closed at the
lengths, before the frames are read: a stranger cannot make it hold a large message
whose MAC it will never pass), a listener closes it after ``PRE_AUTH_SECONDS``, and a
process keeps at most ``MAX_UNAUTHENTICATED`` of them. So that the first message
proves the key whatever its size, each end's first message once the session exists is
a signed ``HELLO`` with an empty body (``None``), which ``receive`` consumes.

On the stream one message is::

    count      4 bytes, big-endian: the number n of frames (header, body, buffers)
    lengths    n x 8 bytes, big-endian
    frames     the n frames, back to back
    signature  32 bytes, HMAC-SHA256 (the session key of this direction) over every
               byte before it: count, lengths, and
               each frame's signed form (the frame, or the keyed BLAKE3 digest of a
               frame of more than 64 KiB, as in ``wire.py``)

On an encrypted session the frames after the header are ciphertext (AES-256-CTR,
``protocol/cipher.py``) and the signature is over the ciphertext (encrypt-then-MAC).
The sender encrypts a large frame 1 MiB piece by piece, just before signing and
writing each piece; the receiver decrypts each piece in place in its landing buffer
right after feeding it to the MAC, while it is in the cache, and unpickles only after
the signature and the sequence number have checked.

The lengths are inside the signature, so frames cannot be re-cut. A small message is
one contiguous piece, signed and checked in one pass. The signature comes last so that
neither side makes a separate pass over a large message: the receiver computes the MAC
as the bytes arrive, while they are in the cache, and the sender signs each 1 MiB piece
just before it is written (by the sending thread, or by the owner's thread when the
socket was full).

Most messages (calls, their answers) are small: at most 64 KiB of pickle and buffers.
They have a fast path, with the same bytes as the general one. ``pack_small`` lays one
out in one piece, signs it with one MAC call (``Signer.mac``), and the connection writes
it with one call. ``take_small`` reads one without buffers (the commonest): the count,
lengths and header with one ``struct`` unpack, the signature checked with one MAC call,
then the body unpickled. Anything else (buffers, a frame signed by its digest, a message
cut between reads) goes through ``StreamReader``.

A stream cannot skip a bad message and find the next one: a connection that sends a
bad one (a bad signature, absurd lengths) is closed. Memory is claimed only as bytes
arrive: a large frame is read straight into a buffer that is not zeroed first (landing
memory used again when nothing refers to it, ``protocol/landing.py``), so a peer that
announces a huge frame and does not send it costs address space, not memory.

Sending never waits unless asked to: what the kernel does not take at once waits in
the connection and leaves when the owner's poll says the socket is writable.
"""

from __future__ import annotations

import collections
import errno
import hmac
import logging
import os
import pickle
import select
import socket
import struct
import threading
import time
import weakref
from typing import Any, Protocol, Sequence, Union

from rayipy.protocol import landing
from rayipy.protocol.cipher import PIECE_BYTES as CIPHER_PIECE_BYTES
from rayipy.protocol.cipher import FrameCipher
from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import (DIGESTED_FRAME_BYTES, HEADER, KINDS, MAGIC, NONCE_BYTES,
                                  PROTOCOL_VERSION, SIGNATURE_BYTES, BadMessage, Frame, Message,
                                  Session, Signer, decode, seal_frames)
from rayipy.transport import encryption
from rayipy.transport.throttle import FailureThrottle

log = logging.getLogger(__name__)

MAX_FRAMES = 4096
MAX_MESSAGE_BYTES = 1 << 40
SMALL_FRAME_BYTES = DIGESTED_FRAME_BYTES   # larger frames are read straight into their own
                                           # buffer, and enter the MAC as their digest
READ_BYTES = 256 * 1024            # one read of small messages, once authenticated
PRE_AUTH_READ_BYTES = 4 * 1024     # ... and before: an idle stranger costs little memory
PRE_AUTH_MESSAGE_BYTES = 4 * 1024  # the largest message taken before one has checked
PRE_AUTH_SECONDS = 10.0            # an accepted connection must authenticate within this
MAX_UNAUTHENTICATED = 256          # accepted connections per process not authenticated yet
HELLO = struct.Struct(f"!4sH{NONCE_BYTES}sB")   # the handshake record (module docstring)
HELLO_MAGIC = b"RYPH"
SEND_TIMEOUT_SECONDS = 30          # a blocking send that moves nothing this long gives up
SIGN_AS_SENT_BYTES = 2 * 2**20     # messages larger than this are signed piece by piece
PIECE_BYTES = CIPHER_PIECE_BYTES   # 1 MiB: signed (and encrypted) as written
UNIX_BUFFER_BYTES = 4 * 2**20     # a Unix socket's send buffer (see _widen)
_COUNT = struct.Struct("!I")
_LENGTHS = [struct.Struct(f"!{n}Q") for n in range(16)]
#: The first bytes of a message of two frames: count, lengths, and the header frame
#: (magic, version, kind, buffers), as one struct for the fast path.
_SMALL_HEAD = struct.Struct("!IQQ4sHHIQ")
_IOV_MAX = 512                     # buffers per sendmsg (the kernel allows 1024)
_PROOF = pickle.dumps(None, protocol=5)   # the body of the signed HELLO each end sends first

#: Accepted connections of this process whose peer has not authenticated yet (any
#: listener's): a cap on what strangers can hold (MAX_UNAUTHENTICATED).
_unauthenticated: "weakref.WeakSet[StreamConnection]" = weakref.WeakSet()

#: This process's refused connections, per peer address: a listener refuses new
#: connections from an address past its rate, and the log gets one line per interval.
FAILURES = FailureThrottle()
_failures_lock = threading.Lock()   # listeners run on several threads (inbox, data port, store)


def note_failure(address: str, reason: str) -> None:
    """Count a connection refused for ``reason`` (a bad message, no handshake in time)."""
    with _failures_lock:
        now = time.monotonic()
        FAILURES.failed(address, reason.split(":")[0], now)
        line = FAILURES.report(now)
    if line is not None:
        log.warning("plain-socket connections: %s", line)


class _Hasher(Protocol):
    """A MAC or digest fed piece by piece: ``Signer.start()`` or ``Signer.frame_hasher()``."""
    def update(self, data: Frame, /) -> object: ...
    def digest(self) -> bytes: ...


#: How to encrypt a piece as it is written: (the session's seal, sequence number, frame
#: index, offset of the piece in its frame).
_Seal = tuple[FrameCipher, int, int, int]

#: What waits to be written (see StreamConnection._write): bytes ready to go, or bytes
#: to sign first, as (piece, the hasher to feed it to, the MAC to feed that hasher's
#: digest to after a large frame's last piece, how to encrypt it first or None), or
#: (None, MAC, None, None): the MAC's digest, which is the message's signature.
_Outgoing = Union[memoryview, tuple[Union[memoryview, None], _Hasher, Union[_Hasher, None],
                                    Union[_Seal, None]]]


class StreamReader:
    """Cuts a byte stream into messages and checks their signatures. Pure: bytes in,
    messages' frames out.

    ``feed`` takes bytes read into a shared buffer; while a large frame is under way,
    ``direct_target`` is the part of it still to fill, for the next read to go straight
    there, and ``filled`` says how much of it that read filled. The MAC is computed as
    the bytes come, while they are still in the cache, so a large message is checked
    by the time its last byte is in.
    """

    def __init__(self, signer: Signer, cipher: FrameCipher | None = None,
                 limit: int = MAX_MESSAGE_BYTES) -> None:
        self._signer = signer
        #: The largest message (its frames' bytes) taken; a larger announced length is
        #: BadMessage at once. Raised to MAX_MESSAGE_BYTES by the first good signature.
        self.limit = limit
        self._cipher = cipher                # the session's ``open``: decrypts as bytes come
        self._seq = 0                        # the message's, from its header (the nonce)
        self._big_opened = 0                 # bytes of the large frame decrypted so far
        self._buffer = bytearray()           # bytes not parsed yet
        self._lengths: tuple[int, ...] | None = None
        self._frames: list[Frame] = []
        self._mac = signer.start()           # over this message so far
        self._big: memoryview | None = None   # the large frame being filled in place
        self._big_hasher = signer.frame_hasher()   # its digest so far
        self._big_filled = 0
        self._done: list[tuple[list[Frame], bool]] = []   # ([signature, *frames], signature good)

    def feed(self, data: memoryview | bytes) -> None:
        """Bytes read from the stream, in order."""
        if not self._buffer and self._lengths is None:
            data = data[self._whole_messages(data):]   # the common case: no copying
            if not data:
                return
        self._buffer += data
        self._parse()

    def idle(self) -> bool:
        """Between messages: the next byte fed starts one."""
        return not self._buffer and self._lengths is None

    def direct_target(self) -> memoryview | None:
        """Where the next read should go: the rest of a large frame, or None (anywhere)."""
        if self._big is None:
            return None
        return memoryview(self._big).cast("B")[self._big_filled:]

    def filled(self, nbytes: int) -> None:
        """The last read put ``nbytes`` into ``direct_target()``."""
        big = self._big
        if big is None:
            raise ValueError("filled() without a direct_target()")
        view = memoryview(big).cast("B")
        if nbytes:
            self._big_hasher.update(view[self._big_filled:self._big_filled + nbytes])
        self._big_filled += nbytes
        cipher = self._cipher
        if cipher is not None and self._frames:   # whole pieces, while still in the cache
            opened, filled = self._big_opened, self._big_filled
            end = filled if filled == view.nbytes else filled - filled % CIPHER_PIECE_BYTES
            if end > opened:
                cipher.apply_in_place(self._seq, len(self._frames) - 1, opened, view[opened:end])
                self._big_opened = end
        if self._big_filled == len(big):
            self._mac.update(self._big_hasher.digest())
            self._frames.append(big)
            self._big = None
            self._parse()

    def take(self) -> list[tuple[list[Frame], bool]]:
        """The messages completed so far, as ``([signature, header, body, *buffers],
        whether the signature is right)``; with a cipher, body and buffers are
        decrypted already (use them only if the signature is right)."""
        done, self._done = self._done, []
        return done

    def _whole_messages(self, data: memoryview | bytes) -> int:
        """Take the complete small messages at the start of ``data`` in one piece each
        (one copy, one MAC update); returns how many bytes they used."""
        used = 0
        while True:
            lengths = _lengths(data, used, self.limit)
            if lengths is None:
                return used
            body_start = used + _COUNT.size + 8 * len(lengths)
            frames_end = body_start + sum(lengths)
            if frames_end + SIGNATURE_BYTES > len(data) or frames_end - used > SMALL_FRAME_BYTES:
                return used
            message = bytes(data[used:frames_end])
            signature = bytes(data[frames_end:frames_end + SIGNATURE_BYTES])
            view = memoryview(message)
            frames: list[Frame] = [signature]
            at = body_start - used
            for size in lengths:
                frames.append(view[at:at + size])
                at += size
            good = hmac.compare_digest(signature, self._signer.mac(message))
            if good:
                self.limit = MAX_MESSAGE_BYTES   # the peer holds the key
            if self._cipher is not None:
                frames[2:] = seal_frames(self._cipher, _header_seq(frames[1]), frames[2:])
            self._done.append((frames, good))
            used = frames_end + SIGNATURE_BYTES

    def _parse(self) -> None:
        buffer = self._buffer
        while self._big is None:
            if self._lengths is None:
                lengths = _lengths(buffer, 0, self.limit)
                if lengths is None:
                    return
                end = _COUNT.size + 8 * len(lengths)
                self._mac = self._signer.start()
                self._mac.update(buffer[:end])
                del buffer[:end]
                self._lengths = lengths
                self._frames = []
            elif len(self._frames) < len(self._lengths):
                size = self._lengths[len(self._frames)]
                if size <= SMALL_FRAME_BYTES:
                    if len(buffer) < size:
                        return
                    frame: Frame = bytes(buffer[:size])
                    del buffer[:size]
                    self._mac.update(frame)
                    if not self._frames:
                        self._seq = _header_seq(frame)
                    elif self._cipher is not None:
                        frame = self._cipher.apply(self._seq, len(self._frames) - 1, frame)
                    self._frames.append(frame)
                    continue
                try:
                    self._big, self._big_filled = landing.buffer(size), 0
                except (MemoryError, ValueError, OSError):   # OSError: mmap's ENOMEM
                    raise BadMessage(f"no memory for a frame of {size} bytes") from None
                self._big_hasher = self._signer.frame_hasher()
                self._big_opened = 0
                have = min(size, len(buffer))
                memoryview(self._big).cast("B")[:have] = buffer[:have]
                del buffer[:have]
                self.filled(have)
                return
            else:
                if len(buffer) < SIGNATURE_BYTES:
                    return
                signature = bytes(buffer[:SIGNATURE_BYTES])
                del buffer[:SIGNATURE_BYTES]
                good = hmac.compare_digest(signature, self._mac.digest())
                if good:
                    self.limit = MAX_MESSAGE_BYTES
                self._done.append(([signature, *self._frames], good))
                self._lengths = None
                self._frames = []


def _header_seq(header: Frame) -> int:
    """The sequence number in a header frame (0 if it is not one: such a message fails
    its checks later, and what it decrypted to is never used)."""
    view = memoryview(header)
    if view.nbytes != HEADER.size:
        return 0
    seq: int = HEADER.unpack(view)[4]
    return seq


def _lengths(data: memoryview | bytes | bytearray, at: int,
             limit: int = MAX_MESSAGE_BYTES) -> tuple[int, ...] | None:
    """The frame lengths of the message starting at ``at``, or None until they are all
    there; BadMessage for a count or size no honest sender would use, or a size over
    ``limit`` (a peer not authenticated yet)."""
    if len(data) - at < _COUNT.size:
        return None
    (count,) = _COUNT.unpack_from(data, at)
    if not 2 <= count <= MAX_FRAMES:
        raise BadMessage(f"a message of {count} frames")
    if len(data) - at < _COUNT.size + 8 * count:
        return None
    lengths = _LENGTHS[count].unpack_from(data, at + _COUNT.size) if count < len(_LENGTHS) \
        else struct.unpack_from(f"!{count}Q", data, at + _COUNT.size)
    total = sum(lengths)
    if total > limit:
        if limit < MAX_MESSAGE_BYTES:
            raise BadMessage(f"a message of {total} bytes before authentication "
                             f"(at most {limit})")
        raise BadMessage(f"a message of {total} bytes")
    return lengths


def pack_message(signer: Signer, kind: Kind, body: Any, seq: int = 0,
                 cipher: FrameCipher | None = None) -> list[Frame]:
    """The buffers to write for one message, in order (large buffers are not copied
    unless encrypted), by the general path. A message without out-of-band buffers is
    one contiguous piece."""
    data, buffers = _pickled(body)
    prefix, frames = _frames(kind, data, buffers, seq)
    return _signed(signer, prefix, [frames[0], *seal_frames(cipher, seq, frames[1:])])


def pack_hello(nonce: bytes, wish: bool = False) -> bytes:
    """The handshake record a connection starts with (module docstring)."""
    return HELLO.pack(HELLO_MAGIC, PROTOCOL_VERSION, nonce, 1 if wish else 0)


def pack_small(signer: Signer, kind: Kind, data: bytes,
               buffers: Sequence[pickle.PickleBuffer] = (), seq: int = 0,
               cipher: FrameCipher | None = None) -> bytes | None:
    """The bytes of one message whose body pickled to ``data`` and ``buffers``, in one
    piece signed with one MAC call, when it is small: the pickle and the buffers
    together at most SMALL_FRAME_BYTES (none of them signed by its digest), and at
    most 13 buffers; encrypted first with ``cipher`` (the session's seal) when there
    is one. None when it is not small. The fast path of ``pack_message``, which gives
    the same bytes."""
    if not buffers:
        if len(data) > SMALL_FRAME_BYTES:
            return None
        head = _SMALL_HEAD.pack(2, HEADER.size, len(data), MAGIC, PROTOCOL_VERSION, kind, 0, seq)
        message = head + (data if cipher is None else cipher.apply(seq, 0, data))
        return message + signer.mac(message)
    count = 2 + len(buffers)
    if count >= len(_LENGTHS):
        return None
    views = [b.raw() for b in buffers]
    sizes = [v.nbytes for v in views]
    if len(data) + sum(sizes) > SMALL_FRAME_BYTES:
        return None
    message = b"".join([_COUNT.pack(count), _LENGTHS[count].pack(HEADER.size, len(data), *sizes),
                        HEADER.pack(MAGIC, PROTOCOL_VERSION, kind, len(buffers), seq),
                        *seal_frames(cipher, seq, [data, *views])])
    return message + signer.mac(message)


def take_small(signer: Signer, data: memoryview, end: int, into: list[Message],
               session: Session | None = None) -> int:
    """Check and unpickle the small messages at the start of ``data[:end]``, into
    ``into``, up to the first that is not complete or not of the common shape (two
    frames, no buffers, a body of at most SMALL_FRAME_BYTES, a known kind); returns
    how many bytes they used, the rest being for ``StreamReader``. The fast path of
    StreamReader and ``decode``, with their verdicts; a bad signature or (with
    ``session``) a sequence number not above the last raises BadMessage, before
    anything is decrypted (with the session's ``open``) or unpickled."""
    at = 0
    while end - at >= _SMALL_HEAD.size + SIGNATURE_BYTES:
        count, header_bytes, body_bytes, magic, version, kind_no, nbuf, seq = \
            _SMALL_HEAD.unpack_from(data, at)
        body_end = at + _SMALL_HEAD.size + body_bytes
        if (count != 2 or header_bytes != HEADER.size or body_bytes > SMALL_FRAME_BYTES
                or body_end + SIGNATURE_BYTES > end):
            return at
        if not hmac.compare_digest(signer.mac(data[at:body_end]),
                                   data[body_end:body_end + SIGNATURE_BYTES]):
            raise BadMessage("bad signature")
        kind = KINDS.get(kind_no)
        if magic != MAGIC or nbuf or kind is None or kind is Kind.AUTH_FAILED:
            return at   # signed but odd: the general path says what it is
        if session is not None and not session.accept(seq):
            raise BadMessage("replayed or out of order", kind)
        pickled: Frame = data[at + _SMALL_HEAD.size:body_end]
        if session is not None and session.open is not None:
            pickled = session.open.apply(seq, 0, pickled)
        try:
            body = pickle.loads(pickled)
        except Exception as e:  # a signed but undecodable body: a peer bug, as in decode
            raise BadMessage(f"body does not unpickle: {e!r}", kind) from None
        into.append(Message(kind, body, version))
        at = body_end + SIGNATURE_BYTES
    return at


def _signed(signer: Signer, prefix: bytes, frames: Sequence[Frame]) -> list[Frame]:
    if len(frames) == 2 and memoryview(frames[1]).nbytes <= SMALL_FRAME_BYTES:
        message = b"".join((prefix, frames[0], frames[1]))
        return [message + signer.mac(message)]
    mac = signer.start()
    mac.update(prefix)
    for frame in frames:
        mac.update(signer.signed_form(frame))
    return [prefix, *frames, mac.digest()]


def _pickled(body: Any) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """The body's pickle stream and its out-of-band buffers (``wire.pickle_body``
    without the raw views, which ``_frames`` makes only when there are buffers)."""
    buffers: list[pickle.PickleBuffer] = []
    return pickle.dumps(body, protocol=5, buffer_callback=buffers.append), buffers


def _frames(kind: Kind, data: bytes, buffers: Sequence[pickle.PickleBuffer], seq: int = 0
            ) -> tuple[bytes, list[bytes | memoryview]]:
    header = HEADER.pack(MAGIC, PROTOCOL_VERSION, kind, len(buffers), seq)
    if not buffers:
        return _COUNT.pack(2) + _LENGTHS[2].pack(len(header), len(data)), [header, data]
    frames: list[bytes | memoryview] = [header, data, *(b.raw() for b in buffers)]
    count = len(frames)
    lengths = [memoryview(f).nbytes for f in frames]
    prefix = _COUNT.pack(count) + (_LENGTHS[count].pack(*lengths) if count < len(_LENGTHS)
                                   else struct.pack(f"!{count}Q", *lengths))
    return prefix, frames


class StreamConnection:
    """One TCP connection carrying signed messages both ways.

    Any thread may ``send`` (under the connection's lock, so messages never interleave).
    One thread, the owner, polls it, calls ``on_writable`` and closes it. ``receive`` is
    called by whichever thread holds ``claim``: the owner, or a thread that waits for
    an answer and reads it itself (``rayipy/node/direct_calls.py``). A failure on either
    side only marks it ``closed``.

    ``signer`` holds the cluster key; the messages are signed with the session's keys,
    made once the peer's HELLO record has come (``receive``, ``wait_ready``).
    ``peer_ip``: the address connected to (for a connection still connecting); by
    default the socket's peer, which decides whether we ask for encryption.
    """

    def __init__(self, sock: socket.socket, signer: Signer, connecting: bool = False,
                 peer_ip: str | None = None) -> None:
        self.sock = sock
        self.signer = signer
        if peer_ip is None and sock.family != socket.AF_UNIX:
            peer_ip = str(sock.getpeername()[0])
        self.wish = encryption.wants(peer_ip)   # ask for encryption in our HELLO
        self.session: Session | None = None      # once the peer's HELLO came
        self.authenticated = False               # a message of the peer's has checked
        self._nonce = os.urandom(NONCE_BYTES)
        self._peer_hello = bytearray()
        self._held: list[tuple[Kind, bytes, Sequence[pickle.PickleBuffer]]] = []
        self.reader = StreamReader(signer, limit=PRE_AUTH_MESSAGE_BYTES)   # see _start_session
        self._expect_proof = True                # the peer's signed HELLO is still to come
        self.lock = threading.Lock()
        self.claim = threading.Lock()    # held by the thread reading it
        self.deferred = False            # the owner left reading it to the claim's holder
        self.connecting = connecting
        self.closed = False
        self.error = ""
        self.lost_output = False         # closed with bytes it had not written, or given
                                         # a message after it had closed
        self.dropped: collections.Counter[str] = collections.Counter()
        self._out: collections.deque[_Outgoing] = collections.deque()   # see _write
        self._out.append(memoryview(pack_hello(self._nonce, self.wish)))   # first, always
        # Small until the peer has authenticated: 3,000 idle strangers once took 785 MB.
        self._staging = bytearray(PRE_AUTH_READ_BYTES)
        self._staging_view = memoryview(self._staging)   # messages are unpickled from it
        if not connecting:
            self._ready()
            with self.lock:
                self._write(False)

    @classmethod
    def connect(cls, address: str, signer: Signer) -> "StreamConnection":
        """Start connecting to ``tcp://host:port`` without waiting: messages sent meanwhile
        leave once the owner sees the socket writable (``on_writable``).

        A listener on this machine (in this network namespace) is reached through its
        Unix socket instead, which the kernel serves in fewer steps than loopback TCP."""
        host, port = parse_tcp_address(address)
        local = _connect_local(host, port)
        if local is not None:
            return cls(local, signer)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        connection = cls(sock, signer, connecting=True, peer_ip=host)
        error = sock.connect_ex((host, port))
        if error not in (0, errno.EINPROGRESS):
            connection._fail(f"cannot connect to {address}: {errno.errorcode.get(error, error)}")
        return connection

    def _ready(self) -> None:
        """Connected: reads and writes are non-blocking by flag (MSG_DONTWAIT), blocking
        sends give up after SEND_TIMEOUT_SECONDS without progress."""
        self.connecting = False
        self.sock.setblocking(True)
        if self.sock.family == socket.AF_UNIX:
            _widen(self.sock)
        else:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                             struct.pack("ll", SEND_TIMEOUT_SECONDS, 0))

    def fileno(self) -> int:
        return self.sock.fileno()

    def wants_write(self) -> bool:
        """Bytes wait for the socket to take them (poll it for writing)."""
        return self.connecting or bool(self._out)

    def unsent(self) -> bool:
        """Something sent on this connection has not been written yet: bytes waiting,
        or messages held until the handshake."""
        return self.connecting or bool(self._out) or bool(self._held)

    # -- sending (any thread) -------------------------------------------------------------
    def send(self, kind: Kind, body: Any, block: bool = False) -> bool:
        """Queue one message and write what the kernel takes now (everything, with
        ``block``, once the session exists; before, it waits for the peer's HELLO).
        False when the connection is closed."""
        data, buffers = _pickled(body)   # pickled outside the lock: others may send
        with self.lock:
            if self.closed:
                self.lost_output = True
                return False
            if self.session is None:
                self._held.append((kind, data, buffers))
                return True
            return self._queue(kind, data, buffers, block)

    def _queue(self, kind: Kind, data: bytes, buffers: Sequence[pickle.PickleBuffer],
               block: bool) -> bool:
        """Sign one message with the session's next number and write it (the lock held:
        numbers must reach the stream in order)."""
        session = self.session
        assert session is not None
        seq = session.next_seq()
        wire = pack_small(session.send, kind, data, buffers, seq, session.seal)
        if wire is None:
            return self._send_frames(*_frames(kind, data, buffers, seq), seq, block)
        if self._out or self.connecting:   # behind what waits
            self._out.append(memoryview(wire))
            if not self.connecting:
                self._write(block)
            return not self.closed
        try:
            sent = self.sock.send(wire, 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            if block:
                self._fail(f"the peer took nothing for {SEND_TIMEOUT_SECONDS} s")
                return False
            self._out.append(memoryview(wire))   # leaves when the socket is writable
            return True
        except OSError as e:
            self._fail(f"send failed: {e}")
            return False
        if sent < len(wire):
            self._out.append(memoryview(wire)[sent:])
            self._write(block)
        return not self.closed

    def _send_frames(self, prefix: bytes, frames: Sequence[bytes | memoryview], seq: int,
                     block: bool) -> bool:
        """``send`` by the general path: a message that is not small (``pack_small``);
        the lock held."""
        session = self.session
        assert session is not None
        if sum(memoryview(f).nbytes for f in frames) > SIGN_AS_SENT_BYTES:
            self._queue_signed_as_sent(prefix, frames, seq)
        else:
            sealed = [frames[0], *seal_frames(session.seal, seq, frames[1:])]
            self._out.extend(memoryview(p).cast("B")
                             for p in _signed(session.send, prefix, sealed))
        if not self.connecting:
            self._write(block)
        return not self.closed

    def _queue_signed_as_sent(self, prefix: bytes, frames: Sequence[bytes | memoryview],
                              seq: int) -> None:
        """Queue a large message in pieces that are signed only as each is written
        (``_write``), so that neither the sender (it returns at once) nor the receiver
        (it checks one piece while the next is signed) waits for a pass over all of it;
        the signature, computed last, is the message's last bytes. On an encrypted
        session each piece is encrypted just before it is signed."""
        assert self.session is not None
        signer = self.session.send
        seal = self.session.seal
        mac = signer.start()
        mac.update(prefix)
        out = self._out
        out.append(memoryview(prefix))
        for index, frame in enumerate(frames):   # the header (index 0) stays in clear
            view = memoryview(frame).cast("B")
            if view.nbytes <= SMALL_FRAME_BYTES:
                out.append((view, mac, None,
                            None if seal is None or index == 0 else (seal, seq, index - 1, 0)))
                continue
            hasher = signer.frame_hasher()
            for start in range(0, view.nbytes, PIECE_BYTES):
                last = start + PIECE_BYTES >= view.nbytes
                out.append((view[start:start + PIECE_BYTES], hasher, mac if last else None,
                            None if seal is None else (seal, seq, index - 1, start)))
        out.append((None, mac, None, None))   # becomes the signature when its turn comes

    def on_writable(self) -> None:
        """Owner: the poll said writable; finish connecting, then write what waits."""
        with self.lock:
            if self.closed:
                return
            if self.connecting:
                error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    self._fail(f"cannot connect: {errno.errorcode.get(error, error)}")
                    return
                self._ready()
            self._write(False)

    def _write(self, block: bool) -> None:
        """Write what waits, in order. ``_out`` holds bytes ready to go; (piece, into,
        then, seal) to encrypt first with ``seal`` (if not None), add to ``into`` (the
        MAC, or a large frame's hasher), and after a large frame's last piece its digest
        to ``then``, the MAC; or (None, mac, None, None) for the MAC's digest. One such
        is taken into each write, at its start, so encrypting and signing keep pace with
        writing."""
        out = self._out
        flags = 0 if block else socket.MSG_DONTWAIT
        while out:
            batch: list[memoryview] = []
            for index in range(min(len(out), _IOV_MAX)):
                entry = out[index]
                if not isinstance(entry, memoryview):
                    if batch:
                        break
                    view, into, then, seal = entry
                    if view is None:
                        view = memoryview(into.digest())
                    else:
                        if seal is not None:
                            cipher, seq, frame, offset = seal
                            view = cipher.apply_piece(seq, frame, offset, view)
                        into.update(view)
                        if then is not None:
                            then.update(into.digest())
                    out[index] = entry = view
                batch.append(entry)
            try:
                sent = self.sock.sendmsg(batch, (), flags)
            except BlockingIOError:
                if block:
                    self._fail(f"the peer took nothing for {SEND_TIMEOUT_SECONDS} s")
                return
            except OSError as e:
                self._fail(f"send failed: {e}")
                return
            for view in batch:   # the first len(batch) entries of out, in order
                if sent >= view.nbytes:
                    sent -= view.nbytes
                    out.popleft()
                else:
                    out[0] = view[sent:]
                    break

    # -- receiving (the owner) ------------------------------------------------------------
    # -- the handshake (the reading thread) ---------------------------------------------
    def _read_hello(self) -> None:
        """Read what has come of the peer's HELLO record; at its end, start the session."""
        try:
            data = self.sock.recv(HELLO.size - len(self._peer_hello), socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError as e:
            self._fail(f"receive failed: {e}")
            return
        if not data:
            self._fail("closed by the peer")
            return
        self._peer_hello += data
        if len(self._peer_hello) == HELLO.size:
            self._start_session()

    def _start_session(self) -> None:
        magic, version, nonce, peer_wish = HELLO.unpack(self._peer_hello)
        why = ""
        if magic != HELLO_MAGIC:
            why = "not a rayipy handshake"
        elif peer_wish not in (0, 1) and version == PROTOCOL_VERSION:
            why = "bad encryption wish"
        elif version != PROTOCOL_VERSION:
            why = (f"protocol version mismatch: the peer speaks {version}, we speak "
                   f"{PROTOCOL_VERSION}; install the same rayipy version on every machine")
        if why:
            self.dropped["bad hello"] += 1
            note_failure(self.peer_address(), "bad hello")
            self._fail(f"bad handshake: {why}")
            return
        try:
            session = self.signer.session(self._nonce, nonce, encrypt=self.wish or peer_wish == 1)
        except ValueError as e:
            self.dropped["bad hello"] += 1
            self._fail(f"bad handshake: {e}")
            return
        with self.lock:
            self.session = session
            self.reader = StreamReader(session.receive, session.open,
                                       limit=PRE_AUTH_MESSAGE_BYTES)
            # First, whatever follows: a small message that proves we hold the key.
            self._queue(Kind.HELLO, _PROOF, (), False)
            held, self._held = self._held, []
            for kind, data, buffers in held:
                if self.closed:
                    self.lost_output = True
                    break
                self._queue(kind, data, buffers, False)

    def wait_ready(self, timeout: float) -> bool:
        """Block until the session exists (for a thread that owns this connection and
        reads it itself, as the store client does): our HELLO written, the peer's read.
        False (and closed) when it does not come in time."""
        deadline = time.monotonic() + timeout
        while self.session is None and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail(f"no handshake from the peer within {timeout:g} s")
                break
            writing = [self.sock] if self.wants_write() else []
            readable, writable, _ = select.select([self.sock], writing, [], left)
            if writable:
                self.on_writable()
            if readable:
                self._read_hello()
        return self.session is not None

    def peer_address(self) -> str:
        """The peer's IP address ("local" on a Unix socket), for counting failures."""
        try:
            peer = self.sock.getpeername()
        except OSError:
            return "?"
        return peer[0] if isinstance(peer, tuple) else "local"

    # -- receiving (the owner) ------------------------------------------------------------
    def receive(self) -> list[Message]:
        """Every message that can be read now. A bad one closes the connection."""
        messages: list[Message] = []
        if self.closed:
            return messages
        if self.session is None:
            self._read_hello()
            if self.session is None:
                return messages
        session = self.session
        reader = self.reader
        staging = self._staging_view
        while not self.closed:
            target = reader.direct_target()
            read_bytes = len(self._staging)
            try:
                if target is not None:
                    n = self.sock.recv_into(target, target.nbytes, socket.MSG_DONTWAIT)
                else:
                    n = self.sock.recv_into(self._staging, read_bytes, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as e:
                self._fail(f"receive failed: {e}")
                break
            if n == 0:
                self._fail("closed by the peer")
                break
            try:
                if target is not None:
                    reader.filled(n)
                else:   # the fast path only where a message starts
                    used = (take_small(session.receive, staging, n, messages, session)
                            if reader.idle() else 0)
                    if used and not self.authenticated:
                        self._authenticated()   # what follows may be large
                    if used < n:
                        reader.feed(staging[used:n])
                for frames, signed in reader.take():
                    if not signed:
                        raise BadMessage("bad signature")
                    messages.append(decode(session.receive, frames, signature_checked=True,
                                           session=session, decrypted=True))
            except BadMessage as e:
                self.dropped[e.reason.split(":")[0]] += 1
                note_failure(self.peer_address(), e.reason)
                self._fail(f"bad message: {e.reason}")
                break
            if messages and not self.authenticated:
                self._authenticated()
            staging = self._staging_view
            if target is None and n < read_bytes:
                break   # most likely all there was; the next poll says if more came
        if self._expect_proof and messages:
            self._expect_proof = False
            if messages[0].kind is Kind.HELLO:   # the handshake's, not the caller's
                del messages[0]
        return messages

    def _authenticated(self) -> None:
        """The peer's first message checked: it holds the key. Now its reads may take
        the full buffer, and it no longer counts against the listener's cap."""
        self.authenticated = True
        self.reader.limit = MAX_MESSAGE_BYTES
        self._staging = bytearray(READ_BYTES)
        self._staging_view = memoryview(self._staging)
        _unauthenticated.discard(self)

    def _fail(self, why: str) -> None:
        if not self.closed:
            self.closed = True
            self.error = why
            self.lost_output = bool(self._out) or bool(self._held)
            self._out.clear()
            self._held.clear()
            _unauthenticated.discard(self)

    def expire(self, why: str) -> None:
        """Close from the owner's side without taking the socket away from its poll:
        the poll wakes (end of stream), and the owner, seeing it closed, forgets it."""
        self._fail(why)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        self._fail("closed")
        self.sock.close()


def _local_name(host: str, port: int) -> bytes:
    """The abstract Unix socket name beside a TCP listener. Abstract names belong to
    the network namespace, like addresses, so a caller finds it exactly when it would
    reach the same listener by TCP on this machine; on another host it is not there."""
    return f"\0rayipy-direct-{host}-{port}".encode()


def _connect_local(host: str, port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if not _widen(sock):
        sock.close()   # large values would crawl: loopback TCP is faster then
        return None
    try:
        sock.connect(_local_name(host, port))
        return sock
    except OSError:   # not on this machine, or gone: TCP will say which
        sock.close()
        return None


def _widen(sock: socket.socket) -> bool:
    """Give a Unix socket a send buffer like loopback TCP's. The default (208 KiB) makes
    the sender wait on the receiver every 208 KiB: 0.6 GB/s here, against 3.5 GB/s with
    4 MiB. False when the system caps it too low (``net.core.wmem_max``)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UNIX_BUFFER_BYTES)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= UNIX_BUFFER_BYTES


class StreamListener:
    """Listening sockets for direct connections: TCP on ``ip``, for every host, and a
    Unix socket for callers on this machine; ``accept`` takes those waiting.

    Strangers are kept cheap: a connection accepted must authenticate (a message that
    checks) within ``PRE_AUTH_SECONDS`` or is closed; the process holds at most
    ``MAX_UNAUTHENTICATED`` such connections (more are closed at once); an address past
    its rate of failures (``FAILURES``) has its new connections closed at once."""

    def __init__(self, ip: str, signer: Signer) -> None:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.bind((ip, 0))
        port = tcp.getsockname()[1]
        self.socks = {tcp.fileno(): tcp}
        local = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            local.bind(_local_name(ip, port))
            self.socks[local.fileno()] = local
        except OSError as e:  # only slower: callers on this machine use TCP
            log.warning("no Unix socket beside the direct inbox %s:%s: %s", ip, port, e)
            local.close()
        for sock in self.socks.values():
            sock.listen(128)
            sock.setblocking(False)
        self.signer = signer
        host = f"[{ip}]" if ":" in ip else ip
        self.address = f"tcp://{host}:{port}"
        self._fresh: dict[StreamConnection, float] = {}   # accepted, not authenticated: when

    def filenos(self) -> list[int]:
        return list(self.socks)

    def accept(self, fd: int) -> list[StreamConnection]:
        """The connections waiting on listening socket ``fd`` (strangers refused, see
        the class docstring)."""
        accepted: list[StreamConnection] = []
        now = time.monotonic()
        self.sweep(now)
        while True:
            try:
                sock, peer = self.socks[fd].accept()
            except (BlockingIOError, InterruptedError):
                return accepted
            except OSError as e:  # out of file descriptors, say: try again on the next poll
                note_failure("?", f"cannot accept: {e.strerror}")   # once a while, not per try
                return accepted
            address = peer[0] if isinstance(peer, tuple) else "local"
            with _failures_lock:
                refused = FAILURES.over_limit(address, now)
            if refused or len(_unauthenticated) >= MAX_UNAUTHENTICATED:
                note_failure(address, "too many failures" if refused
                             else "too many unauthenticated connections")
                sock.close()
                continue
            connection = StreamConnection(sock, self.signer)
            _unauthenticated.add(connection)
            self._fresh[connection] = now
            accepted.append(connection)

    def sweep(self, now: float) -> None:
        """Close the connections accepted more than PRE_AUTH_SECONDS ago whose peer has
        not authenticated. Their owner's poll then sees them end (``receive`` finds
        them closed)."""
        for connection, since in list(self._fresh.items()):
            if connection.authenticated or connection.closed:
                del self._fresh[connection]
            elif now - since > PRE_AUTH_SECONDS:
                del self._fresh[connection]
                note_failure(connection.peer_address(), "no authentication in time")
                connection.expire(f"no authentication within {PRE_AUTH_SECONDS:g} s")

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()


def parse_tcp_address(address: str) -> tuple[str, int]:
    """``tcp://host:port`` (host may be ``[v6]``) -> (host, port)."""
    rest = address.removeprefix("tcp://")
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)
