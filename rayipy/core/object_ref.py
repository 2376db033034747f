"""ObjectRef: the future a remote call returns.

It behaves like ``concurrent.futures.Future`` (``done``, ``result``, ``exception``,
``add_done_callback``), converts to one with ``.future()``, and can be awaited. Its
value lives in the owning process's ObjectTable; the ref itself is just an id plus the
runtime of the process it lives in, so it is cheap to create and to pickle.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any, Callable, Generator, Protocol

from rayipy.core.objects import FAILED, PENDING, ObjectTable
from rayipy.protocol import serialization


class Runtime(Protocol):
    """All that an ObjectRef uses of the process it lives in: the driver's or a worker's
    ``rayipy.node.client.Runtime`` (``tests/unit/test_types.py`` checks that it fits)."""

    @property
    def objects(self) -> ObjectTable:
        """The process's objects: their states, callbacks and released refs."""

    def get_values(self, refs: list[ObjectRef], timeout: float | None) -> list[Any]:
        """The refs' values in order, waiting at most ``timeout`` seconds (None: for
        ever); raises a ref's error, or GetTimeoutError."""

    def value_or_error(self, object_id: bytes) -> tuple[bool, Any]:
        """``(True, value)`` or ``(False, exception)`` of an object that is not pending."""

    def request_values(self, object_ids: list[bytes]) -> None:
        """Ask the owners of those objects we borrow and wait for to send their values."""

    def wait_refs(self, refs: list[ObjectRef], num_returns: int, timeout: float | None,
                  raise_timeout: bool = False) -> tuple[list[ObjectRef], list[ObjectRef]]:
        """``(ready, not ready)`` once ``num_returns`` refs are ready or ``timeout`` has
        passed; with ``raise_timeout``, GetTimeoutError rather than too few ready."""

    def on_ref_rebuilt(self, object_id: bytes) -> None:
        """A ref to the object was unpickled in this process: count it (and borrow the
        object from its owner, the first time)."""


_current_runtime: Runtime | None = None


def set_runtime(runtime: Runtime | None) -> None:
    """The runtime that unpickled refs attach to (one per process)."""
    global _current_runtime
    _current_runtime = runtime


def current_runtime() -> Runtime | None:
    """The runtime set by ``set_runtime``, or None outside a cluster."""
    return _current_runtime


class _StdlibWaitState:
    """What ``concurrent.futures.wait`` and ``as_completed`` touch on a future besides its
    public methods: a condition, and the waiters to tell when it settles.

    Those two functions read ``f._condition``, ``f._state`` and ``f._waiters`` (CPython's
    ``concurrent/futures/_base.py``, the same since 3.2), so a ref passed to them straight
    failed with ``AttributeError: _condition``. A ref gets one of these the first time
    either function looks at it; a done-callback then hands the ref to every waiter.
    """

    __slots__ = ("condition", "waiters")

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.waiters: list[Any] = []


_stdlib_state_lock = threading.Lock()


def _rebuild_ref(object_id: bytes) -> ObjectRef:
    runtime = _current_runtime
    if runtime is None:
        # Unpickled outside a cluster (e.g. a stored value loaded later): an inert ref.
        return ObjectRef(object_id, None, counted=False)
    runtime.on_ref_rebuilt(object_id)
    return ObjectRef(object_id, runtime, counted=True)


class ObjectRef:
    """A reference to a value that a task will produce (or that ``put`` stored)."""

    __slots__ = ("id", "_runtime", "_counted", "_stdlib_wait", "__weakref__")

    def __init__(self, object_id: bytes, runtime: Runtime | None, counted: bool = True) -> None:
        self.id = object_id
        self._runtime = runtime
        self._counted = counted
        self._stdlib_wait: _StdlibWaitState | None = None

    def __del__(self) -> None:
        runtime = self._runtime
        if self._counted and runtime is not None:
            try:
                runtime.objects.queue_release(self.id)
            except Exception:
                pass  # interpreter shutdown

    def __reduce__(self) -> tuple[Callable[[bytes], ObjectRef], tuple[bytes]]:
        serialization.note_contained_ref(self)
        return (_rebuild_ref, (self.id,))

    def hex(self) -> str:
        """The object id in hexadecimal."""
        return self.id.hex()

    def __repr__(self) -> str:
        return f"ObjectRef({self.id.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # -- future interface ---------------------------------------------------------------
    def _need_runtime(self) -> Runtime:
        if self._runtime is None:
            from rayipy.exceptions import ObjectLostError
            raise ObjectLostError(f"{self!r} was unpickled outside a rayipy cluster")
        return self._runtime

    def done(self) -> bool:
        """Whether the value (or its error) is here; never waits."""
        runtime = self._need_runtime()
        state = runtime.objects.state(self.id)
        if state == PENDING:
            runtime.request_values([self.id])
            return False
        return True

    def result(self, timeout: float | None = None) -> Any:
        """The value, waiting at most ``timeout`` seconds; raises the task's error."""
        return self._need_runtime().get_values([self], timeout)[0]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The task's error, or None if it succeeded, waiting at most ``timeout`` seconds."""
        runtime = self._need_runtime()
        runtime.wait_refs([self], 1, timeout, raise_timeout=True)
        ok, value = runtime.value_or_error(self.id)
        if ok:
            return None
        error: BaseException = value
        return error

    def add_done_callback(self, fn: Callable[[ObjectRef], object]) -> None:
        """Call ``fn(ref)`` once the value is ready (at once if it already is).

        Callbacks run on the process's I/O thread: keep them short and never block.
        """
        runtime = self._need_runtime()
        if runtime.objects.add_callback(self.id, lambda: fn(self)):
            runtime.request_values([self.id])
        else:
            fn(self)

    def future(self) -> concurrent.futures.Future[Any]:
        """A ``concurrent.futures.Future`` that settles with this ref."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        fut.set_running_or_notify_cancel()

        def settle(ref: ObjectRef) -> None:
            ok, value = ref._need_runtime().value_or_error(ref.id)
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

        self.add_done_callback(settle)
        return fut

    def cancelled(self) -> bool:
        """Always False: a ref is never a cancelled *future*. A cancelled task's ref is
        done, and its ``result()`` raises TaskCancelledError (as in Ray)."""
        return False

    # -- what concurrent.futures.wait / as_completed read (see _StdlibWaitState) ----------
    def _wait_state(self) -> _StdlibWaitState:
        state = self._stdlib_wait
        if state is None:
            with _stdlib_state_lock:
                state = self._stdlib_wait
                if state is None:
                    state = self._stdlib_wait = _StdlibWaitState()
                    self.add_done_callback(ObjectRef._notify_stdlib_waiters)
        return state

    def _notify_stdlib_waiters(self) -> None:
        state = self._wait_state()
        failed = self._need_runtime().objects.state(self.id) == FAILED
        with state.condition:
            for waiter in state.waiters:
                if failed:
                    waiter.add_exception(self)
                else:
                    waiter.add_result(self)

    @property
    def _condition(self) -> threading.Condition:
        return self._wait_state().condition

    @property
    def _waiters(self) -> list[Any]:
        return self._wait_state().waiters

    @property
    def _state(self) -> str:
        # Asked under _condition, after the callback is registered: a ref that settles
        # after this answer finds the waiter installed when its callback takes the lock.
        return "FINISHED" if self.done() else "RUNNING"

    def __await__(self) -> Generator[Any, None, Any]:
        import asyncio
        return asyncio.wrap_future(self.future()).__await__()

    # -- Ray compatibility ----------------------------------------------------------------
    def task_id(self) -> bytes:
        """The id of the task that produces the object."""
        return self.id[:16]

    def binary(self) -> bytes:
        """The object id (Ray's name)."""
        return self.id
