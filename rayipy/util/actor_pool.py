"""ActorPool: Ray's ``ray.util.ActorPool``, the same names and behaviour.

A fixed set of actors shares a stream of work: ``submit(fn, value)`` runs
``fn(actor, value)`` (which must return an ObjectRef) on an idle actor, or queues the
pair until one is free; results come back in submission order (``get_next``) or as they
finish (``get_next_unordered``). An actor is busy from its call's submission until its
result has been taken, so each actor runs one of the pool's calls at a time.

The bookkeeping is plain Python; the cluster is touched only through ``_wait`` and
``_get`` (``rayipy.wait`` and ``rayipy.get``), which the unit tests replace.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from rayipy.exceptions import ActorDiedError

_TIMEOUT_MESSAGE = "Timed out waiting for result"


def _rayipy_wait(refs: list[Any], timeout: float | None) -> list[Any]:
    from rayipy import wait
    ready, _ = wait(refs, num_returns=1, timeout=timeout)
    return ready


def _rayipy_get(ref: Any) -> Any:
    from rayipy import get
    return get(ref)


class ActorPool:
    """Run work over a fixed list of actors (``rayipy.util.ActorPool(actors)``)."""

    _wait: Callable[[list[Any], float | None], list[Any]] = staticmethod(_rayipy_wait)
    _get: Callable[[Any], Any] = staticmethod(_rayipy_get)

    def __init__(self, actors: Iterable[Any]) -> None:
        self._idle_actors: list[Any] = list(actors)
        self._future_to_actor: dict[Any, tuple[int, Any]] = {}
        self._index_to_future: dict[int, Any] = {}
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending_submits: list[tuple[Callable[[Any, Any], Any], Any]] = []

    # -- submitting -----------------------------------------------------------------------
    def submit(self, fn: Callable[[Any, Any], Any], value: Any) -> None:
        """Run ``fn(actor, value)`` on an idle actor, or queue it until one is free.

        ``fn`` must return one ObjectRef, e.g. ``lambda a, v: a.double.remote(v)``.
        """
        if not self._idle_actors:
            self._pending_submits.append((fn, value))
            return
        actor = self._idle_actors.pop()
        future = fn(actor, value)
        key = tuple(future) if isinstance(future, list) else future
        self._future_to_actor[key] = (self._next_task_index, actor)
        self._index_to_future[self._next_task_index] = future
        self._next_task_index += 1

    def map(self, fn: Callable[[Any, Any], Any], values: Iterable[Any]) -> Iterator[Any]:
        """Submit every value, then yield the results in the order of ``values``.

        Results of earlier calls not yet taken are dropped first (as Ray does), so the
        iterator sees only its own.
        """
        self._drop_pending_results()
        for value in values:
            self.submit(fn, value)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next()
        return results()

    def map_unordered(self, fn: Callable[[Any, Any], Any], values: Iterable[Any]) -> Iterator[Any]:
        """As ``map``, but yield each result as soon as it is ready."""
        self._drop_pending_results()
        for value in values:
            self.submit(fn, value)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next_unordered()
        return results()

    def _drop_pending_results(self) -> None:
        while self.has_next():
            try:
                self.get_next_unordered(timeout=0)
            except TimeoutError:
                pass

    # -- collecting -----------------------------------------------------------------------
    def has_next(self) -> bool:
        """Whether a submitted call's result has not been taken yet."""
        return bool(self._future_to_actor)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order, waiting at most ``timeout`` seconds.

        On timeout, raises TimeoutError and leaves the call in place to ask again; with
        ``ignore_if_timedout=True`` the call is given up instead (its actor is idle again)
        before TimeoutError is raised. StopIteration when nothing is pending; ValueError
        after ``get_next_unordered`` has taken results out of order.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        future = self._index_to_future[self._next_return_index]
        timed_out = timeout is not None and not self._wait(self._wait_list(future), timeout)
        if timed_out and not ignore_if_timedout:
            raise TimeoutError(_TIMEOUT_MESSAGE)
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        _, actor = self._future_to_actor.pop(self._key(future))
        if timed_out:
            self._return_actor(actor)
            raise TimeoutError(f"{_TIMEOUT_MESSAGE}. The task {future} has been ignored.")
        return self._get_result(future, actor)

    def get_next_unordered(self, timeout: float | None = None,
                           ignore_if_timedout: bool = False) -> Any:
        """Any finished result, waiting at most ``timeout`` seconds for one.

        On timeout, TimeoutError; with ``ignore_if_timedout=True`` the oldest pending call
        is given up first. After this, ``get_next`` is refused (order is lost).
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        waitables = [ref for key in self._future_to_actor for ref in self._wait_list(key)]
        ready = self._wait(waitables, timeout)
        future: Any = None
        if ready:
            for key in self._future_to_actor:
                if ready[0] in self._wait_list(key):
                    future = key
                    break
        if future is None:
            if not ignore_if_timedout:
                raise TimeoutError(_TIMEOUT_MESSAGE)
            oldest = min(self._future_to_actor.values(), key=lambda entry: entry[0])[0]
            future = self._key(self._index_to_future[oldest])
        index, actor = self._future_to_actor.pop(future)
        original = self._index_to_future.pop(index)
        self._next_return_index = max(self._next_return_index, index + 1)
        if not ready:
            self._return_actor(actor)
            raise TimeoutError(f"{_TIMEOUT_MESSAGE}. The task {original} has been ignored.")
        return self._get_result(original, actor)

    def _get_result(self, future: Any, actor: Any) -> Any:
        alive = True
        try:
            return self._get(future)
        except ActorDiedError:
            alive = False  # a dead actor would take every later call and fail it
            raise
        finally:
            self._return_actor(actor, alive)

    @staticmethod
    def _key(future: Any) -> Any:
        return tuple(future) if isinstance(future, list) else future

    @staticmethod
    def _wait_list(future: Any) -> list[Any]:
        # fn may return a list of refs (a method with num_returns > 1): wait on its first.
        return [future[0]] if isinstance(future, (list, tuple)) else [future]

    # -- the actors -----------------------------------------------------------------------
    def _return_actor(self, actor: Any, alive: bool = True) -> None:
        if alive:
            self._idle_actors.append(actor)
        if self._pending_submits and self._idle_actors:
            self.submit(*self._pending_submits.pop(0))

    def has_free(self) -> bool:
        """Whether an actor is idle and no submission waits for one."""
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self) -> Any:
        """Take an idle actor out of the pool; None if none is free."""
        if self.has_free():
            return self._idle_actors.pop()
        return None

    def push(self, actor: Any) -> None:
        """Add an actor to the pool (it takes a waiting submission at once, if any);
        ValueError if it already belongs to the pool."""
        busy = [a for _, a in self._future_to_actor.values()]
        if actor in self._idle_actors or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)
