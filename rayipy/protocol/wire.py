"""Wire format: framing, HMAC-SHA256 signing and the protocol version.

Protocol version 3. A message is a list of ZeroMQ frames (a ROUTER socket prepends the
peer's identity frame, which is routing, not message)::

    frame 0   signature   32 bytes, HMAC-SHA256(key, for each later frame: len (8 bytes,
                          big-endian) + the frame's signed form)
    frame 1   header      12 bytes, struct "!4sHHI": magic b"RYPY", protocol version,
                          message kind (rayipy.protocol.kinds.Kind), number of buffers
    frame 2   body        pickle protocol 5 of the kind's plain-data body
    frame 3.. buffers     the body's out-of-band pickle buffers, in order, each a frame
                          sent and received without copying

Every frame after the signature is covered by it, payload buffers included, and each is
length-prefixed inside the MAC so frames cannot be re-cut. A frame's signed form is its
bytes, or, for a frame of more than ``DIGESTED_FRAME_BYTES``, its 32-byte keyed BLAKE3
digest (the key derived from the cluster key). HMAC-SHA256 runs at about 1.8 GB/s on
our machines and keyed BLAKE3 at 4.5 GB/s; a large value is hashed once by its sender
and once by its receiver, so over a 100 MB transfer the two MAC passes were most of
the time. The digest is itself a MAC, under its own key, so the signature still
stands for every byte. The signature is checked with ``hmac.compare_digest`` before
anything is unpickled, since unpickling runs code.

A peer is refused when the major version differs (``REFUSED`` with the reason). A frame
list that is too short, has a bad magic, a bad signature, an unknown kind or a body that
will not unpickle raises ``BadMessage``; receivers drop it and count it, never crash.

Version 2: direct calls travel on plain sockets (``transport/stream.py``), the same
frames laid out on a stream. Version 3: large frames are signed by their digest.

A message with more than 8 MiB of buffers travels as a series of ``CHUNK`` messages,
each signed as above, so that signing, sending and checking overlap (``bulk.py``).

The one exception to signing: ``AUTH_FAILED`` is sent unsigned with an empty body, as the
answer to a registration whose signature did not check, so that a peer with the wrong
key learns at once that its key is wrong instead of waiting forever.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import struct
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence, TypeAlias

import blake3

from rayipy.protocol.kinds import Kind

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

#: One frame of a message: bytes, or any object that exports the buffer protocol (a
#: memoryview, a received zmq.Frame, a numpy array's memory). For annotations only.
Frame: TypeAlias = "ReadableBuffer"

PROTOCOL_VERSION = 4
MAGIC = b"RYPY"
HEADER = struct.Struct("!4sHHI")
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
        return hmac.compare_digest(bytes(signature), self.sign(frames))


def encode(signer: Signer, kind: Kind, body: Any) -> list[Frame]:
    """Frames for one message; large buffers inside ``body`` become their own frames."""
    data, buffers = pickle_body(body)
    return sign_frames(signer, kind, data, buffers)


def pickle_body(body: Any) -> tuple[bytes, list[memoryview]]:
    """The body's pickle stream and its out-of-band buffers (raw memoryviews)."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(body, protocol=5, buffer_callback=buffers.append)
    return data, [b.raw() for b in buffers]


def sign_frames(signer: Signer, kind: Kind, data: bytes, buffers: Sequence[Frame]
                ) -> list[Frame]:
    """The frames of one message whose body is pickled already (``pickle_body``)."""
    header = HEADER.pack(MAGIC, PROTOCOL_VERSION, kind, len(buffers))
    frames: list[Frame] = [header, data, *buffers]
    return [signer.sign(frames), *frames]


def encode_auth_failed() -> list[Frame]:
    """The unsigned answer to a registration whose signature did not check."""
    return [b"", HEADER.pack(MAGIC, PROTOCOL_VERSION, Kind.AUTH_FAILED, 0), b""]


def peek_kind(frames: Sequence[Frame]) -> Kind | None:
    """The kind named in the header, read without trusting or unpickling anything."""
    if len(frames) < 3:
        return None
    header = memoryview(frames[1])
    if header.nbytes != HEADER.size:
        return None
    magic, _version, kind, _nbuf = HEADER.unpack(header)
    return KINDS.get(kind) if magic == MAGIC else None


def decode(signer: Signer, frames: Sequence[Frame], signature_checked: bool = False) -> Message:
    """Check and unpack one message; raises BadMessage for anything not valid.

    ``signature_checked``: the caller has already compared frame 0 with a MAC it
    computed over the other frames as they arrived (``transport/stream.py``)."""
    if len(frames) < 3:
        raise BadMessage(f"too few frames ({len(frames)})")
    header = memoryview(frames[1])
    if header.nbytes != HEADER.size:
        raise BadMessage("bad header size")
    magic, version, kind_no, nbuf = HEADER.unpack(header)
    if magic != MAGIC:
        raise BadMessage("bad magic")
    kind = KINDS.get(kind_no)
    if kind is Kind.AUTH_FAILED:
        return Message(kind, None, version)
    if len(frames) != 3 + nbuf:
        raise BadMessage(f"header announces {nbuf} buffers, got {len(frames) - 3}", kind)
    if not signature_checked and not signer.check(frames[0], frames[1:]):
        raise BadMessage("bad signature", kind)
    if kind is None:
        raise BadMessage(f"unknown kind {kind_no}")
    try:
        body = pickle.loads(frames[2], buffers=frames[3:])
    except Exception as e:  # a signed but undecodable body: a peer bug, not fatal
        raise BadMessage(f"body does not unpickle: {e!r}", kind) from None
    return Message(kind, body, version)
