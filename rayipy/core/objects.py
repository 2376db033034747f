"""The objects one process knows about: values, waiters and reference counts.

Every object has one owner, the process that made its ObjectRef (by submitting the task
or calling put); its id starts with the owner's process id. The owner keeps the value
and decides when it is freed: when no local ObjectRef to it is alive, no pending task of
ours needs it, no other object of ours contains it, and no other process borrows it.

A process that holds a ref it does not own is a borrower: it is registered at the owner
(one count per registration) and sends the counts back when its last local ref dies.

This table holds no sockets. Methods that need a message sent return ``Effect``s, which
the process's I/O thread carries out. It is shared by the user's threads and the I/O
thread, so every method takes the lock; ``ObjectRef.__del__`` never takes it (it may run
inside any allocation, in any thread) and only queues the release.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Iterable, Literal, NamedTuple

from rayipy.protocol.messages import Payload, Stored

PENDING, READY, FAILED = 0, 1, 2
OWNER_ID_BYTES = 8
COPIES_KEPT = 8      # stores named to readers as holding a copy, besides the first

#: Run (on the I/O thread) once an object is no longer pending.
Callback = Callable[[], object]


def owner_of(object_id: bytes) -> bytes:
    """The process id of the object's owner (the first bytes of its id)."""
    return object_id[:OWNER_ID_BYTES]


class Effect(NamedTuple):
    """A message the I/O thread must send: ("borrow", owner, (oid, delta)), ("fetch", owner,
    oid), ("actor_gone", us, actor id) when the creation object of an actor is freed, or
    ("store_free", us, oid) when an object of ours whose value lives in the nodes' object
    stores is freed (every copy goes)."""
    what: Literal["borrow", "fetch", "actor_gone", "store_free"]
    owner: bytes
    arg: Any


class Entry:
    """What one process knows of one object."""
    __slots__ = ("state", "payload", "local_refs", "pins", "borrowers", "registered",
                 "contains", "callbacks", "fetch_sent", "waiting_fetch", "info", "waiters")

    def __init__(self) -> None:
        self.state = PENDING
        self.payload: Payload | Stored | None = None
        self.local_refs = 0           # live ObjectRef instances in this process (and holds)
        self.pins = 0                 # our pending tasks that need this object
        self.borrowers: dict[bytes, int] = {}   # owner side: process -> registrations
        self.registered = 0           # borrower side: registrations we hold at the owner
        self.contains: tuple[bytes, ...] = ()   # ids of the refs its value contains (held)
        self.callbacks: list[Callback] | None = None
        self.fetch_sent = False       # borrower side: GET_OBJECT already asked
        self.waiting_fetch: list[bytes] | None = None   # owner side: processes to answer
        self.info: dict[str, Any] | None = None  # task name, where it ran (for reprs)
        self.waiters: list[_Waiter] | None = None   # threads in wait() for it, while pending


class _Waiter:
    """One thread in ``ObjectTable.wait``: how many more of its objects must settle."""

    __slots__ = ("left", "condition")

    def __init__(self, left: int, condition: threading.Condition) -> None:
        self.left = left
        self.condition = condition


def _settled(e: Entry) -> None:
    """``e`` is pending no more (its value came, it failed, or it was freed): count it
    for each thread that waits for it, and wake one whose count is reached. The table's
    lock is held."""
    waiters = e.waiters
    if waiters:
        e.waiters = None
        for waiter in waiters:
            waiter.left -= 1
            if waiter.left == 0:
                waiter.condition.notify()


class ObjectTable:
    """Every object one process knows: its own and those it borrows (see the module's
    docstring)."""

    def __init__(self, process_id: bytes) -> None:
        self.process_id = process_id
        self._entries: dict[bytes, Entry] = {}
        self._lock = threading.Lock()
        self._released: collections.deque[bytes] = collections.deque()
        self.freed = 0

    # -- creation -------------------------------------------------------------------
    def owns(self, object_id: bytes) -> bool:
        """Whether this process is the object's owner."""
        return object_id[:OWNER_ID_BYTES] == self.process_id

    def add_pending(self, object_id: bytes, info: dict[str, Any] | None = None) -> None:
        """A new object we own whose value a task will produce; one ObjectRef exists."""
        e = Entry()
        e.local_refs = 1
        e.info = info
        with self._lock:
            self._entries[object_id] = e

    def add_ready(self, object_id: bytes, payload: Payload | Stored,
                  contains: Iterable[bytes] = ()) -> list[Effect]:
        """A new object we own with its value (put); one ObjectRef exists."""
        e = Entry()
        e.local_refs = 1
        e.state = READY
        e.payload = payload
        with self._lock:
            self._entries[object_id] = e
            return self._hold_contained(e, contains, registered_for_us=False)

    def mark_actor(self, object_id: bytes, actor_id: bytes) -> None:
        """This object stands for an actor's handles: freeing it stops the actor."""
        with self._lock:
            e = self._entries.get(object_id)
            if e is not None:
                e.info = {**(e.info or {}), "actor": actor_id}

    def on_ref_rebuilt(self, object_id: bytes) -> list[Effect]:
        """An ObjectRef was unpickled here: count it; register as borrower if it is new."""
        with self._lock:
            e = self._entries.get(object_id)
            if e is not None:
                e.local_refs += 1
                return []
            e = self._entries[object_id] = Entry()
            e.local_refs = 1
            if self.owns(object_id):
                # Our own object came back after we freed it: its value is gone.
                e.state = FAILED
                e.payload = None
                return []
            e.registered = 1
            return [Effect("borrow", owner_of(object_id), (object_id, 1))]

    def _hold_contained(self, holder: Entry, contains: Iterable[bytes],
                        registered_for_us: bool) -> list[Effect]:
        """``holder``'s value contains these refs: keep them alive as long as it lives."""
        holder.contains = tuple(contains)
        effects: list[Effect] = []
        for oid in holder.contains:
            e = self._entries.get(oid)
            if e is None:
                e = self._entries[oid] = Entry()
                if self.owns(oid):
                    e.state = FAILED  # ours and already freed: its value is gone
                elif not registered_for_us:
                    e.registered += 1
                    effects.append(Effect("borrow", owner_of(oid), (oid, 1)))
            if registered_for_us and not self.owns(oid):
                e.registered += 1
            e.local_refs += 1
        return effects

    # -- reference counting ----------------------------------------------------------
    def queue_release(self, object_id: bytes) -> None:
        """Called from ObjectRef.__del__: no lock, just a queue."""
        self._released.append(object_id)

    def process_releases(self) -> list[Effect]:
        """Count the releases ``queue_release`` queued (on the I/O thread)."""
        effects: list[Effect] = []
        if not self._released:
            return effects
        with self._lock:
            while self._released:
                oid = self._released.popleft()
                e = self._entries.get(oid)
                if e is not None:
                    e.local_refs -= 1
                    self._maybe_free(oid, e, effects)
        return effects

    def pin(self, object_ids: Iterable[bytes]) -> None:
        """A pending task of ours needs these objects: keep them until ``unpin``."""
        with self._lock:
            for oid in object_ids:
                e = self._entries.get(oid)
                if e is not None:
                    e.pins += 1

    def unpin(self, object_ids: Iterable[bytes]) -> list[Effect]:
        """The task that needed these objects is over."""
        effects: list[Effect] = []
        with self._lock:
            for oid in object_ids:
                e = self._entries.get(oid)
                if e is not None:
                    e.pins -= 1
                    self._maybe_free(oid, e, effects)
        return effects

    def add_borrower(self, object_id: bytes, borrower: bytes, delta: int) -> list[Effect]:
        """Owner side: another process registers (delta > 0) or returns (delta < 0) counts."""
        effects: list[Effect] = []
        with self._lock:
            e = self._entries.get(object_id)
            if e is None:
                return effects
            # Counts are signed: a release may overtake its registration on another path,
            # and the object must stay until both have arrived.
            n = e.borrowers.get(borrower, 0) + delta
            if n:
                e.borrowers[borrower] = n
            else:
                e.borrowers.pop(borrower, None)
            self._maybe_free(object_id, e, effects)
        return effects

    def drop_borrower_everywhere(self, borrower: bytes) -> list[Effect]:
        """A borrowing process died: forget its counts."""
        effects: list[Effect] = []
        with self._lock:
            for oid, e in list(self._entries.items()):
                if e.borrowers.pop(borrower, None) is not None:
                    self._maybe_free(oid, e, effects)
        return effects

    def _maybe_free(self, oid: bytes, e: Entry, effects: list[Effect]) -> None:
        if e.local_refs > 0 or e.pins > 0 or e.borrowers:
            return
        if e.state == PENDING:
            # The task still runs; its result is dropped on arrival (fulfill finds no entry).
            _settled(e)
        del self._entries[oid]
        self.freed += 1
        if e.info and e.info.get("actor") and self.owns(oid):
            effects.append(Effect("actor_gone", self.process_id, e.info["actor"]))
        if type(e.payload) is Stored and self.owns(oid):
            effects.append(Effect("store_free", self.process_id, oid))
        if e.registered and not self.owns(oid):
            effects.append(Effect("borrow", owner_of(oid), (oid, -e.registered)))
        for inner in e.contains:
            ie = self._entries.get(inner)
            if ie is not None:
                ie.local_refs -= 1
                self._maybe_free(inner, ie, effects)

    # -- values ----------------------------------------------------------------------
    def fulfill(self, object_id: bytes, ok: bool, payload: Payload | Stored,
                contains: Iterable[bytes] = (),
                registered_for_us: bool = True, info: dict[str, Any] | None = None
                ) -> tuple[list[Callback], list[bytes], list[Effect]]:
        """A value arrived. Returns (callbacks to run, processes waiting for it, effects)."""
        with self._lock:
            e = self._entries.get(object_id)
            if e is None or e.state != PENDING:
                # Nobody wants it any more; hand back counts registered for us meanwhile.
                effects = [Effect("borrow", owner_of(oid), (oid, -1)) for oid in contains
                           if registered_for_us and not self.owns(oid)]
                if type(payload) is Stored and self.owns(object_id) and e is None:
                    effects.append(Effect("store_free", self.process_id, object_id))
                return [], [], effects
            e.state = READY if ok else FAILED
            e.payload = payload
            if info:
                e.info = {**(e.info or {}), **info}
            effects = self._hold_contained(e, contains, registered_for_us) if contains else []
            callbacks, e.callbacks = e.callbacks or [], None
            waiting, e.waiting_fetch = e.waiting_fetch or [], None
            _settled(e)
        return callbacks, waiting, effects

    def add_copy(self, object_id: bytes, address: str) -> None:
        """Owner side: the store at ``address`` has a copy of a stored object of ours;
        readers are told of the last ``COPIES_KEPT`` (a copy may since have been dropped:
        a reader then tries the next)."""
        with self._lock:
            e = self._entries.get(object_id)
            stored = e.payload if e is not None else None
            if type(stored) is not Stored or address == stored.address \
                    or address in stored.copies:
                return
            assert e is not None
            e.payload = stored._replace(copies=(*stored.copies, address)[-COPIES_KEPT:])

    def reset_pending(self, object_ids: Iterable[bytes]) -> None:
        """Our objects whose value was lost are being made again: pending once more
        (their refs, pins and borrowers stay)."""
        with self._lock:
            for object_id in object_ids:
                e = self._entries.get(object_id)
                if e is not None and self.owns(object_id):
                    e.state = PENDING
                    e.payload = None

    def state(self, object_id: bytes) -> int | None:
        """PENDING, READY or FAILED; None for an object this process does not know."""
        e = self._entries.get(object_id)
        return None if e is None else e.state

    def info(self, object_id: bytes) -> dict[str, Any]:
        """What is known of the task that makes the object (a copy; empty if nothing)."""
        e = self._entries.get(object_id)
        return dict(e.info or {}) if e is not None else {}

    def value(self, object_id: bytes) -> tuple[int, Payload | Stored | None]:
        """(state, payload): the value or the error stored; (FAILED, None) once freed."""
        with self._lock:
            e = self._entries.get(object_id)
            if e is None:
                return FAILED, None
            return e.state, e.payload

    def need_fetch(self, object_ids: Iterable[bytes]) -> list[Effect]:
        """Borrowed, still pending, never asked for: ask their owners (once)."""
        effects: list[Effect] = []
        with self._lock:
            for oid in object_ids:
                e = self._entries.get(oid)
                if e is not None and e.state == PENDING and not e.fetch_sent and not self.owns(oid):
                    e.fetch_sent = True
                    effects.append(Effect("fetch", owner_of(oid), oid))
        return effects

    def answer_when_ready(self, object_id: bytes, requester: bytes
                          ) -> tuple[int, Payload | Stored | None]:
        """Owner side of GET_OBJECT: the value now, or remember to send it later."""
        with self._lock:
            e = self._entries.get(object_id)
            if e is None:
                return FAILED, None
            if e.state == PENDING:
                if e.waiting_fetch is None:
                    e.waiting_fetch = []
                e.waiting_fetch.append(requester)
            return e.state, e.payload

    def add_callback(self, object_id: bytes, fn: Callback) -> bool:
        """Run ``fn`` when the object is ready; False if it already is (caller runs it)."""
        with self._lock:
            e = self._entries.get(object_id)
            if e is None or e.state != PENDING:
                return False
            if e.callbacks is None:
                e.callbacks = []
            e.callbacks.append(fn)
            return True

    def ready_count(self, object_ids: list[bytes]) -> int:
        """How many of the objects are no longer pending (without waiting)."""
        with self._lock:
            return sum(1 for oid in object_ids
                       if (e := self._entries.get(oid)) is None or e.state != PENDING)

    def wait(self, object_ids: list[bytes], num_ready: int, deadline: float | None) -> int:
        """Block until ``num_ready`` of ``object_ids`` are no longer pending; returns how many are.

        The ids are looked at once: the pending ones carry this thread's countdown, which
        each settles as it stops pending, and the one that reaches zero wakes it. (A
        rescan of every id on every value that came cost a 10,000-ref get about 10 us
        per task, holding the lock the I/O thread needs to store values.)
        """
        with self._lock:
            entries = self._entries
            pending = [e for oid in object_ids
                       if (e := entries.get(oid)) is not None and e.state == PENDING]
            ready = len(object_ids) - len(pending)
            if ready >= num_ready:
                return ready
            waiter = _Waiter(num_ready - ready, threading.Condition(self._lock))
            for e in pending:
                if e.waiters is None:
                    e.waiters = [waiter]
                else:
                    e.waiters.append(waiter)
            try:
                while waiter.left > 0:
                    if deadline is None:
                        waiter.condition.wait()
                    else:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        waiter.condition.wait(left)
            finally:
                for e in pending:
                    if e.waiters:
                        e.waiters = [w for w in e.waiters if w is not waiter] or None
            return num_ready - waiter.left

    def fail_all_pending(self, payload: Payload, owner: bytes | None = None) -> list[Callback]:
        """Fail pending objects (of one owner, or all): their producer is gone."""
        callbacks: list[Callback] = []
        with self._lock:
            for oid, e in self._entries.items():
                if e.state == PENDING and (owner is None or owner_of(oid) == owner):
                    e.state = FAILED
                    e.payload = payload
                    callbacks.extend(e.callbacks or [])
                    e.callbacks = None
                    _settled(e)
        return callbacks

    def reference_counts(self) -> dict[bytes, tuple[int, int, int]]:
        """For each object this process owns: (live ObjectRefs here, pending tasks of
        ours that need it, processes that borrow it), for ``memory_summary``."""
        with self._lock:
            return {oid: (e.local_refs, e.pins, sum(1 for n in e.borrowers.values() if n > 0))
                    for oid, e in self._entries.items() if self.owns(oid)}

    def inline_usage(self) -> tuple[int, int]:
        """(count, bytes) of the values of ours kept in this process's own memory, not in
        a node's store."""
        with self._lock:
            sizes = [e.payload.nbytes for oid, e in self._entries.items()
                     if e.state == READY and isinstance(e.payload, Payload) and self.owns(oid)]
        return len(sizes), sum(sizes)

    def inline_values(self) -> list[tuple[bytes, int]]:
        """(object id, bytes) of each value of ours kept in this process's own memory
        (``rayipy.util.state.list_objects``)."""
        with self._lock:
            return [(oid, e.payload.nbytes) for oid, e in self._entries.items()
                    if e.state == READY and isinstance(e.payload, Payload) and self.owns(oid)]

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, int]:
        """Counts of objects by state, and of those freed so far."""
        with self._lock:
            states = collections.Counter(e.state for e in self._entries.values())
        return {"objects": len(self._entries), "pending": states[PENDING], "ready": states[READY],
                "failed": states[FAILED], "freed": self.freed}
