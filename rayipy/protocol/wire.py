"""Wire format: framing, the per-connection handshake, encryption (AES-256-CTR) and
HMAC-SHA256 signing with session keys and sequence numbers, and the protocol version.

Protocol version 6. A message is a list of ZeroMQ frames (a ROUTER socket prepends the
peer's identity frame, which is routing, not message)::

    frame 0   signature   32 bytes, HMAC-SHA256(session key of this direction, for each
                          later frame: len (8 bytes, big-endian) + the frame's signed form)
    frame 1   header      20 bytes, struct "!4sHHIQ": magic b"RYPY", protocol version,
                          message kind (rayipy.protocol.kinds.Kind), number of buffers,
                          sequence number
    frame 2   body        pickle protocol 5 of the kind's plain-data body
    frame 3.. buffers     the body's out-of-band pickle buffers, in order, each a frame
                          sent and received without copying (on an encrypted session,
                          body and buffers are ciphertext: see "Encryption" below)

Every frame after the signature is covered by it, payload buffers included, and each is
length-prefixed inside the MAC so frames cannot be re-cut. A frame's signed form is its
bytes, or, for a frame of more than ``DIGESTED_FRAME_BYTES``, its 32-byte keyed BLAKE3
digest (the key derived from the signing key). HMAC-SHA256 runs at about 1.8 GB/s on
our machines and keyed BLAKE3 at 4.5 GB/s; a large value is hashed once by its sender
and once by its receiver, so over a 100 MB transfer the two MAC passes were most of
the time. The digest is itself a MAC, under its own key, so the signature still
stands for every byte. The signature is checked with ``hmac.compare_digest``, then the
sequence number, before anything is unpickled, since unpickling runs code.

Sessions (version 5, 6). No message is signed with the cluster key itself. Each connection
starts with a handshake in which both ends send a fresh 32-byte random nonce (unsigned:
``HELLO`` from the side that connects, its nonce and its encryption wish; on ZeroMQ
the head answers ``CHALLENGE``, its nonce, the cluster's public KDF salt and its wish;
on a plain socket both ends send a ``HELLO`` record, see ``transport/stream.py``). The
session is encrypted when either end wishes it (``transport/encryption.py``). Both then
derive (``Signer.session``)::

    base  = HMAC(cluster key, "rayipy session 6" + lower nonce + higher nonce
                              + encrypted (1 byte: 0 or 1) + binding)
    send  = HMAC(base, "from" + own nonce)        receive = HMAC(base, "from" + peer nonce)
    seal  = HMAC(base, "encrypt from" + own nonce)    (encrypted sessions: the AES keys)
    open  = HMAC(base, "encrypt from" + peer nonce)

where the binding is the DEALER's ZeroMQ identity (so a message cannot be moved to
another identity) and empty on a plain socket. Each direction has its own key, so a
message reflected back to its sender does not check, and a peer that echoes our nonce
is refused. The first message under a session (``REGISTER`` on ZeroMQ) proves that its
sender holds the cluster key; until then the receiver unpickles nothing. Each message
carries a sequence number, 1, 2, ... per direction, inside the MAC (the header); the
receiver keeps the last one it accepted and drops a message whose number is not higher:
a replay within the connection. A replay on another connection fails the MAC (other
nonces, another key). Checking costs one integer compare; signing stays one HMAC.

A peer is refused when the major version differs (``REFUSED`` with the reason). A frame
list that is too short, has a bad magic, a bad signature, a stale sequence number, an
unknown kind or a body that will not unpickle raises ``BadMessage``; receivers drop it
and count it, never crash.

Version 2: direct calls travel on plain sockets (``transport/stream.py``), the same
frames laid out on a stream. Version 3: large frames are signed by their digest.
Version 5: the handshake, session keys and sequence numbers. Version 6: encryption.

Encryption (version 6). On an encrypted session the sender encrypts the body and every
buffer with AES-256-CTR under its ``seal`` key, the sequence number and the frame's
index as nonce (``protocol/cipher.py``), then signs the ciphertext as above
(encrypt-then-MAC). The receiver checks the signature and the sequence number, then
decrypts with its ``open`` key, then unpickles: a tampered ciphertext fails the MAC and
is dropped and counted like any bad signature, before anything is decrypted for use.
The header stays in clear: kinds, sizes and sequence numbers are visible on the wire,
the contents are not. Since the encryption bit enters the key derivation, a man in the
middle who flips a wish in the clear handshake leaves the two ends with different keys.

A message with more than 8 MiB of buffers travels as a series of ``CHUNK`` messages,
each signed as above, so that signing, sending and checking overlap (``bulk.py``).

Unsigned messages, all with a raw (never unpickled) body: ``HELLO`` (the nonce),
``CHALLENGE`` (nonce, salt), and ``AUTH_FAILED`` (empty), the answer to a registration
whose signature did not check, so that a peer with the wrong key learns at once that
its key is wrong instead of waiting forever. A client takes an unsigned answer only
before the head's first signed message.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import struct
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence, TypeAlias

import blake3

from rayipy.protocol.cipher import FrameCipher
from rayipy.protocol.kinds import Kind

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

#: One frame of a message: bytes, or any object that exports the buffer protocol (a
#: memoryview, a received zmq.Frame, a numpy array's memory). For annotations only.
Frame: TypeAlias = "ReadableBuffer"

PROTOCOL_VERSION = 6
MAGIC = b"RYPY"
HEADER = struct.Struct("!4sHHIQ")    # magic, version, kind, buffers, sequence number
NONCE_BYTES = 32
SALT_BYTES = 16
#: The salt a head announces when its key did not come from a password (a local
#: cluster's random key): public, and then of no use to anyone.
DEFAULT_SALT = b"rayipy key salt\0"
#: Kinds sent before a session exists: unsigned, their body raw bytes, never unpickled.
UNSIGNED_KINDS = frozenset({Kind.HELLO, Kind.CHALLENGE, Kind.AUTH_FAILED})
SIGNATURE_BYTES = 32
DIGESTED_FRAME_BYTES = 64 * 1024   # longer frames enter the MAC as their digest
_LEN = struct.Struct("!Q")
_SHA256_BLOCK = 64                 # bytes: an HMAC-SHA256 key is padded or hashed to this
KINDS: dict[int, Kind] = {int(k): k for k in Kind}   #: a header's kind number -> Kind


class BadMessage(Exception):
    """A received frame list that is not a valid, signed rayipy message."""

    def __init__(self, reason: str, kind: Kind | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class Message(NamedTuple):
    """One checked message: its kind, its body (plain data) and the sender's version."""
    kind: Kind
    body: Any
    version: int


class Session:
    """One connection's two directions: the keys and last sequence number of each.

    Made by ``Signer.session`` once both nonces are known. ``next_seq`` numbers what we
    send (the caller holds whatever lock orders its writes); ``accept`` takes a received
    number that is higher than the last one, and refuses the rest (replays). ``seal``
    and ``open`` encrypt what we send and decrypt what we receive; both None on a
    session in clear (``encrypted`` is the one test of which it is)."""

    __slots__ = ("send", "receive", "sent", "received", "seal", "open")

    def __init__(self, send: "Signer", receive: "Signer", seal: FrameCipher | None = None,
                 open: FrameCipher | None = None) -> None:
        self.send = send
        self.receive = receive
        self.seal = seal
        self.open = open
        self.sent = 0
        self.received = 0

    @property
    def encrypted(self) -> bool:
        """Whether the bodies and buffers of this connection's messages are encrypted."""
        return self.seal is not None

    def next_seq(self) -> int:
        """The sequence number of the next message sent."""
        self.sent += 1
        return self.sent

    def accept(self, seq: int) -> bool:
        """True (and remembered) when ``seq`` is higher than every one accepted before."""
        if seq <= self.received:
            return False
        self.received = seq
        return True


class Signer:
    """HMAC-SHA256 over a frame list with one cluster key."""

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
            raise ValueError("the cluster key must be at least 16 bytes")
        self._base = hmac.new(bytes(key), digestmod=hashlib.sha256)
        self._digest_key = hmac.new(bytes(key), b"rayipy frame digest", hashlib.sha256).digest()
        # HMAC as RFC 2104 writes it, with the two keyed SHA-256 states made once: a MAC
        # in one go is then six C calls. hmac.digest() would set the key up on each
        # call (1.5 us a message here) and a copied hmac.HMAC goes through its Python
        # methods (1.1 us); this takes 0.6 us.
        block = bytes(key) if len(key) <= _SHA256_BLOCK else hashlib.sha256(key).digest()
        block = block.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def sign(self, frames: Sequence[Frame]) -> bytes:
        """The signature of a ZeroMQ message's frames (the layout in the docstring)."""
        inner = self._inner.copy()   # HMAC as in mac(), without the Python HMAC class
        for frame in frames:
            view = memoryview(frame)
            inner.update(_LEN.pack(view.nbytes))
            inner.update(view if view.nbytes <= DIGESTED_FRAME_BYTES else self.signed_form(view))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def mac(self, data: Frame) -> bytes:
        """HMAC-SHA256 of ``data`` with the cluster key, in one go: the same bytes as
        feeding ``data`` to ``start()`` and taking its digest."""
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def start(self) -> hmac.HMAC:
        """A fresh HMAC-SHA256 with the cluster key, to feed piece by piece: for
        signing and checking data as it streams (``transport/stream.py``)."""
        return self._base.copy()

    def frame_hasher(self) -> blake3.blake3:
        """A fresh keyed BLAKE3, to feed a large frame piece by piece; its ``digest()``
        is the frame's signed form."""
        return blake3.blake3(key=self._digest_key)

    def signed_form(self, frame: Frame) -> memoryview | bytes:
        """What of ``frame`` enters the MAC: itself, or its digest when it is large."""
        view = memoryview(frame)
        if view.nbytes <= DIGESTED_FRAME_BYTES:
            return view
        hasher = self.frame_hasher()
        hasher.update(view)
        return hasher.digest()

    def check(self, signature: Frame, frames: Sequence[Frame]) -> bool:
        """Whether ``signature`` is ours over ``frames``."""
        return hmac.compare_digest(bytes(signature), self.sign(frames))

    def session(self, own_nonce: bytes, peer_nonce: bytes, binding: bytes = b"",
                encrypt: bool = False) -> Session:
        """The session keys of one connection, from this (cluster) key and both nonces
        (the derivation is in the module docstring); ``encrypt``: the agreed answer of
        the handshake (either end wished it). Both ends call it with the nonces
        swapped and get each other's send and receive keys. ValueError for a nonce of
        the wrong size, or a peer that sent our own nonce back (its messages would be
        signed with our sending key: our own messages could be reflected to us)."""
        if len(own_nonce) != NONCE_BYTES or len(peer_nonce) != NONCE_BYTES:
            raise ValueError("a handshake nonce must be 32 bytes")
        if hmac.compare_digest(own_nonce, peer_nonce):
            raise ValueError("the peer sent our own nonce back")
        low, high = sorted((own_nonce, peer_nonce))
        base = self.mac(b"rayipy session 6\0" + low + high + (b"\1" if encrypt else b"\0")
                        + binding)
        seal = open = None
        if encrypt:
            seal = FrameCipher(hmac.digest(base, b"encrypt from" + own_nonce, "sha256"))
            open = FrameCipher(hmac.digest(base, b"encrypt from" + peer_nonce, "sha256"))
        return Session(Signer(hmac.digest(base, b"from" + own_nonce, "sha256")),
                       Signer(hmac.digest(base, b"from" + peer_nonce, "sha256")), seal, open)


def wish_byte(wish: bool) -> bytes:
    """One end's encryption wish as it travels in a handshake."""
    return b"\1" if wish else b"\0"


def parse_wish(data: bytes) -> bool:
    """A handshake's wish byte; ValueError for anything but 0 or 1."""
    if data not in (b"\0", b"\1"):
        raise ValueError("bad encryption wish in the handshake")
    return data == b"\1"


def seal_frames(cipher: FrameCipher | None, seq: int, frames: Sequence[Frame]) -> list[Frame]:
    """A message's body and buffers (in order) encrypted for message ``seq``, or the
    same frames on a session in clear."""
    if cipher is None:
        return list(frames)
    return [cipher.apply(seq, index, frame) for index, frame in enumerate(frames)]


def encode(signer: Signer, kind: Kind, body: Any, seq: int = 0,
           cipher: FrameCipher | None = None) -> list[Frame]:
    """Frames for one message; large buffers inside ``body`` become their own frames."""
    data, buffers = pickle_body(body)
    return sign_frames(signer, kind, data, buffers, seq, cipher)


def pickle_body(body: Any) -> tuple[bytes, list[memoryview]]:
    """The body's pickle stream and its out-of-band buffers (raw memoryviews)."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(body, protocol=5, buffer_callback=buffers.append)
    return data, [b.raw() for b in buffers]


def sign_frames(signer: Signer, kind: Kind, data: bytes, buffers: Sequence[Frame],
                seq: int = 0, cipher: FrameCipher | None = None) -> list[Frame]:
    """The frames of one message whose body is pickled already (``pickle_body``),
    encrypted with ``cipher`` (the session's ``seal``) when there is one."""
    header = HEADER.pack(MAGIC, PROTOCOL_VERSION, kind, len(buffers), seq)
    frames: list[Frame] = [header, *seal_frames(cipher, seq, [data, *buffers])]
    return [signer.sign(frames), *frames]


def resign(signer: Signer, frames: Sequence[Frame], seq: int,
           cipher: FrameCipher | None = None) -> list[Frame]:
    """A checked message's frames (signature first, body and buffers in clear, as
    ``decode_frames`` gives them) signed anew for another connection, with that
    connection's next sequence number (and encrypted with its ``cipher``): the body and
    buffers are not pickled again (the head forwarding a result)."""
    _magic, version, kind, nbuf, _seq = HEADER.unpack(frames[1])
    rest: list[Frame] = [HEADER.pack(MAGIC, version, kind, nbuf, seq),
                         *seal_frames(cipher, seq, frames[2:])]
    return [signer.sign(rest), *rest]


def encode_unsigned(kind: Kind, payload: bytes = b"") -> list[Frame]:
    """An unsigned handshake message (``UNSIGNED_KINDS``) with a raw payload."""
    return [b"", HEADER.pack(MAGIC, PROTOCOL_VERSION, kind, 0, 0), payload]


def encode_auth_failed() -> list[Frame]:
    """The unsigned answer to a registration whose signature did not check."""
    return encode_unsigned(Kind.AUTH_FAILED)


def peek_kind(frames: Sequence[Frame]) -> Kind | None:
    """The kind named in the header, read without trusting or unpickling anything."""
    if len(frames) < 3:
        return None
    header = memoryview(frames[1])
    if header.nbytes != HEADER.size:
        return None
    magic, _version, kind, _nbuf, _seq = HEADER.unpack(header)
    return KINDS.get(kind) if magic == MAGIC else None


def decode(signer: Signer, frames: Sequence[Frame], signature_checked: bool = False,
           session: Session | None = None, decrypted: bool = False) -> Message:
    """Check and unpack one message; raises BadMessage for anything not valid.

    ``signature_checked``: the caller has already compared frame 0 with a MAC it
    computed over the other frames as they arrived (``transport/stream.py``).
    ``session``: the connection's; a sequence number not above the last one accepted
    is refused (a replay), after the signature and before anything is unpickled; on an
    encrypted session the body and buffers are decrypted after both checks, unless
    ``decrypted`` (the caller did it as the bytes came, ``transport/stream.py``).
    An unsigned handshake kind comes back with its raw payload as its body."""
    return decode_frames(signer, frames, signature_checked, session, decrypted)[0]


def decode_frames(signer: Signer, frames: Sequence[Frame], signature_checked: bool = False,
                  session: Session | None = None, decrypted: bool = False
                  ) -> tuple[Message, list[Frame]]:
    """``decode``, plus the message's frames with body and buffers in clear (to pass
    on with ``resign``)."""
    if len(frames) < 3:
        raise BadMessage(f"too few frames ({len(frames)})")
    header = memoryview(frames[1])
    if header.nbytes != HEADER.size:
        raise BadMessage("bad header size")
    magic, version, kind_no, nbuf, seq = HEADER.unpack(header)
    if magic != MAGIC:
        raise BadMessage("bad magic")
    kind = KINDS.get(kind_no)
    if kind in UNSIGNED_KINDS:
        return Message(kind, bytes(frames[2]), version), list(frames)
    if len(frames) != 3 + nbuf:
        raise BadMessage(f"header announces {nbuf} buffers, got {len(frames) - 3}", kind)
    if not signature_checked and not signer.check(frames[0], frames[1:]):
        raise BadMessage("bad signature", kind)
    if session is not None and not session.accept(seq):
        raise BadMessage("replayed or out of order", kind)
    if kind is None:
        raise BadMessage(f"unknown kind {kind_no}")
    if session is not None and session.open is not None and not decrypted:
        frames = [*frames[:2], *seal_frames(session.open, seq, frames[2:])]
    try:
        body = pickle.loads(frames[2], buffers=frames[3:])
    except Exception as e:  # a signed but undecodable body: a peer bug, not fatal
        raise BadMessage(f"body does not unpickle: {e!r}", kind) from None
    return Message(kind, body, version), list(frames)
