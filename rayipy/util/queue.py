"""Queue: Ray's ``ray.util.queue.Queue``, a FIFO kept by an actor.

Any process that holds the Queue object (pass it to tasks and actors like any value;
it pickles as the actor's handle) puts and gets through the same actor. Blocking calls
wait inside the actor, which is an asyncio actor, so one caller blocked in ``get`` does
not stop another's ``put``. ``Empty`` and ``Full`` subclass the stdlib's ``queue.Empty``
and ``queue.Full``, so code written for ``queue.Queue`` catches them unchanged.
"""

from __future__ import annotations

import asyncio
import queue as _stdlib_queue
from typing import Any

__all__ = ["Empty", "Full", "Queue"]

# What the actor answers, rather than raising across the wire: the caller raises its own
# Empty/Full, a plain instance of the class (a remote raise would arrive as a TaskError).
_OK, _EMPTY, _FULL = "ok", "empty", "full"


class Empty(_stdlib_queue.Empty):
    """The queue had no item (``get_nowait``, or ``get`` past its timeout)."""


class Full(_stdlib_queue.Full):
    """The queue had no room (``put_nowait``, or ``put`` past its timeout)."""


class _QueueActor:
    """The queue's state, in one asyncio actor."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)

    async def qsize(self) -> int:
        return self.queue.qsize()

    async def empty(self) -> bool:
        return self.queue.empty()

    async def full(self) -> bool:
        return self.queue.full()

    async def put(self, item: Any, timeout: float | None = None) -> tuple[str, str]:
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            return _FULL, f"the queue stayed full for {timeout} s"
        return _OK, ""

    async def get(self, timeout: float | None = None) -> tuple[str, Any]:
        try:
            return _OK, await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return _EMPTY, f"the queue stayed empty for {timeout} s"

    async def put_nowait(self, item: Any) -> tuple[str, str]:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            return _FULL, f"the queue is full ({self.maxsize} items)"
        return _OK, ""

    async def put_nowait_batch(self, items: list[Any]) -> tuple[str, str]:
        # All or nothing: check the room first, as Ray does.
        if self.maxsize > 0 and len(items) + self.queue.qsize() > self.maxsize:
            return _FULL, (f"Cannot add {len(items)} items to queue of size "
                           f"{self.queue.qsize()} and maxsize {self.maxsize}.")
        for item in items:
            self.queue.put_nowait(item)
        return _OK, ""

    async def get_nowait(self) -> tuple[str, Any]:
        try:
            return _OK, self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return _EMPTY, "the queue is empty"

    async def get_nowait_batch(self, num_items: int) -> tuple[str, Any]:
        if num_items > self.queue.qsize():
            return _EMPTY, f"Cannot get {num_items} items from queue of size {self.queue.qsize()}."
        return _OK, [self.queue.get_nowait() for _ in range(num_items)]


def _answer(reply: tuple[str, Any]) -> Any:
    status, value = reply
    if status == _EMPTY:
        raise Empty(value)
    if status == _FULL:
        raise Full(value)
    return value


def _check_timeout(timeout: Any) -> None:
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or timeout < 0):
        raise ValueError(f"'timeout' must be a non-negative number, got {timeout!r}")


class Queue:
    """A first-in, first-out queue shared by the driver, tasks and actors.

    ``maxsize`` <= 0 means unbounded. ``actor_options`` go to the actor's ``.options()``
    (e.g. ``{"num_cpus": 0, "name": "jobs"}``); the actor needs no CPU by default.
    """

    def __init__(self, maxsize: int = 0, actor_options: dict[str, Any] | None = None) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool):
            raise TypeError(f"maxsize must be an int, got {maxsize!r}")
        from rayipy import remote
        options = dict(actor_options or {})
        # Blocking gets and puts wait in the actor; with one thread they would block every
        # other call. An asyncio actor serves them all on one loop.
        self.maxsize = maxsize
        self.actor = remote(_QueueActor).options(**options).remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """The number of items in the queue."""
        return self.qsize()

    def qsize(self) -> int:
        """The number of items in the queue."""
        return self._call("qsize")

    def empty(self) -> bool:
        """Whether the queue has no item."""
        return self._call("empty")

    def full(self) -> bool:
        """Whether the queue has ``maxsize`` items (never, when unbounded)."""
        return self._call("full")

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add an item; if full, wait (at most ``timeout`` s) or, with ``block=False``,
        raise Full at once."""
        if not block:
            return _answer(self._call("put_nowait", item))
        _check_timeout(timeout)
        return _answer(self._call("put", item, timeout))

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Take the oldest item; if empty, wait (at most ``timeout`` s) or, with
        ``block=False``, raise Empty at once."""
        if not block:
            return _answer(self._call("get_nowait"))
        _check_timeout(timeout)
        return _answer(self._call("get", timeout))

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``."""
        return self.put(item, block=False)

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(block=False)

    def put_nowait_batch(self, items: Any) -> None:
        """Add all the items at once, or none (Full) if they do not all fit."""
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"put_nowait_batch() expects a list of items, got {type(items).__name__}")
        return _answer(self._call("put_nowait_batch", list(items)))

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Take ``num_items`` items at once, or none (Empty) if there are fewer."""
        if not isinstance(num_items, int) or isinstance(num_items, bool) or num_items < 0:
            raise TypeError(f"num_items must be an int >= 0, got {num_items!r}")
        return _answer(self._call("get_nowait_batch", num_items))

    def shutdown(self, force: bool = False, grace_period_s: float = 5) -> None:
        """Stop the queue's actor; the queue cannot be used afterwards.

        ``force=False`` first waits up to ``grace_period_s`` for the actor to answer a
        last call (so calls this process made before are served), then stops it;
        ``force=True`` stops it at once. Calls blocked in the actor raise ActorDiedError.
        """
        from rayipy import kill, wait
        actor = self.actor
        if actor is None:
            return
        self.actor = None
        if not force:
            wait([actor.qsize.remote()], timeout=grace_period_s)
        kill(actor)

    def _call(self, method: str, *args: Any) -> Any:
        from rayipy import get
        if self.actor is None:
            raise RuntimeError("this Queue was shut down (Queue.shutdown())")
        return get(getattr(self.actor, method).remote(*args))
