"""Refs in the order they finish: ``as_completed`` and a back-pressured ``map_unordered``.

Both learn of completions through each ref's done-callback, which runs on the process's
I/O thread and only puts the ref on a thread-safe queue; the caller's thread waits on that
queue. So each ref costs one callback, whatever the number of refs (``wait`` in a loop
would look at every pending ref each turn).
"""

from __future__ import annotations

import queue
import time
from typing import Any, Callable, Iterable, Iterator

from rayipy.core.object_ref import ObjectRef
from rayipy.exceptions import GetTimeoutError
from rayipy.util.window import InFlightWindow


class _Arrivals:
    """Refs put here by their done-callbacks, taken in the order they finished."""

    def __init__(self) -> None:
        self._done: queue.SimpleQueue[ObjectRef] = queue.SimpleQueue()

    def watch(self, ref: ObjectRef) -> None:
        ref.add_done_callback(self._done.put)

    def next(self, deadline: float | None) -> ObjectRef:
        """The next finished ref; GetTimeoutError once ``deadline`` (monotonic) passes."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return self._done.get(timeout=timeout)
        except queue.Empty:
            raise GetTimeoutError("timed out waiting for the next ref to finish") from None


def _check_timeout(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise TypeError(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")
    return time.monotonic() + timeout


def as_completed(refs: Iterable[ObjectRef], timeout: float | None = None) -> Iterator[ObjectRef]:
    """Yield each ref once its task has finished (with a value or an error), first
    finished first, as ``concurrent.futures.as_completed`` does for futures.

    ``timeout`` (seconds, counted from this call, as in the stdlib) bounds the whole
    iteration: when it passes with refs still pending, the iterator raises
    ``GetTimeoutError`` (a ``TimeoutError``). The same ref twice is refused. Take the
    value with ``rayipy.get(ref)``, which raises the task's error.
    """
    deadline = _check_timeout(timeout)
    refs = list(refs)
    for i, ref in enumerate(refs):
        if not isinstance(ref, ObjectRef):
            raise TypeError(f"as_completed() expects ObjectRefs, item {i} is {type(ref).__name__}")
    if len(set(refs)) != len(refs):
        raise ValueError("as_completed() got the same ObjectRef more than once")
    return _yield_completed(refs, deadline)


def _yield_completed(refs: list[ObjectRef], deadline: float | None) -> Iterator[ObjectRef]:
    arrivals = _Arrivals()
    for ref in refs:
        arrivals.watch(ref)
    remaining = len(refs)
    del refs  # the callbacks hold what is pending; yielded refs belong to the caller
    while remaining:
        ref = arrivals.next(deadline)
        remaining -= 1
        yield ref


def map_unordered(fn_remote: Any, items: Iterable[Any], max_in_flight: int | None = None,
                  ) -> Iterator[Any]:
    """Yield ``fn_remote.remote(item)``'s values, first finished first, with at most
    ``max_in_flight`` tasks submitted and not yet yielded at any time.

    Items are read lazily: an endless or huge iterable is fine, as the window only moves
    on when the caller takes a value. ``max_in_flight`` defaults to twice the cluster's
    CPUs. A task's error is raised from the iterator when its turn comes; the iterator
    then cancels the tasks still in flight (as it does when it is closed early).
    """
    if not hasattr(fn_remote, "remote"):
        raise TypeError(f"map_unordered() expects a remote function (@rayipy.remote), got "
                        f"{fn_remote!r}; wrap it: rayipy.remote(fn)")
    if max_in_flight is None:
        from rayipy import cluster_resources
        max_in_flight = max(1, int(cluster_resources().get("CPU", 1)) * 2)
    window = InFlightWindow(max_in_flight)
    return _map_unordered(fn_remote.remote, iter(items), window)


def _map_unordered(submit: Callable[[Any], ObjectRef], items: Iterator[Any],
                   window: InFlightWindow) -> Iterator[Any]:
    from rayipy import cancel, get
    arrivals = _Arrivals()
    in_flight: set[ObjectRef] = set()
    exhausted = False
    try:
        while True:
            while not exhausted and window.room():
                try:
                    item = next(items)
                except StopIteration:
                    exhausted = True
                    break
                ref = submit(item)
                window.start()
                in_flight.add(ref)
                arrivals.watch(ref)
            if not in_flight:
                return
            ref = arrivals.next(None)
            in_flight.discard(ref)
            window.collect()
            yield get(ref)
    finally:
        for ref in in_flight:
            cancel(ref)
