"""One node's object store, as pure bookkeeping: where each object lies in the shared
arena, who is reading it, and what to evict, spill or restore to stay in the budget.

The store process (``rayipy/node/store_server.py``, a thread of the node's agent) feeds
this events (a client creates, seals, gets, releases; an owner frees; a pull or a spill
ended) and carries out the commands it returns (answer a client, pull an object from
another node's store, write one to disk or read it back, remove a spill file). No
sockets, no files, no clocks: times are passed in.

Terms:

- a *client* is a process on this node (a driver or a worker), or another node's store
  reading from this one; it is named by an id the shell gives it;
- a *pin* is a client reading an object: its views into the arena are alive. A pinned
  object is never moved, evicted or reused, even once freed;
- the *primary* copy is the one written here by a ``put`` or a task's return; a
  *secondary* copy was pulled from another node for readers here. Secondary copies go
  first when room is needed (they can be pulled again), then primary copies nobody reads
  are spilled to disk, least recently used first, and read back on the next ``get``. A
  copy read back keeps its file until the object is freed, so room is made from it
  again without a write.
"""

from __future__ import annotations

import bisect
import enum
from typing import NamedTuple, Union

from rayipy.units import format_bytes

PAGE = 4096


class Allocator:
    """Best-fit over free ranges of the arena, lowest offset among equals, so the pages
    written before are used again first (a first write into new pages costs several
    times a rewrite of warm ones). Sizes are rounded up to whole pages."""

    def __init__(self, capacity: int, align: int = PAGE) -> None:
        self.capacity = capacity - capacity % align
        self.align = align
        self._free_starts: list[int] = [0] if self.capacity else []   # sorted
        self._free: dict[int, int] = {0: self.capacity} if self.capacity else {}  # start -> size
        self._used: dict[int, int] = {}     # start -> size
        self.used = 0
        self.high_water = 0                 # the end of the highest range ever handed out

    def rounded(self, size: int) -> int:
        return max(self.align, -(-size // self.align) * self.align)

    def allocate(self, size: int) -> int | None:
        """The offset of ``size`` bytes of the arena, or None if no free range fits."""
        need = self.rounded(size)
        best = -1
        best_size = 0
        for start in self._free_starts:
            free = self._free[start]
            if free >= need and (best < 0 or free < best_size):
                best, best_size = start, free
                if free == need:
                    break
        if best < 0:
            return None
        del self._free[best]
        self._free_starts.remove(best)
        if best_size > need:
            rest = best + need
            self._free[rest] = best_size - need
            bisect.insort(self._free_starts, rest)
        self._used[best] = need
        self.used += need
        self.high_water = max(self.high_water, best + need)
        return best

    def free(self, offset: int) -> None:
        size = self._used.pop(offset)
        self.used -= size
        start, end = offset, offset + size
        i = bisect.bisect_left(self._free_starts, start)
        if i < len(self._free_starts) and self._free_starts[i] == end:   # joins the next
            end += self._free.pop(end)
            del self._free_starts[i]
        if i > 0:
            before = self._free_starts[i - 1]
            if before + self._free[before] == start:                     # joins the previous
                self._free[before] += end - start
                return
        self._free[start] = end - start
        bisect.insort(self._free_starts, start)

    def largest_free(self) -> int:
        return max(self._free.values(), default=0)


class State(enum.Enum):
    CREATING = "creating"     # a writer fills it
    SEALED = "sealed"         # readable
    PULLING = "pulling"       # coming from another node's store
    SPILLED = "spilled"       # on disk only
    RESTORING = "restoring"   # being read back from disk


class StoredObject:
    __slots__ = ("object_id", "size", "offset", "state", "primary", "owner", "pins",
                 "freed", "last_used", "site", "spill_path", "waiting", "writer")

    def __init__(self, object_id: bytes, size: int, offset: int | None, state: State,
                 primary: bool, owner: bytes, site: str, now: float, writer: int) -> None:
        self.object_id = object_id
        self.size = size
        self.offset = offset                   # None while on disk only
        self.state = state
        self.primary = primary
        self.owner = owner                     # the owner's process id
        self.pins: dict[int, int] = {}         # client -> views it holds
        self.freed = False                     # the owner freed it: gone once unpinned
        self.last_used = now
        self.site = site                       # where it was made (for memory_summary)
        self.spill_path = ""
        self.waiting: list[tuple[int, int]] = []   # (client, request id) of gets waiting
        self.writer = writer                   # the client filling it (CREATING)


# -- commands ------------------------------------------------------------------------------
class Reply(NamedTuple):
    """Answer a client's request: ``value`` is (offset, size) for a create, (offset, size,
    pulled) for a get when ``ok``, else the error text (and ``lost``: the object is gone
    for good, not only out of room)."""
    client: int
    request_id: int
    ok: bool
    value: object
    lost: bool = False
    object_id: bytes = b""


class Pull(NamedTuple):
    """Copy the object into [offset, offset + size) from one of the stores at
    ``sources`` (each holds a copy; the shell tries them in turn, in a random order)."""
    object_id: bytes
    sources: tuple[str, ...]
    offset: int
    size: int


class Spill(NamedTuple):
    """Write [offset, offset + size) to a file; then call ``spilled``."""
    object_id: bytes
    offset: int
    size: int


class Restore(NamedTuple):
    """Read the spill file back into [offset, offset + size); then call ``restored``."""
    object_id: bytes
    path: str
    offset: int
    size: int


class RemoveFile(NamedTuple):
    path: str


Command = Union[Reply, Pull, Spill, Restore, RemoveFile]


class NoRoom(Exception):
    """Nothing more can be evicted or spilled to make room."""


class StoreState:
    """The objects of one node's store (see the module's docstring)."""

    def __init__(self, capacity: int) -> None:
        self.alloc = Allocator(capacity)
        self.objects: dict[bytes, StoredObject] = {}
        self.spilled_bytes = 0
        self.counts = {"evicted": 0, "spilled": 0, "restored": 0, "pulled": 0}

    # -- writing ----------------------------------------------------------------------
    def create(self, client: int, request_id: int, object_id: bytes, size: int, owner: bytes,
               site: str, now: float) -> list[Command]:
        """A client on this node will write an object (a put, or a task's return): room
        for it, or spills first (then call ``create`` again), or an error. An object
        already there (a retried task wrote it before) is answered ``(None, size)``: the
        writer keeps what it has."""
        known = self.objects.get(object_id)
        if known is not None and not known.freed:
            return [Reply(client, request_id, True, (None, known.size), object_id=object_id)]
        if size > self.alloc.capacity:
            return [Reply(client, request_id, False, self._too_large(size), object_id=object_id)]
        offset, spills = self._room(size)
        if offset is None:
            if spills:
                return list(spills)
            return [Reply(client, request_id, False, self._full(size), object_id=object_id)]
        self.objects[object_id] = StoredObject(object_id, size, offset, State.CREATING, True,
                                               owner, site, now, client)
        return [Reply(client, request_id, True, (offset, size), object_id=object_id)]

    def seal(self, object_id: bytes, now: float) -> list[Command]:
        """The writer filled it: readers may map it."""
        obj = self.objects.get(object_id)
        if obj is None or obj.state is not State.CREATING:
            return []
        obj.state = State.SEALED
        obj.last_used = now
        return self._answer_waiting(obj)

    def abort(self, object_id: bytes) -> list[Command]:
        """The writer gave up (its value failed, or it died): forget the object."""
        obj = self.objects.get(object_id)
        if obj is None or obj.state is not State.CREATING:
            return []
        return self._drop(obj, "its writer gave up before it was complete")

    # -- reading ----------------------------------------------------------------------
    def get(self, client: int, request_id: int, object_id: bytes, sources: tuple[str, ...],
            size: int, now: float) -> list[Command]:
        """A client wants to read an object: (offset, size, pulled) now, pinned for it,
        or once it is pulled from one of ``sources`` (other nodes' stores that hold it),
        read back from disk, or sealed by its writer. ``pulled``: this get made the copy
        here (its owner may tell others to pull from us)."""
        obj = self.objects.get(object_id)
        if obj is not None and obj.freed:
            return [Reply(client, request_id, False, "it was freed by its owner", lost=True,
                          object_id=object_id)]
        if obj is None:
            if not sources:
                return [Reply(client, request_id, False, "it is not in this node's store",
                              lost=True, object_id=object_id)]
            offset, spills = self._room(size)
            if offset is None:
                if spills:
                    return list(spills)
                return [Reply(client, request_id, False, self._full(size), object_id=object_id)]
            obj = StoredObject(object_id, size, offset, State.PULLING, False, object_id[:8],
                               "pulled from another node", now, -1)
            obj.waiting.append((client, request_id))
            self.objects[object_id] = obj
            return [Pull(object_id, tuple(sources), offset, size)]
        obj.last_used = now
        if obj.state is State.SEALED:
            obj.pins[client] = obj.pins.get(client, 0) + 1
            return [Reply(client, request_id, True, (obj.offset, obj.size, False),
                          object_id=object_id)]
        if obj.state is State.SPILLED:
            offset, spills = self._room(obj.size, keep=object_id)
            if offset is None:
                if spills:
                    return list(spills)
                return [Reply(client, request_id, False, self._full(obj.size),
                              object_id=object_id)]
            obj.offset = offset
            obj.state = State.RESTORING
            obj.waiting.append((client, request_id))
            return [Restore(object_id, obj.spill_path, offset, obj.size)]
        obj.waiting.append((client, request_id))   # CREATING, PULLING, RESTORING
        return []

    def release(self, client: int, object_ids: list[bytes]) -> list[Command]:
        """The client's views of these objects are gone (one release per get)."""
        out: list[Command] = []
        for object_id in object_ids:
            obj = self.objects.get(object_id)
            if obj is None or client not in obj.pins:
                continue
            left = obj.pins[client] - 1
            if left > 0:
                obj.pins[client] = left
                continue
            del obj.pins[client]
            if obj.freed and not obj.pins:
                out += self._drop(obj, "")
        return out

    # -- lifetime ---------------------------------------------------------------------
    def free(self, object_ids: list[bytes]) -> list[Command]:
        """The owner freed these objects: drop every copy here, once nobody reads it."""
        out: list[Command] = []
        for object_id in object_ids:
            obj = self.objects.get(object_id)
            if obj is None:
                continue
            obj.freed = True
            if not obj.pins and obj.state in (State.SEALED, State.SPILLED):
                out += self._drop(obj, "")
            # CREATING, PULLING, RESTORING: dropped when that ends (it sees ``freed``)
        return out

    def owner_gone(self, owner: bytes) -> list[Command]:
        """A process that owned objects is gone: nobody can name them any more."""
        return self.free([oid for oid, obj in self.objects.items() if obj.owner == owner])

    def client_gone(self, client: int) -> list[Command]:
        """A client disconnected (or died): its views are gone, and what it was writing
        will never be complete."""
        out: list[Command] = []
        for obj in list(self.objects.values()):
            obj.waiting = [(c, r) for c, r in obj.waiting if c != client]
            if obj.pins.pop(client, None) is not None and obj.freed and not obj.pins:
                out += self._drop(obj, "")
            elif obj.state is State.CREATING and obj.writer == client:
                out += self._drop(obj, "its writer went away before it was complete")
        return out

    # -- what the shell did -----------------------------------------------------------
    def pulled(self, object_id: bytes, ok: bool, error: str, now: float) -> list[Command]:
        obj = self.objects.get(object_id)
        if obj is None or obj.state is not State.PULLING:
            return []
        if not ok:
            return self._drop(obj, error, lost=True)
        self.counts["pulled"] += 1
        obj.state = State.SEALED
        obj.last_used = now
        if obj.freed:
            return self._drop(obj, "it was freed by its owner", lost=True)
        return self._answer_waiting(obj, pulled=True)

    def spilled(self, object_id: bytes, path: str, ok: bool, error: str) -> list[Command]:
        """A spill ended: its memory is free now (or, failing, it stays in memory)."""
        obj = self.objects.get(object_id)
        if obj is None:
            return [RemoveFile(path)] if ok else []
        if not ok:
            obj.state = State.SEALED
            return []
        assert obj.offset is not None
        self.alloc.free(obj.offset)
        obj.offset = None
        obj.state = State.SPILLED
        obj.spill_path = path
        self.spilled_bytes += obj.size
        self.counts["spilled"] += 1
        if obj.freed and not obj.pins:
            return self._drop(obj, "")
        return []

    def restored(self, object_id: bytes, ok: bool, error: str, now: float) -> list[Command]:
        obj = self.objects.get(object_id)
        if obj is None or obj.state is not State.RESTORING:
            return []
        assert obj.offset is not None
        if not ok:
            self.alloc.free(obj.offset)
            obj.offset = None
            obj.state = State.SPILLED
            out: list[Command] = [Reply(c, r, False, f"could not read it back from disk: {error}",
                                        object_id=object_id) for c, r in obj.waiting]
            obj.waiting = []
            return out
        self.counts["restored"] += 1
        self.spilled_bytes -= obj.size
        # Its file stays: if memory is needed again, this copy goes without a write.
        obj.state = State.SEALED
        obj.last_used = now
        if obj.freed:
            return self._drop(obj, "it was freed by its owner", lost=True)
        return self._answer_waiting(obj)

    # -- questions --------------------------------------------------------------------
    def summary(self) -> dict[str, int]:
        in_memory = [o for o in self.objects.values() if o.offset is not None]
        return {"capacity": self.alloc.capacity, "used": self.alloc.used,
                "high_water": self.alloc.high_water,
                "objects": len(self.objects), "in_memory": len(in_memory),
                "spilled_objects": sum(1 for o in self.objects.values()
                                       if o.state is State.SPILLED),
                "spilled_bytes": self.spilled_bytes,
                "primary_bytes": sum(o.size for o in in_memory if o.primary),
                "secondary_bytes": sum(o.size for o in in_memory if not o.primary),
                **self.counts}

    def listing(self) -> list[dict[str, object]]:
        """Every object, for ``memory_summary``."""
        return [{"object_id": o.object_id.hex(), "size": o.size, "state": o.state.value,
                 "primary": o.primary, "owner": o.owner.hex(), "readers": len(o.pins),
                 "site": o.site, "spill_path": o.spill_path}
                for o in self.objects.values()]

    # -- inside -------------------------------------------------------------------------
    def _room(self, size: int, keep: bytes = b"") -> tuple[int | None, list[Spill]]:
        """An offset for ``size`` bytes, evicting secondary copies nobody reads if need
        be (least recently used first); else the spills that would make room."""
        offset = self.alloc.allocate(size)
        if offset is not None:
            return offset, []
        idle = sorted((o for o in self.objects.values()
                       if o.state is State.SEALED and not o.pins and o.object_id != keep),
                      key=lambda o: o.last_used)
        for obj in idle:
            if obj.primary:
                continue
            self.counts["evicted"] += 1
            self._drop(obj, "")
            offset = self.alloc.allocate(size)
            if offset is not None:
                return offset, []
        # Primaries read back from disk are there still: their memory goes, no write.
        for obj in idle:
            if obj.primary and obj.spill_path and obj.object_id in self.objects:
                assert obj.offset is not None
                self.alloc.free(obj.offset)
                obj.offset = None
                obj.state = State.SPILLED
                self.spilled_bytes += obj.size
                self.counts["spilled"] += 1
                offset = self.alloc.allocate(size)
                if offset is not None:
                    return offset, []
        # Spill primaries nobody reads until the free bytes would cover the object (it
        # may still not fit for fragmentation: then the caller asks again and we spill more).
        needed = self.alloc.rounded(size) - (self.alloc.capacity - self.alloc.used)
        spills: list[Spill] = []
        for obj in idle:
            if not obj.primary or obj.object_id not in self.objects or obj.offset is None:
                continue
            assert obj.offset is not None
            spills.append(Spill(obj.object_id, obj.offset, obj.size))
            needed -= self.alloc.rounded(obj.size)
            if needed <= 0:
                break
        return None, spills

    def _answer_waiting(self, obj: StoredObject, pulled: bool = False) -> list[Command]:
        out: list[Command] = []
        for client, request_id in obj.waiting:
            obj.pins[client] = obj.pins.get(client, 0) + 1
            out.append(Reply(client, request_id, True, (obj.offset, obj.size, pulled),
                             object_id=obj.object_id))
        obj.waiting = []
        return out

    def _drop(self, obj: StoredObject, why: str, lost: bool = False) -> list[Command]:
        """Forget the object; answer whoever waited for it with ``why``."""
        del self.objects[obj.object_id]
        out: list[Command] = [Reply(c, r, False, why or "it was freed", lost=lost,
                                    object_id=obj.object_id) for c, r in obj.waiting]
        if obj.offset is not None:
            self.alloc.free(obj.offset)
        elif obj.spill_path:          # on disk only
            self.spilled_bytes -= obj.size
        if obj.spill_path:
            out.append(RemoveFile(obj.spill_path))
        return out

    def _too_large(self, size: int) -> str:
        return (f"an object of {format_bytes(size)} is larger than this node's whole object store "
                f"({format_bytes(self.alloc.capacity)}); start the cluster with a larger "
                f"object_store_memory, or split the value")

    def _full(self, size: int) -> str:
        pinned = [o for o in self.objects.values() if o.offset is not None and o.pins]
        busy = [o for o in self.objects.values()
                if o.state in (State.CREATING, State.PULLING, State.RESTORING)]
        return (f"the object store has no room for {format_bytes(size)}: "
                f"{format_bytes(self.alloc.used)} of {format_bytes(self.alloc.capacity)} in use, "
                f"{len(pinned)} object(s) ({format_bytes(sum(o.size for o in pinned))}) being read "
                f"and {len(busy)} being written, which cannot be spilled now. Release the "
                f"arrays you got from get() (del them), free refs you no longer need, or "
                f"start the cluster with a larger object_store_memory")

