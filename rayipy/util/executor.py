"""Executor: a ``concurrent.futures.Executor`` whose calls are rayipy tasks.

``submit`` returns a real ``concurrent.futures.Future``. It stays pending until the task
has finished (a cluster task has no local "running" state to report), so
``future.cancel()`` succeeds until then, and also cancels the task
(``rayipy.cancel``). ``shutdown(cancel_futures=True)`` does that for every future not
done yet, queued or running on the cluster.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from rayipy.util.chunking import check_chunksize, chunks


def _run_chunk(fn: Callable[..., Any], chunk: list[tuple]) -> list[Any]:
    return [fn(*args) for args in chunk]


class Executor(concurrent.futures.Executor):
    """``with rayipy.util.Executor(num_cpus=1) as ex: ex.submit(fn, x).result()``.

    Keyword arguments are task options, given to every task's ``.options()`` (``num_cpus``,
    ``num_gpus``, ``resources``, ``max_retries``, ...): checked here, not at the first
    submit. How many tasks run at once is up to the cluster's resources.
    """

    def __init__(self, **task_options: Any) -> None:
        from rayipy.core import options as option_table
        if "max_workers" in task_options:
            raise TypeError("rayipy.util.Executor has no max_workers: the cluster's CPUs bound "
                            "how many tasks run at once (use num_cpus= per task, or "
                            "rayipy.util.map_unordered(..., max_in_flight=N) to bound a stream)")
        if "num_returns" in task_options:
            raise ValueError("num_returns is not an Executor option: a future has one result")
        self._options = option_table.validate(task_options, what="rayipy.util.Executor")
        self._remote_functions: dict[int, tuple[Callable[..., Any], Any]] = {}
        self._futures: dict[concurrent.futures.Future[Any], Any] = {}
        self._shutdown = False
        self._lock = threading.Lock()

    def _remote(self, fn: Callable[..., Any]) -> Any:
        from rayipy.remote_function import RemoteFunction
        if isinstance(fn, RemoteFunction):
            return fn.options(**self._options) if self._options else fn
        # One RemoteFunction per function, so it is pickled once (the entry keeps ``fn``
        # alive, so its id cannot be reused by another function meanwhile).
        entry = self._remote_functions.get(id(fn))
        if entry is None or entry[0] is not fn:
            # Not rayipy.remote: that would make an actor class of a class (``int``).
            remote_fn = RemoteFunction(fn, {})
            if self._options:
                remote_fn = remote_fn.options(**self._options)
            entry = self._remote_functions[id(fn)] = (fn, remote_fn)
        return entry[1]

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
               ) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args, **kwargs)`` as a task; a Future of its result."""
        if not callable(fn):
            raise TypeError(f"submit() expects a callable, got {fn!r}")
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            ref = self._remote(fn).remote(*args, **kwargs)
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            self._futures[future] = ref
        future.add_done_callback(self._on_future_done)
        ref.add_done_callback(lambda done: self._settle(future, done))
        return future

    def _settle(self, future: concurrent.futures.Future[Any], ref: Any) -> None:
        # On rayipy's I/O thread. False: the future was cancelled meanwhile.
        if not future.set_running_or_notify_cancel():
            return
        ok, value = ref._need_runtime().value_or_error(ref.id)
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def _on_future_done(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            ref = self._futures.pop(future, None)
        if future.cancelled() and ref is not None:
            from rayipy import cancel
            cancel(ref)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """``map(fn, *iterables)`` as tasks, results in order; ``chunksize`` items per task.

        As in the stdlib, every item is submitted at once, and ``timeout`` counts from this
        call: a result not ready by then raises TimeoutError.
        """
        check_chunksize(chunksize)
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        end_time = None if timeout is None else time.monotonic() + timeout
        futures = [self.submit(_run_chunk, fn, chunk)
                   for chunk in chunks(zip(*iterables), chunksize)]

        def results() -> Iterator[Any]:
            try:
                futures.reverse()
                while futures:
                    remaining = None if end_time is None else end_time - time.monotonic()
                    yield from futures.pop().result(remaining)
            finally:
                for future in futures:
                    future.cancel()
        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submits; ``cancel_futures`` cancels every future not done (its task
        too); ``wait`` waits for the rest to finish."""
        with self._lock:
            self._shutdown = True
            pending = list(self._futures)
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait:
            concurrent.futures.wait(pending)
