"""Large messages in signed pieces, so that signing, sending and checking overlap.

A message whose out-of-band buffers add up to more than ``BULK_BYTES`` would be signed
whole by the sender, sent whole, then checked whole by the receiver: three steps one
after the other (SHA-256 runs at about 1.8 GB/s here, so two passes over 100 MB alone
take 110 ms). Sent instead as ``CHUNK`` messages of ``CHUNK_BYTES``, each an ordinary
signed message (``wire.py``; encrypted, piece by piece, on an encrypted session), the
receiver checks one piece while the next is on the
wire and the sender signs the one after.

    CHUNK (transfer, index, offset, sizes, None)      + one frame: part of buffer ``index``
    ...                                                  (buffers in order, each in pieces)
    CHUNK (transfer, -1, 0, sizes, (kind, body))       the message itself, last; its
                                                         body's buffers are the ones above

``transfer`` numbers the sender's transfers; ``sizes`` are the buffers' lengths. One
sender's pieces arrive in order on one connection, so the receiver assembles per sender:
``Assembler.add`` takes each checked piece and returns the whole message at the end. A
piece that does not fit what came before (another transfer, a wrong offset or size)
drops the transfer under way and raises ``BadMessage``; memory is claimed only as signed
pieces arrive, and a sender has at most one transfer under way.

This is the path of large messages through the head (a large argument of a task the head
places); values that go holder to requester take plain sockets (``transport/stream.py``).
What a transfer costs, besides the two SHA-256 passes, and how it is kept down:

- pieces are 1 MiB: ZeroMQ receives each into memory of its own, which the C allocator
  reuses while few pieces wait; with 4 MiB pieces the waiting ones took tens of MB that
  were handed back to the kernel and faulted in again on every transfer;
- the sender's pieces are views of its buffers, sent without a copy; the receiver copies
  each piece once, from ZeroMQ's memory into the buffer it lands in;
- large landing buffers come from ``landing.POOL``, which reuses memory nothing refers to
  any more: fresh memory must be zeroed by the kernel first, about as slow as the copy.
"""

from __future__ import annotations

import pickle
from typing import Any, Iterator, NoReturn, Sequence

from rayipy.protocol import landing
from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import (HEADER, MAGIC, PROTOCOL_VERSION, BadMessage, Frame, Message,
                                  Session, seal_frames)

BULK_BYTES = 8 * 2**20      # messages with more buffer bytes than this go in pieces
CHUNK_BYTES = 1 * 2**20


def buffer_bytes(buffers: Sequence[Frame]) -> int:
    """The bytes of out-of-band buffers, in all."""
    return sum(memoryview(b).nbytes for b in buffers)


def chunked(session: Session, kind: Kind, data: bytes, buffers: Sequence[Frame], transfer: int
            ) -> Iterator[list[Frame]]:
    """The frame lists of one large message, to send in order. A generator: each piece is
    signed (with the session's next sequence number) only when the one before has been
    handed to the socket."""
    views = [memoryview(b).cast("B") for b in buffers]
    sizes = tuple(v.nbytes for v in views)
    for index, view in enumerate(views):
        for offset in range(0, view.nbytes, CHUNK_BYTES):
            yield _signed(session, (transfer, index, offset, sizes, None),
                          view[offset:offset + CHUNK_BYTES])
    yield _signed(session, (transfer, -1, 0, sizes, (int(kind), data)), None)


def _signed(session: Session, body: tuple[Any, ...], piece: memoryview | None) -> list[Frame]:
    """One CHUNK message, encrypted (on an encrypted session) and signed."""
    seq = session.next_seq()
    rest: list[Frame] = [pickle.dumps(body, protocol=5)]
    if piece is not None:
        rest.append(piece)
    frames: list[Frame] = [
        HEADER.pack(MAGIC, PROTOCOL_VERSION, Kind.CHUNK, 0 if piece is None else 1, seq),
        *seal_frames(session.seal, seq, rest)]
    return [session.send.sign(frames), *frames]


class _Transfer:
    __slots__ = ("number", "sizes", "buffers", "index", "offset")

    def __init__(self, number: int, sizes: tuple[int, ...]) -> None:
        self.number = number
        self.sizes = sizes
        self.buffers: list[memoryview] = []
        self.index = 0          # the buffer and offset the next piece must fill
        self.offset = 0


def _skip_empty(transfer: _Transfer) -> None:
    """Empty buffers have no pieces: take them as they come."""
    sizes = transfer.sizes
    while transfer.index < len(sizes) and sizes[transfer.index] == 0:
        transfer.buffers.append(memoryview(bytearray(0)))
        transfer.index += 1


class Assembler:
    """Puts one receiving socket's pieces back together, per sender."""

    def __init__(self) -> None:
        self._under_way: dict[bytes | None, _Transfer] = {}

    def add(self, sender: bytes | None, body: Any, frames: Sequence[Frame]) -> Message | None:
        """One checked CHUNK message; returns the whole message once it is complete."""
        try:
            number, index, offset, sizes, inner = body
            sizes = tuple(int(s) for s in sizes)
            if any(size < 0 for size in sizes) or type(index) is not int \
                    or type(offset) is not int:
                raise ValueError
        except (TypeError, ValueError):
            self._under_way.pop(sender, None)
            raise BadMessage("malformed chunk", Kind.CHUNK) from None
        transfer = self._under_way.get(sender)
        if transfer is None or transfer.number != number:
            transfer = self._under_way[sender] = _Transfer(number, sizes)
            _skip_empty(transfer)
        if sizes != transfer.sizes:
            self._broken(sender, "chunk sizes changed within a transfer")
        if index == -1:
            return self._finish(sender, transfer, inner)
        if (index, offset) != (transfer.index, transfer.offset) or len(frames) != 4 \
                or index >= len(sizes):
            self._broken(sender, "chunk out of order")
        piece = memoryview(frames[3]).cast("B")
        if offset + piece.nbytes > sizes[index]:
            self._broken(sender, "chunk past the end of its buffer")
        if offset == 0:
            try:
                transfer.buffers.append(landing.buffer(sizes[index]))
            except (MemoryError, ValueError, OverflowError, OSError):   # mmap: ENOMEM
                self._broken(sender, f"no memory for a buffer of {sizes[index]} bytes")
        transfer.buffers[index][offset:offset + piece.nbytes] = piece
        transfer.offset += piece.nbytes
        if transfer.offset == sizes[index]:
            transfer.index += 1
            transfer.offset = 0
            _skip_empty(transfer)
        return None

    def _finish(self, sender: bytes | None, transfer: _Transfer, inner: Any) -> Message:
        del self._under_way[sender]
        if transfer.index != len(transfer.sizes):
            raise BadMessage("a transfer ended before all its pieces came", Kind.CHUNK)
        try:
            kind_no, data = inner
            kind = Kind(kind_no)
            body = pickle.loads(data, buffers=transfer.buffers)
        except Exception as e:  # signed but undecodable: a peer bug, not fatal
            raise BadMessage(f"chunked body does not unpickle: {e!r}", Kind.CHUNK) from None
        return Message(kind, body, PROTOCOL_VERSION)

    def _broken(self, sender: bytes | None, why: str) -> NoReturn:
        self._under_way.pop(sender, None)
        raise BadMessage(why, Kind.CHUNK)

    def forget(self, sender: bytes | None) -> None:
        """The sender is gone: drop its transfer under way."""
        self._under_way.pop(sender, None)
