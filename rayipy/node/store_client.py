"""A driver's or worker's side of its node's object store (``store_server.py``).

Writing: ``put`` asks the store for room (``STORE_CREATE``), lays the value out there
itself (``store_layout``: one copy from the user's buffers into the shared mapping), and
seals it. Reading: ``get`` asks where the object lies (``STORE_GET``: the store pulls it
from another node first if need be) and builds the value over read-only views of the
mapping, so a numpy array comes back without a copy. Each ``get`` pins the object for
this process; the pin is let go once every view and array built on it is gone (the
views' holder is garbage), in a batch with the next request (``STORE_RELEASE``).

A process with no store on its node reads from the holder's store over the network
(``read_remote``): the bytes land in memory of its own.

Each thread talks to the store on a connection of its own, so a thread waiting for a
pull never holds up another's put. Requests are answered in order on a connection.
"""

from __future__ import annotations

import collections
import itertools
import select
import threading
import time
from typing import Any, Callable

from rayipy import exceptions
from rayipy.node import shm
from rayipy.protocol import landing, store_layout
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import Payload, Stored
from rayipy.protocol.wire import Signer
from rayipy.transport.stream import StreamConnection

STORE_MIN_BYTES = 100 * 1024     # values this large live in the store, once per node
REQUEST_TIMEOUT_SECONDS = 600.0  # a pull of a large object may take a while


class StoreError(Exception):
    """The store answered no: ``lost`` when the object is gone for good."""

    def __init__(self, text: str, lost: bool) -> None:
        super().__init__(text)
        self.lost = lost


class _Channel:
    """One thread's connection to a store: a request, then its answer."""

    def __init__(self, address: str, signer: Signer) -> None:
        self.connection = StreamConnection.connect(address, signer)
        # This thread reads the connection itself: the handshake is done here, at once.
        self.connection.wait_ready(30.0)
        self.local = self.connection.sock.family.name == "AF_UNIX"
        self.pending: collections.deque[Any] = collections.deque()   # answers not asked for yet

    def send(self, kind: Kind, body: Any) -> None:
        connection = self.connection
        connection.send(kind, body)
        self._write_all()

    def _write_all(self) -> None:
        connection = self.connection
        while connection.wants_write() and not connection.closed:
            select.select([], [connection.fileno()], [], 1.0)
            connection.on_writable()
        if connection.closed:
            raise ConnectionError(f"the object store connection failed: {connection.error}")

    def ask(self, kind: Kind, body: Any, on_data: Any = None,
            timeout: float = REQUEST_TIMEOUT_SECONDS) -> tuple[bool, Any, bool]:
        """Send a request whose first field is its id; wait for its STORE_REPLY."""
        request_id = body[0]
        self.send(kind, body)
        deadline = time.monotonic() + timeout
        connection = self.connection
        while True:
            for message in connection.receive():
                if message.kind is Kind.STORE_DATA and on_data is not None:
                    on_data(message.body)
                elif message.kind is Kind.STORE_REPLY and message.body[0] == request_id:
                    _request, ok, value, lost = message.body
                    return bool(ok), value, bool(lost)
            if connection.closed:
                raise ConnectionError(f"the object store connection failed: {connection.error}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the object store did not answer in {timeout:g} s")
            select.select([connection.fileno()], [], [], min(left, 1.0))

    def close(self) -> None:
        self.connection.close()


class StoreClient:
    """This process's connection to its node's store, and the arena mapped here."""

    def __init__(self, address: str, signer: Signer, process_id: bytes) -> None:
        self.address = address
        self.signer = signer
        self.process_id = process_id
        self._threads = threading.local()
        self._ids = itertools.count(1)
        self._released: collections.deque[bytes] = collections.deque()
        self._channels: list[_Channel] = []
        self._lock = threading.Lock()
        channel = self._channel()
        ok, value, _lost = channel.ask(Kind.STORE_OPEN, (next(self._ids), process_id))
        if not ok:
            raise ConnectionError(f"the object store at {address} refused us: {value}")
        path, size, self.node_id = value
        self.arena = shm.Arena.open(path, size)

    @classmethod
    def local(cls, address: str, signer: Signer, process_id: bytes) -> StoreClient | None:
        """A client of the store at ``address`` if it is on this machine, else None."""
        probe = _Channel(address, signer)
        local = probe.local
        probe.close()
        if not local:
            return None
        return cls(address, signer, process_id)

    # -- any thread -------------------------------------------------------------------
    def put(self, object_id: bytes, payload: Payload, site: str) -> Stored:
        """Write ``payload`` into the store as ``object_id`` (owned by its id's owner);
        raises ``ObjectStoreFullError`` when it cannot fit."""
        size = store_layout.layout_size(payload)
        channel = self._channel()
        self.flush_releases(channel)   # views gone by now may make the room we ask for
        ok, value, _lost = channel.ask(Kind.STORE_CREATE, (next(self._ids), object_id, size, site))
        if not ok:
            raise exceptions.ObjectStoreFullError(str(value))
        offset, size = value
        if offset is not None:   # else a copy is there already (a retried task's return)
            try:
                store_layout.write_payload(self.arena.writable(offset, size), payload)
            except BaseException:
                channel.send(Kind.STORE_ABORT, (object_id,))
                raise
            channel.send(Kind.STORE_SEAL, (object_id,))
        return Stored(object_id, size, self.node_id, self.address)

    def get(self, stored: Stored, on_pulled: Callable[[], None] | None = None) -> Payload:
        """The value as views of the shared mapping, pinned until they are gone; from
        another node's store first (any that has a copy) if it lives elsewhere, and then
        ``on_pulled`` is called. Raises ``StoreError`` (``lost``: gone for good)."""
        if stored.node_id == self.node_id:
            sources: tuple[str, ...] = ()
        else:
            sources = tuple(a for a in (stored.address, *stored.copies) if a != self.address)
        object_id = stored.object_id
        channel = self._channel()
        self.flush_releases(channel)
        ok, value, lost = channel.ask(
            Kind.STORE_GET, (next(self._ids), object_id, sources, stored.size))
        if not ok:
            raise StoreError(str(value), lost)
        offset, size, pulled = value
        if pulled and on_pulled is not None:
            on_pulled()
        released = self._released
        view = self.arena.pinned(offset, size, lambda: released.append(object_id))
        return store_layout.read_payload(view)

    def flush_releases(self, channel: _Channel | None = None) -> None:
        """Tell the store which views are gone: before each request, and from the I/O
        thread at each turn of its loop."""
        if not self._released:
            return
        gone = []
        while self._released:
            gone.append(self._released.popleft())
        try:
            (channel or self._channel()).send(Kind.STORE_RELEASE, (gone,))
        except ConnectionError:
            pass   # the store is gone: so are the pins

    def free(self, object_ids: list[bytes]) -> None:
        """Our objects were freed: the store here drops them now (the head tells every
        store too, later). Views gone meanwhile go first, so the memory is free at once."""
        try:
            channel = self._channel()
            self.flush_releases(channel)
            channel.send(Kind.STORE_FREE, (object_ids,))
        except ConnectionError:
            pass   # the store is gone: so are its objects

    def listing(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        ok, value, _lost = self._channel().ask(Kind.STORE_LIST, (next(self._ids),))
        return value  # type: ignore[no-any-return]

    def close(self) -> None:
        with self._lock:
            for channel in self._channels:
                channel.close()
            self._channels.clear()
        self.arena.close()

    def _channel(self) -> _Channel:
        channel: _Channel | None = getattr(self._threads, "channel", None)
        if channel is None or channel.connection.closed:
            channel = _Channel(self.address, self.signer)
            if hasattr(self, "node_id"):   # every connection says whose it is
                ok, value, _lost = channel.ask(Kind.STORE_OPEN, (next(self._ids), self.process_id))
            self._threads.channel = channel
            with self._lock:
                self._channels.append(channel)
        return channel


def list_store(address: str, signer: Signer, timeout: float = 10.0
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The figures (``StoreState.summary()`` and ``node_id``) and the objects
    (``StoreState.listing()``) of the store at ``address``, on a connection of its own,
    from any process that holds the cluster's key. Raises ``ConnectionError`` or
    ``TimeoutError`` when the store cannot be asked."""
    channel = _Channel(address, signer)
    try:
        ok, value, _lost = channel.ask(Kind.STORE_LIST, (1,), timeout=timeout)
    finally:
        channel.close()
    if not ok:
        raise ConnectionError(f"the object store at {address} would not list its objects: {value}")
    summary, listing = value
    return dict(summary), list(listing)


def read_remote(stored: Stored, signer: Signer) -> Payload:
    """The value of an object in another machine's store (the first of those with a copy
    that answers), copied here: for a process with no store on its node. Raises
    ``StoreError``."""
    errors = []
    for address in (stored.address, *stored.copies):
        try:
            return _read_from(address, stored, signer)
        except (StoreError, OSError, ConnectionError, TimeoutError) as e:
            errors.append(f"{address}: {e}")
    raise StoreError("no store that held it could send it (" + "; ".join(errors) + ")", True)


def _read_from(address: str, stored: Stored, signer: Signer) -> Payload:
    channel = _Channel(address, signer)
    target = memoryview(landing.buffer(stored.size)).cast("B")
    received = 0

    def on_data(body: tuple) -> None:
        nonlocal received
        _request, start, data = body
        piece = memoryview(data).cast("B")
        if start < 0 or start + piece.nbytes > stored.size:
            raise StoreError("the holder sent bytes past the object's end", False)
        target[start:start + piece.nbytes] = piece
        received += piece.nbytes

    try:
        ok, value, lost = channel.ask(Kind.STORE_READ, (1, stored.object_id), on_data)
    finally:
        channel.close()
    if not ok:
        raise StoreError(str(value), lost)
    if received != stored.size:
        raise StoreError(f"the holder sent {received} of {stored.size} bytes", False)
    return store_layout.read_payload(target.toreadonly())
