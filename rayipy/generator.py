"""``ObjectRefGenerator``: what a generator task returns, one ObjectRef per yielded value.

    @rayipy.remote(num_returns="streaming")     # the default for a generator function
    def numbers(n):
        for i in range(n):
            yield i

    for ref in numbers.remote(3):               # each ref as soon as the task yields it
        print(rayipy.get(ref))

``next(gen)`` waits for the next value's ref; ``StopIteration`` comes once the task has
ended and every ref was handed out. An exception raised inside the generator is the
ref at its position (its ``get`` raises it), then the iteration stops, as in Ray. So
does a task that ends before its generator does: cancelled (``rayipy.cancel(gen)``: the
next ref raises ``TaskCancelledError``) or its worker lost (``WorkerCrashedError``).
``async for`` and ``await gen.__anext__()`` work too.

``num_returns="dynamic"`` (Ray's older API) returns one ref whose value, once the task
has ended, is a ``DynamicObjectRefGenerator`` over the refs of every value.
"""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

from rayipy.core.object_ref import ObjectRef


class ObjectRefGenerator:
    """The refs a streaming generator task yields, in order, as they come."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream      # rayipy.node.streams.Stream: the runtime's side

    # -- sync --------------------------------------------------------------------------
    def __iter__(self) -> ObjectRefGenerator:
        return self

    def __next__(self) -> ObjectRef:
        return self._stream.next_ref()

    def next_ready(self, timeout: float | None = None) -> ObjectRef:
        """``next``, waiting at most ``timeout`` seconds (``GetTimeoutError`` after)."""
        return self._stream.next_ref(timeout)

    # -- async -------------------------------------------------------------------------
    def __aiter__(self) -> ObjectRefGenerator:
        return self

    async def __anext__(self) -> ObjectRef:
        stream = self._stream
        while True:
            what, value = stream.poll()
            if what == "item":
                return value
            if what == "stop":
                raise StopAsyncIteration
            if what == "error":
                return value
            # Any of them settling moves the stream on: the item, or the task's end.
            futures = [asyncio.wrap_future(ref.future()) for ref in value]
            try:
                await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for future in futures:
                    future.cancel()

    # -- the task ----------------------------------------------------------------------
    def completed(self) -> ObjectRef:
        """The task's own ref: ready when the task has ended (it raises if the task
        failed without yielding its error)."""
        return self._stream.completion

    def is_finished(self) -> bool:
        """Every ref was handed out (the next ``next`` raises StopIteration)."""
        return self._stream.state.finished()

    def task_id(self) -> bytes:
        """The id of the generator task."""
        return self._stream.task_id

    def __reduce__(self) -> Any:
        raise TypeError("an ObjectRefGenerator cannot be pickled or passed to a task (as in "
                        "Ray): pass the ObjectRefs it yields instead")

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._stream.task_id.hex()})"


class DynamicObjectRefGenerator:
    """The value of a ``num_returns="dynamic"`` task: the refs of what it yielded."""

    def __init__(self, refs: list[ObjectRef]) -> None:
        self._refs = list(refs)

    def __iter__(self) -> Iterator[ObjectRef]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"
