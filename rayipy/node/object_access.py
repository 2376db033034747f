"""A process's side of the object protocol: storing values, fetching them from their
owners, answering other processes' requests for ours, and carrying borrow counts.

``ObjectTable`` (``core/objects.py``) decides (what is ready, who waits, when an object
is freed) and returns ``Effect``s; this part carries them out on the head link and the
data port, and stores what results bring. It holds no socket of its own: it is given the
head link and a way to the data port.

- ``put`` keeps the value here; its ref's id names us as its owner.
- A borrower asks the owner for a value with ``GET_OBJECT`` (through the head, which adds
  the borrower's data address); the owner answers ``OBJECT_VALUE`` straight to that data
  port, or through the head when it has no address.
- A ref that arrives inside a value registers its holder as a borrower at the owner
  (``BORROW``), and gives the count back when its last local ref dies.
- Values of ``STORE_MIN_BYTES`` or more live in the node's object store
  (``store_client.py``) when this process has one on its node: ``keep`` writes them
  there, and the table holds a ``Stored`` (where it is) in place of the bytes. ``load``
  reads either kind. When the owner frees such an object, it tells the head
  (``FREE_OBJECTS``), which tells every node's store.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, Callable

from rayipy import exceptions
from rayipy.core.object_ref import ObjectRef
from rayipy.core.object_ref import Runtime as RefRuntime
from rayipy.core.objects import PENDING, READY, Effect, ObjectTable
from rayipy.node.head_link import HeadLink
from rayipy.node.store_client import STORE_MIN_BYTES, StoreClient, StoreError, read_remote
from rayipy.protocol import errors, serialization
from rayipy.protocol.kinds import Kind
from rayipy.protocol.messages import OK, ObjectValue, Payload, Stored, TaskResult
from rayipy.protocol.wire import Signer
from rayipy.transport.endpoint import Waker

log = logging.getLogger(__name__)

STORE_LOOKUP_SECONDS = 2.0   # a process with no store on its node looks again this often


def run_callback(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:
        log.exception("an ObjectRef done-callback raised")


class ObjectAccess:
    def __init__(self, objects: ObjectTable, head: HeadLink, waker: Waker,
                 send_to: Callable[[str, Kind, Any], None], refs_runtime: RefRuntime,
                 new_id: Callable[[], bytes], signer: Signer, store_address: str = "") -> None:
        self.objects = objects
        self._head = head
        self._waker = waker
        self._send_to = send_to                       # a message to a data port
        self._refs_runtime = refs_runtime             # what the refs made here belong to
        self._new_id = new_id                         # a fresh id of ours (a task id)
        self._data_addresses: dict[bytes, str] = {}   # requester -> its data port
        # A worker's: borrow registrations made during a direct call go with its reply.
        self.borrow_in_reply: Callable[[bytes, int, bytes], bool] | None = None
        self._signer = signer
        # Our node's store: a worker is told its address; a driver asks the head (``store``).
        self._store_address = store_address
        self._store: StoreClient | None = None
        self._store_looked = -STORE_LOOKUP_SECONDS
        self._store_lock = threading.Lock()
        self.io_thread: threading.Thread | None = None   # must not wait for the head's answer
        # Told the ids of our stored objects as they are freed (the lineage lets go).
        self.on_stored_freed: Callable[[list[bytes]], None] | None = None

    # -- the node's object store --------------------------------------------------------
    def store(self) -> StoreClient | None:
        """The store on this process's node, if there is one (looked for on first use)."""
        if self._store is not None:
            return self._store
        if not self._store_address and threading.current_thread() is self.io_thread:
            return None   # asking the head means waiting for this thread: read remotely
        with self._store_lock:   # one client, however many threads look at once
            if self._store is None:
                self._look_for_store()
        return self._store

    def _look_for_store(self) -> None:
        now = time.monotonic()
        if now - self._store_looked < STORE_LOOKUP_SECONDS:
            return
        self._store_looked = now
        try:
            if self._store_address:
                self._store = StoreClient(self._store_address, self._signer,
                                          self.objects.process_id)
            else:
                for address in self._head.request("stores", (), 10.0):
                    self._store = StoreClient.local(address, self._signer,
                                                    self.objects.process_id)
                    if self._store is not None:
                        break
        except (OSError, ConnectionError, TimeoutError, exceptions.RayipyError) as e:
            log.warning("cannot use this node's object store (%s): large values go "
                        "process to process instead", e)

    def keep(self, object_id: bytes, payload: Payload, site: str) -> Payload | Stored:
        """Where a new value of ours lives: large, in the node's store (one copy from the
        caller's buffers); else here, its buffers copied so the caller may change them.
        ``payload`` comes from ``dumps(snapshot=False)``."""
        if payload.buffers and payload.nbytes >= STORE_MIN_BYTES:
            store = self.store()
            if store is not None:
                return store.put(object_id, payload, site)
        return serialization.freeze(payload)

    def load(self, value: Payload | Stored, object_id: bytes = b"") -> Any:
        """The value a payload stands for; a stored one read from the node's store (pulled
        there first if it lives on another node). A value that will not unpickle raises
        DeserializationError naming the object (``object_id``, if the payload is inline)."""
        if type(value) is not Stored:
            return self._unpickle(value, object_id)
        store = self.store()
        try:
            if store is not None:
                copy = (value.object_id, store.address)   # if this get makes a copy here
                payload = store.get(value, lambda: self._head.send(Kind.OBJECT_COPY, copy))
            else:
                payload = read_remote(value, self._signer)
        except StoreError as e:
            if not e.lost:   # there, but no room to bring it back into memory
                raise exceptions.ObjectStoreFullError(
                    f"cannot read ObjectRef({value.object_id.hex()}): {e}") from None
            raise exceptions.ObjectLostError(
                f"ObjectRef({value.object_id.hex()}) is lost: {e} (its value was stored on "
                f"node {value.node_id.hex()}, at {value.address})") from None
        except (OSError, ConnectionError, TimeoutError) as e:
            raise exceptions.ObjectLostError(
                f"ObjectRef({value.object_id.hex()}) is lost: {e} (its value was stored on "
                f"node {value.node_id.hex()}, at {value.address})") from None
        return self._unpickle(payload, value.object_id)

    def _unpickle(self, payload: Payload, object_id: bytes) -> Any:
        try:
            return serialization.loads(payload)
        except Exception as e:
            # Unpickling runs the value's own code (__setstate__, __reduce__'s callable):
            # its bare error would say neither which object nor which task.
            task = self.objects.info(object_id).get("task", "") if object_id else ""
            if isinstance(e, MemoryError):   # out of memory, not a broken value: kept
                made_by = f" (the result of task {task!r})" if task else ""
                if hasattr(e, "add_note"):   # Python 3.11
                    e.add_note(f"while unpickling ObjectRef({object_id.hex()}){made_by}")
                raise
            raise exceptions.DeserializationError(
                object_id.hex(), task, f"{type(e).__name__}: {e}") from e

    def fetch_to_node(self, value: Stored) -> None:
        """Make sure a stored value has a copy in this node's store (``wait(fetch_local=
        True)``); a value that cannot be fetched is left for ``get`` to report."""
        store = self.store()
        if store is None or value.node_id == store.node_id:
            return
        try:
            copy = (value.object_id, store.address)
            view = store.get(value, lambda: self._head.send(Kind.OBJECT_COPY, copy))
        except (StoreError, OSError, ConnectionError, TimeoutError):
            return
        del view   # the copy stays in the store; only our pin goes

    def flush_store_releases(self) -> None:
        """Tell the store which views of its objects are gone: the I/O thread at each
        turn, a worker's main thread after each task."""
        if self._store is not None:
            self._store.flush_releases()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    # -- any thread ------------------------------------------------------------------------
    def put(self, value: Any) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError("put() of an ObjectRef is not allowed: pass the ref itself instead")
        payload, contained = serialization.dumps(value, "the value given to put()", snapshot=False)
        return self.put_payload(payload, contained)

    def put_payload(self, payload: Payload, contained: list[ObjectRef]) -> ObjectRef:
        """A new object of ours with this value (from ``dumps(snapshot=False)``)."""
        oid = self._new_id() + b"\x00\x00"
        kept = self.keep(oid, payload, _call_site())
        self.carry_out(self.objects.add_ready(oid, kept, [r.id for r in contained]))
        return ObjectRef(oid, self._refs_runtime)

    def value_or_error(self, object_id: bytes) -> tuple[bool, Any]:
        state, payload = self.objects.value(object_id)
        if state == READY:
            assert payload is not None
            return True, self.load(payload, object_id)
        if state == PENDING:
            raise exceptions.RayipySystemError("value_or_error() on a pending object")
        if payload is None:
            return False, exceptions.ObjectLostError(
                f"ObjectRef({object_id.hex()}) was freed, or its owner is gone")
        return False, errors.rebuild_error(payload)

    def request_values(self, object_ids: list[bytes]) -> None:
        """Ask the owners of the borrowed ones that are still pending (once each)."""
        effects = self.objects.need_fetch(object_ids)
        if effects:
            self.carry_out(effects)

    def on_ref_rebuilt(self, object_id: bytes) -> None:
        effects = self.objects.on_ref_rebuilt(object_id)
        if effects:
            self.carry_out(effects)

    def fetch_value(self, object_id: bytes) -> Any:
        """Fetch a value we hold no ref to (a task's large argument) from its owner, as a
        borrower for as long as it takes; raises its error if it has one."""
        self.on_ref_rebuilt(object_id)
        ref = ObjectRef(object_id, self._refs_runtime, counted=True)
        self.request_values([object_id])
        self.objects.wait([object_id], 1, None)
        ok, value = self.value_or_error(object_id)
        del ref
        # Give the borrow back now, not at the I/O thread's next turn: until the owner
        # hears, it keeps the value, and its memory cannot serve the next one.
        self._waker.wake()
        if not ok:
            raise value
        return value

    def route_borrow(self, object_id: bytes, delta: int, borrower: bytes) -> None:
        """Register (or give back) ``borrower``'s hold on an object at its owner."""
        if self.objects.owns(object_id):
            self.carry_out(self.objects.add_borrower(object_id, borrower, delta))
        elif self.borrow_in_reply is None or not self.borrow_in_reply(object_id, delta, borrower):
            self._head.send(Kind.BORROW, ([(object_id, delta)], borrower))

    def carry_out(self, effects: list[Effect]) -> None:
        freed = []
        for effect in effects:
            if effect.what == "borrow":
                oid, delta = effect.arg
                self.route_borrow(oid, delta, self.objects.process_id)
            elif effect.what == "fetch":
                self._head.send(Kind.GET_OBJECT, (effect.arg, self.objects.process_id))
            elif effect.what == "actor_gone":
                # The last handle to an actor we created is gone, everywhere.
                self._head.send(Kind.KILL_ACTOR, (effect.arg, "no handle to it is left"))
            elif effect.what == "store_free":
                freed.append(effect.arg)
        if freed:
            if self._store is not None:   # ours first: the next put may want the room
                self._store.free(freed)
            self._head.send(Kind.FREE_OBJECTS, (freed,))
            if self.on_stored_freed is not None:
                self.on_stored_freed(freed)

    def store_result(self, result: TaskResult, return_ids: tuple) -> list[Callable[[], None]]:
        """A task of ours ended: its values (or its error) into its return objects, and
        to whoever asked for them meanwhile. Returns the done-callbacks to run."""
        callbacks: list[Callable[[], None]] = []
        info = {"where": result.where, "duration": result.duration}
        ok = result.status == OK
        for i, oid in enumerate(return_ids):
            payload = result.values[i] if ok else result.values[0]
            contains = result.contains[i] if ok and result.contains else ()
            cbs, waiting, effects = self.objects.fulfill(oid, ok, payload, contains, True, info)
            callbacks.extend(cbs)
            self.carry_out(effects)
            for requester in waiting:
                self._send_value(oid, ObjectValue(ok, payload), requester)
        return callbacks

    # -- handlers (I/O thread) -----------------------------------------------------------------
    def on_get_object(self, body: tuple) -> None:
        object_id, requester, address = body
        if address:
            self._data_addresses[requester] = address
        state, payload = self.objects.answer_when_ready(object_id, requester)
        if state == PENDING:
            return   # sent by store_result when the value comes
        if payload is None:
            payload = errors.capture_system_error(exceptions.ObjectLostError(
                f"ObjectRef({object_id.hex()}) was already freed by its owner"))
        self._send_value(object_id, ObjectValue(state == READY, payload), requester)

    def on_object_value(self, body: tuple) -> None:
        object_id, value, _requester = body
        cbs, _waiting, effects = self.objects.fulfill(object_id, value.ok, value.payload)
        self.carry_out(effects)
        for fn in cbs:
            run_callback(fn)

    def on_object_copy(self, body: tuple) -> None:
        """Another node's store pulled a copy of a stored object of ours: name it to
        later readers, who may pull from it instead."""
        object_id, address = body
        self.objects.add_copy(object_id, str(address))

    def on_borrow(self, body: tuple) -> None:
        changes, borrower = body
        for object_id, delta in changes:
            self.carry_out(self.objects.add_borrower(object_id, borrower, delta))

    def _send_value(self, object_id: bytes, value: ObjectValue, requester: bytes) -> None:
        # A stored value is only its place (small): it may go the head's way too.
        address = self._data_addresses.get(requester)
        if address:
            self._send_to(address, Kind.OBJECT_VALUE, (object_id, value, requester))
        else:
            self._head.send(Kind.OBJECT_VALUE, (object_id, value, requester))


def _call_site() -> str:
    """Where the user's code made this object (the first frame outside rayipy), for
    ``memory_summary``."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("rayipy"):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return ""
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"
