"""Pure bookkeeping of one generator task's stream, on its owner.

A generator task (``num_returns="streaming"`` or ``"dynamic"``) reports each value it
yields as it yields it (``GENERATOR_ITEM``), numbered from 1; when it ends, its one
return object (index 0, the *completion*) holds how many items it sent. Item ``i`` is the
object ``task id + i``, owned by the caller like any return value.

Items may arrive out of order (they travel the head's path, a retried task sends them
again) and the end may overtake the last items, so the stream is a set of indices that
arrived plus the count once known, and the consumer asks ``StreamState.step`` what the
next position holds:

- ``Yield(i)``: item ``i`` is here: hand out its ref;
- ``WaitFor(i)``: not yet: wait for item ``i`` (or for the end, while it is unknown);
- ``Stop``: every item was handed out (``StopIteration``);
- ``Failed``: the task ended without a count (cancelled, its worker died, it could not
  start): the completion's error is the answer at this position, and then ``Stop``.

An exception raised inside the generator is an item of its own (its ref raises on
``get``), at the position where it was raised, as in Ray; the count includes it.

No threads, no sockets: the runtime (``rayipy.node.streams``) holds a lock around it.
"""

from __future__ import annotations

from typing import NamedTuple, Union

INDEX_BYTES = 4          # item index in an object id: task id (16 bytes) + 4 bytes
MAX_ITEMS = 2**32 - 1


def item_id(task_id: bytes, index: int) -> bytes:
    """The object id of item ``index`` (1, 2, ...) of a generator task."""
    return task_id + index.to_bytes(INDEX_BYTES, "big")


class Yield(NamedTuple):
    """Item ``position`` is here: hand out its ref."""
    position: int


class WaitFor(NamedTuple):
    """Item ``position`` is not here yet; ``end_known``: the task has ended (so only the
    item can come), else the end may come first."""
    position: int
    end_known: bool


class Stop(NamedTuple):
    """Every item was handed out."""


class Failed(NamedTuple):
    """The task ended without a count: its error answers this position."""


Step = Union[Yield, WaitFor, Stop, Failed]


class StreamState:
    """Which items of one stream arrived, which were handed out, and how it ended."""

    __slots__ = ("arrived", "position", "count", "failed", "closed")

    def __init__(self) -> None:
        self.arrived: set[int] = set()     # indices here and not handed out yet
        self.position = 1                  # the next index to hand out
        self.count: int | None = None      # items the task sent, once it ended well
        self.failed = False                # it ended without a count
        self.closed = False                # Stop or Failed was returned: nothing more

    # -- events ---------------------------------------------------------------------
    def item(self, index: int) -> bool:
        """Item ``index`` arrived; False when it is not wanted (a duplicate from a retry,
        one handed out already, past the count, or the stream is over)."""
        if index < self.position or index in self.arrived or self.closed or index < 1:
            return False
        if self.count is not None and index > self.count:
            return False
        self.arrived.add(index)
        return True

    def ended(self, count: int | None) -> None:
        """The task ended: with the number of items it sent, or None if it failed."""
        if self.count is not None or self.failed:
            return
        if count is None:
            self.failed = True
        else:
            self.count = count
            self.arrived = {i for i in self.arrived if i <= count}

    # -- the consumer ---------------------------------------------------------------
    def step(self) -> Step:
        """What the next position holds; ``Yield`` and ``Failed`` move past it."""
        if self.closed:
            return Stop()
        i = self.position
        if i in self.arrived:
            self.arrived.discard(i)
            self.position += 1
            return Yield(i)
        if self.count is not None:
            if i > self.count:
                self.closed = True
                return Stop()
            return WaitFor(i, True)
        if self.failed:
            # Items after a gap can never be reached in order: the error answers here.
            self.closed = True
            self.arrived.clear()
            return Failed()
        return WaitFor(i, False)

    def finished(self) -> bool:
        """Nothing more will be handed out."""
        return self.closed

    def close(self) -> list[int]:
        """The consumer is gone: the indices still here, to let go."""
        self.closed = True
        left, self.arrived = sorted(self.arrived), set()
        return left
