"""A node's object store: one shared-memory arena, served by a thread of the node agent.

Values of ``STORE_MIN_BYTES`` or more live here once per node. Drivers and workers on
the node (clients, ``store_client.py``) map the arena and ask this thread, over a signed
stream connection (a Unix socket on this machine), where to write an object (``CREATE``,
then ``SEAL``) and where to read one (``GET``, which pins it until the client's views are
gone: ``RELEASE``). An object that lives on another node is pulled from that node's
store once, however many clients here ask for it meanwhile, in signed pieces
(``STORE_READ`` answered by ``STORE_DATA``). Over the budget, secondary copies are
dropped and primaries nobody reads are spilled to disk (read back on the next ``GET``).

Every decision is ``core/store_state.py``'s; this thread carries them out: it answers,
pulls, writes and reads spill files, and makes sure the arena's pages exist before a
writer touches them (``Arena.commit``: a write into pages /dev/shm cannot provide would
kill the writer with SIGBUS).

The agent's main thread hands it what the head says about lifetimes (``FREE_OBJECTS``:
an owner freed objects; ``OWNER_GONE``: their owner died) through ``post``.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import pickle
import random
import shutil
import tempfile
import threading
import time
from typing import Any, Callable

import zmq

from rayipy.core.store_state import (Command, Pull, RemoveFile, Reply, Restore, Spill, State,
                                     StoreState)
from rayipy.node import shm
from rayipy.protocol.kinds import Kind
from rayipy.protocol.wire import Message, Signer
from rayipy.transport.endpoint import Waker
from rayipy.transport.poll_set import PollSet
from rayipy.transport.stream import StreamConnection, StreamListener

log = logging.getLogger("rayipy.store")

_FREEING = frozenset({Kind.STORE_FREE, Kind.STORE_RELEASE})
COMMIT_STEP = 64 * 2**20      # pages made to exist ahead of the highest object, at a time
PIECE_BYTES = 4 * 2**20       # a transfer between nodes moves in signed pieces of this size


def default_capacity(total_memory: int) -> int:
    """As Ray: 30% of the machine's memory, no more than /dev/shm can hold."""
    capacity = int(total_memory * 0.3)
    try:
        stat = os.statvfs("/dev/shm")
        capacity = min(capacity, int(stat.f_bavail * stat.f_frsize * 0.95))
    except OSError:
        pass
    return max(capacity, 64 * 2**20)


class _Client:
    """One connection to the store: a process on this node, or another node's store."""

    __slots__ = ("connection", "client_id", "process_id")

    def __init__(self, connection: StreamConnection, client_id: int) -> None:
        self.connection = connection
        self.client_id = client_id        # its own until it says which process it is
        self.process_id = b""


class _Pulling:
    """An object coming from another node's store into ours; ``others``: the stores
    with a copy to try next if this one fails."""

    __slots__ = ("object_id", "connection", "offset", "size", "received", "others", "errors")

    def __init__(self, object_id: bytes, connection: StreamConnection, offset: int,
                 size: int, others: list[str], errors: list[str]) -> None:
        self.object_id = object_id
        self.connection = connection
        self.offset = offset
        self.size = size
        self.received = 0
        self.others = others
        self.errors = errors


class StoreServer:
    """The store's thread (``start``), its arena and its sockets."""

    def __init__(self, node_id: bytes, ip: str, signer: Signer, capacity: int,
                 spill_directory: str = "") -> None:
        self.node_id = node_id
        self.signer = signer
        shm.sweep_stale()
        self.arena = shm.Arena.create(capacity, shm.choose_directory(capacity))
        self.state = StoreState(capacity)
        self.listener = StreamListener(ip, signer)
        self.address = self.listener.address
        root = spill_directory or tempfile.gettempdir()
        os.makedirs(root, exist_ok=True)
        self.spill_directory = tempfile.mkdtemp(prefix="rayipy-spill-", dir=root)
        self.committed = 0
        self.waker = Waker()
        self.posted: collections.deque[tuple[Kind, Any]] = collections.deque()
        self.poll = PollSet()
        self.clients: dict[int, _Client] = {}            # fd -> client
        self.by_process: dict[bytes, int] = {}           # process id -> client id
        self.process_connections: collections.Counter[int] = collections.Counter()
        self.asked: dict[tuple[int, int], StreamConnection] = {}   # (client, request) -> where
        self.reads: set[tuple[int, int]] = set()         # requests to stream the bytes back
        self.pulls: dict[int, _Pulling] = {}             # fd -> pull
        self.pull_requests = itertools.count(1)
        self._ids = itertools.count(1)
        self.running = True
        self.thread = threading.Thread(target=self._serve, name="rayipy-store", daemon=True)

    # -- the agent's thread -------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def post(self, kind: Kind, body: Any) -> None:
        """From the agent's thread: FREE_OBJECTS or OWNER_GONE, as the head sent them."""
        self.posted.append((kind, body))
        self.waker.wake()

    def stop(self) -> None:
        """Stop the thread, then remove the arena and the spill files."""
        self.running = False
        self.waker.wake()
        if self.thread.is_alive():
            self.thread.join(5)
        self.listener.close()
        for client in self.clients.values():
            client.connection.close()
        for pull in self.pulls.values():
            pull.connection.close()
        self.arena.unlink()
        self.arena.close()
        shutil.rmtree(self.spill_directory, ignore_errors=True)
        self.waker.close()

    def summary(self) -> dict[str, int]:
        """For the agent's heartbeat (read from another thread: a racy but whole dict)."""
        return self.state.summary()

    # -- the store's thread ---------------------------------------------------------------
    def _serve(self) -> None:
        poll = self.poll
        for fd in self.listener.filenos():
            poll.register(fd)
        poll.register(self.waker.fd)
        while self.running:
            for fd, client in self.clients.items():
                poll.watch(fd, zmq.POLLIN | (zmq.POLLOUT if client.connection.wants_write() else 0))
            for fd, pull in self.pulls.items():
                poll.watch(fd, zmq.POLLIN | (zmq.POLLOUT if pull.connection.wants_write() else 0))
            events = poll.poll(1000)
            try:
                self._turn(events)
            except Exception:
                log.exception("the object store's loop failed a turn")

    def _turn(self, events: dict[Any, int]) -> None:
        if self.waker.fd in events:
            self.waker.clear()
        while self.posted:
            kind, body = self.posted.popleft()
            if kind is Kind.FREE_OBJECTS:
                self._carry_out(self.state.free(list(body[0])))
            elif kind is Kind.OWNER_GONE:
                self._carry_out(self.state.owner_gone(body[0]))
        for fd in self.listener.filenos():
            if fd in events:
                for connection in self.listener.accept(fd):
                    self.clients[connection.fileno()] = _Client(connection, -next(self._ids))
        received: list[tuple[_Client, Message]] = []
        for fd, client in list(self.clients.items()):
            flags = self.poll.events_for(fd, events)
            if flags & zmq.POLLOUT:
                client.connection.on_writable()
            if flags & (zmq.POLLIN | zmq.POLLERR):
                received.extend((client, m) for m in client.connection.receive())
        # What frees memory first: a put that came at the same time (on another of the
        # client's connections) then reuses that room, whose pages are warm.
        received.sort(key=lambda item: item[1].kind not in _FREEING)
        for client, message in received:
            self._handle(client, message)
        for fd, client in list(self.clients.items()):
            if client.connection.closed:
                self._client_closed(fd, client)
        for fd, pull in list(self.pulls.items()):
            flags = self.poll.events_for(fd, events)
            if flags & zmq.POLLOUT:
                pull.connection.on_writable()
            if flags & (zmq.POLLIN | zmq.POLLERR):
                for message in pull.connection.receive():
                    self._on_pull_message(fd, pull, message)
            if fd in self.pulls and pull.connection.closed:
                self._pull_ended(fd, pull, False, f"the connection to it failed "
                                                  f"({pull.connection.error})")

    def _client_closed(self, fd: int, client: _Client) -> None:
        self.poll.watch(fd, 0)
        del self.clients[fd]
        client.connection.close()
        self.asked = {k: c for k, c in self.asked.items() if c is not client.connection}
        cid = client.client_id
        self.process_connections[cid] -= 1
        if self.process_connections[cid] <= 0:
            del self.process_connections[cid]
            if client.process_id:
                self.by_process.pop(client.process_id, None)
            self._carry_out(self.state.client_gone(cid))

    # -- requests -----------------------------------------------------------------------
    def _handle(self, client: _Client, message: Message) -> None:
        kind, body = message.kind, message.body
        if log.isEnabledFor(logging.DEBUG):
            log.debug("client %d: %s %s (used %d)", client.client_id, kind.name,
                      repr(body)[:80], self.state.alloc.used)
        try:
            if kind is Kind.STORE_OPEN:
                self._on_open(client, body)
            elif kind is Kind.STORE_CREATE:
                request_id, object_id, size, site = body
                self._remember(client, request_id)
                self._until_room(lambda: self.state.create(
                    client.client_id, request_id, bytes(object_id), int(size),
                    bytes(object_id[:8]), str(site), time.time()), client.client_id, request_id)
            elif kind is Kind.STORE_SEAL:
                self._carry_out(self.state.seal(bytes(body[0]), time.time()))
            elif kind is Kind.STORE_ABORT:
                self._carry_out(self.state.abort(bytes(body[0])))
            elif kind is Kind.STORE_GET:
                request_id, object_id, sources, size = body
                sources = tuple(str(a) for a in sources)
                self._remember(client, request_id)
                self._until_room(lambda: self.state.get(
                    client.client_id, request_id, bytes(object_id), sources, int(size),
                    time.time()), client.client_id, request_id)
            elif kind is Kind.STORE_FREE:
                self._carry_out(self.state.free([bytes(o) for o in body[0]]))
            elif kind is Kind.STORE_RELEASE:
                self._carry_out(self.state.release(client.client_id, [bytes(o) for o in body[0]]))
            elif kind is Kind.STORE_READ:
                request_id, object_id = body
                self._remember(client, request_id)
                self.reads.add((client.client_id, request_id))
                self._until_room(lambda: self.state.get(
                    client.client_id, request_id, bytes(object_id), (), 0, time.time()),
                    client.client_id, request_id)
            elif kind is Kind.STORE_LIST:
                (request_id,) = body
                client.connection.send(Kind.STORE_REPLY, (request_id, True, (
                    {**self.state.summary(), "node_id": self.node_id.hex()},
                    self.state.listing()), False))
            else:
                log.warning("the object store got a %s message; ignored", kind.name)
        except (TypeError, ValueError) as e:
            log.warning("the object store got a malformed %s message: %s", kind.name, e)

    def _on_open(self, client: _Client, body: Any) -> None:
        request_id, process_id = body
        process_id = bytes(process_id)
        cid = self.by_process.get(process_id)
        if cid is None:
            cid = self.by_process[process_id] = next(self._ids)
        client.client_id, client.process_id = cid, process_id
        self.process_connections[cid] += 1
        client.connection.send(Kind.STORE_REPLY, (
            request_id, True, (self.arena.path, self.arena.size, self.node_id), False))

    def _remember(self, client: _Client, request_id: int) -> None:
        if client.client_id < 0:   # not opened: only another store's reads
            self.process_connections[client.client_id] = 1
        self.asked[(client.client_id, request_id)] = client.connection

    def _until_room(self, event: Callable[[], list[Command]], client: int, request_id: int) -> None:
        """Run an event that may need room; spill what it says, then run it again."""
        while True:
            commands = event()
            spills = [c for c in commands if isinstance(c, Spill)]
            if not spills:
                self._carry_out(commands)
                return
            for spill in spills:
                error = self._spill(spill)
                if error:
                    self._carry_out([Reply(client, request_id, False,
                                           f"the object store is full and spilling to "
                                           f"{self.spill_directory} failed: {error}")])
                    return

    # -- carrying out ---------------------------------------------------------------------
    def _carry_out(self, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, Reply):
                self._reply(command)
            elif isinstance(command, Pull):
                self._start_pull(command)
            elif isinstance(command, Restore):
                self._restore(command)
            elif isinstance(command, RemoveFile):
                try:
                    os.unlink(command.path)
                except OSError:
                    pass
            else:   # Spill comes only from events run through _until_room
                raise AssertionError(f"{command!r} is not carried out here")

    def _reply(self, reply: Reply) -> None:
        key = (reply.client, reply.request_id)
        connection = self.asked.pop(key, None)
        reading = key in self.reads
        self.reads.discard(key)
        if reply.ok and isinstance(reply.value, tuple) and reply.value[0] is not None:
            offset, size = reply.value[:2]
            error = self._commit(offset + size)
            if error:
                obj = self.state.objects.get(reply.object_id)
                if obj is not None and obj.state is State.CREATING:
                    self.state.abort(obj.object_id)
                reply = reply._replace(ok=False, value=error)
        if connection is None or connection.closed:
            if reply.ok and isinstance(reply.value, tuple) and reply.value[0] is not None:
                # Nobody to give the pin to (it left): drop it again.
                self._carry_out(self.state.release(reply.client, [reply.object_id]))
            return
        if reading and reply.ok:
            self._stream_back(connection, reply)
            return
        connection.send(Kind.STORE_REPLY, (reply.request_id, reply.ok, reply.value, reply.lost))

    def _stream_back(self, connection: StreamConnection, reply: Reply) -> None:
        """Another node (or a process with no store) reads an object: its bytes in
        pieces, each signed, then the end; the pin is let go once it is all queued."""
        offset, size, _pulled = reply.value  # type: ignore[misc]
        object_id = reply.object_id
        try:
            for start in range(0, size, PIECE_BYTES):
                view = self.arena.readable(offset + start, min(PIECE_BYTES, size - start))
                if not connection.send(Kind.STORE_DATA, (reply.request_id, start,
                                                         pickle.PickleBuffer(view)), block=True):
                    break
            connection.send(Kind.STORE_REPLY, (reply.request_id, True, size, False), block=True)
        finally:
            self._carry_out(self.state.release(reply.client, [object_id]))

    def _commit(self, end: int) -> str:
        """Make the arena's pages up to ``end`` exist; an error text if /dev/shm is full."""
        if end <= self.committed:
            return ""
        target = min(self.arena.size, max(end, self.committed + COMMIT_STEP))
        try:
            self.arena.commit(self.committed, target)
        except MemoryError as e:
            try:
                self.arena.commit(self.committed, end)
            except MemoryError:
                return str(e)
            target = end
        self.committed = target
        return ""

    # -- spilling -------------------------------------------------------------------------
    def _spill(self, spill: Spill) -> str:
        """Write one object to disk, synchronously; the error text if it failed."""
        path = os.path.join(self.spill_directory, spill.object_id.hex())
        try:
            with open(path, "wb") as f:
                f.write(self.arena.readable(spill.offset, spill.size))
        except OSError as e:
            try:
                os.unlink(path)
            except OSError:
                pass
            self._carry_out(self.state.spilled(spill.object_id, path, False, str(e)))
            log.warning("could not spill an object of %d bytes to %s: %s", spill.size, path, e)
            return str(e)
        self._carry_out(self.state.spilled(spill.object_id, path, True, ""))
        return ""

    def _restore(self, restore: Restore) -> None:
        error = self._commit(restore.offset + restore.size)
        if not error:
            try:
                with open(restore.path, "rb") as f:
                    view = self.arena.writable(restore.offset, restore.size)
                    if f.readinto(view) != restore.size:
                        error = "the spill file is shorter than the object"
            except OSError as e:
                error = str(e)
        self._carry_out(self.state.restored(restore.object_id, not error, error, time.time()))

    # -- pulls from other nodes -------------------------------------------------------------
    def _start_pull(self, pull: Pull) -> None:
        error = self._commit(pull.offset + pull.size)
        if error:
            self._carry_out(self.state.pulled(pull.object_id, False, error, time.time()))
            return
        # Any store with a copy will do: a random one first, so that many nodes pulling
        # one object share the work between the copies already made.
        sources = random.sample(pull.sources, len(pull.sources))
        self._pull_from(pull.object_id, pull.offset, pull.size, sources, [])

    def _pull_from(self, object_id: bytes, offset: int, size: int, sources: list[str],
                   errors: list[str]) -> None:
        """Ask the first of ``sources`` that can be reached; when none can, the pull failed."""
        while sources:
            source = sources.pop(0)
            connection = StreamConnection.connect(source, self.signer)
            connection.send(Kind.STORE_READ, (next(self.pull_requests), object_id))
            if not connection.closed:
                self.pulls[connection.fileno()] = _Pulling(object_id, connection, offset,
                                                           size, sources, errors)
                return
            errors.append(f"{source}: {connection.error}")
            connection.close()
        self._carry_out(self.state.pulled(
            object_id, False, "no store that held it could send it (" + "; ".join(errors)
            + "): its node is gone", time.time()))

    def _on_pull_message(self, fd: int, pull: _Pulling, message: Message) -> None:
        if message.kind is Kind.STORE_DATA:
            _request, start, data = message.body
            piece = memoryview(data).cast("B")
            if start < 0 or start + piece.nbytes > pull.size:
                self._pull_ended(fd, pull, False, "the holder sent bytes past the object's end")
                return
            self.arena.writable(pull.offset + start, piece.nbytes)[:] = piece
            pull.received += piece.nbytes
        elif message.kind is Kind.STORE_REPLY:
            _request, ok, value, _lost = message.body
            if ok and pull.received != pull.size:
                self._pull_ended(fd, pull, False, f"the holder sent {pull.received} of "
                                                  f"{pull.size} bytes")
            else:
                self._pull_ended(fd, pull, bool(ok), "" if ok else str(value))

    def _pull_ended(self, fd: int, pull: _Pulling, ok: bool, error: str) -> None:
        self.poll.watch(fd, 0)
        del self.pulls[fd]
        pull.connection.close()
        if not ok and pull.others:   # another copy may still be there
            pull.errors.append(error)
            self._pull_from(pull.object_id, pull.offset, pull.size, pull.others, pull.errors)
            return
        if not ok and pull.errors:
            error = "; ".join([*pull.errors, error])
        self._carry_out(self.state.pulled(pull.object_id, ok, error, time.time()))
