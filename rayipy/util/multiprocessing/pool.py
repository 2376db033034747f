"""Pool: ``multiprocessing.Pool``'s API (Ray's ``ray.util.multiprocessing.Pool``) on actors.

The pool starts ``processes`` actors (one CPU each, by default one per CPU of the
cluster), each running ``initializer(*initargs)`` once. Work goes to them in chunks:
``run_chunk(func, items)`` returns the chunk's results, an item's exception kept in its
place, so 10,000 small items cost a few dozen calls. Chunks go to the actors round
robin; an actor runs its calls one at a time, in order.

Results come back through each chunk's ObjectRef. Callbacks (``callback=``,
``error_callback=``) run on one thread the pool owns, as the stdlib's result-handler
thread does, never on rayipy's I/O thread: a callback may submit more work.
"""

from __future__ import annotations

import builtins
import multiprocessing
import queue
import threading
from collections import deque
from typing import Any, Callable, Iterable, Iterator

from rayipy.util.chunking import check_chunksize, chunks, default_chunksize, first_error, run_chunk
from rayipy.util.window import InFlightWindow


class TimeoutError(multiprocessing.TimeoutError, builtins.TimeoutError):
    """``AsyncResult.get(timeout)`` or ``IMapIterator.next(timeout)`` ran out of time;
    both the stdlib's ``multiprocessing.TimeoutError`` and the builtin ``TimeoutError``."""


class _PoolActor:
    """One of the pool's processes."""

    def __init__(self, initializer: Callable[..., Any] | None, initargs: tuple) -> None:
        if initializer is not None:
            initializer(*initargs)

    def run_chunk(self, func: Callable[..., Any], chunk: list[Any], star: bool) -> list[Any]:
        return run_chunk(func, chunk, star)

    def ping(self) -> None:
        return None


class _CallbackThread:
    """Runs callbacks in order on one daemon thread, started on first use."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def post(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rayipy-pool-callbacks",
                                                daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # a user's callback failing must not stop the others
                import traceback
                traceback.print_exc()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            if thread is not threading.current_thread():
                thread.join()


class AsyncResult:
    """The result of ``apply_async``/``map_async``/``starmap_async``."""

    def __init__(self, refs: list[Any], single: bool, callbacks: _CallbackThread,
                 callback: Callable[[Any], Any] | None,
                 error_callback: Callable[[BaseException], Any] | None) -> None:
        self._refs = refs
        self._single = single
        self._callback = callback
        self._error_callback = error_callback
        self._callbacks = callbacks
        self._event = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self._left = len(refs)
        self._lock = threading.Lock()
        if not refs:
            callbacks.post(self._settle)
        for ref in refs:
            ref.add_done_callback(self._one_done)

    def _one_done(self, _ref: Any) -> None:
        # On rayipy's I/O thread: count only; the rest happens on the callback thread.
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._callbacks.post(self._settle)

    def _settle(self) -> None:
        from rayipy import get
        try:
            results = [item for chunk in get(self._refs) for item in chunk]
            self._error = first_error(results)
            self._value = results[0] if self._single else results
        except Exception as error:  # the chunk's task failed as a whole (actor died...)
            self._error = error
        self._refs = []
        self._event.set()
        if self._error is None:
            if self._callback is not None:
                self._callback(self._value)
        elif self._error_callback is not None:
            self._error_callback(self._error)

    def ready(self) -> bool:
        """Whether the call has finished."""
        return self._event.is_set()

    def successful(self) -> bool:
        """Whether the call finished without an error; ValueError if not finished."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._error is None

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the result is ready, at most ``timeout`` seconds."""
        self._event.wait(timeout)

    def get(self, timeout: float | None = None) -> Any:
        """The result (or raise the first item's error); TimeoutError after ``timeout``."""
        if not self._event.wait(timeout):
            raise TimeoutError(f"the result was not ready within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value


class IMapIterator:
    """``imap``/``imap_unordered``'s iterator: chunks are sent as earlier ones are taken,
    at most a window of them in flight, reading the items lazily."""

    def __init__(self, pool: Pool, func: Callable[..., Any], iterable: Iterable[Any],
                 chunksize: int, ordered: bool, star: bool = False) -> None:
        self._pool = pool
        self._func = func
        self._chunks = chunks(iterable, chunksize)
        self._ordered = ordered
        self._star = star
        self._window = InFlightWindow(2 * len(pool._actors))
        self._in_flight: deque[Any] = deque()
        self._ready: deque[Any] = deque()
        self._exhausted = False
        self._refill()  # work starts now, as with the stdlib's imap

    def _refill(self) -> None:
        while not self._exhausted and self._window.room():
            chunk = next(self._chunks, None)
            if chunk is None:
                self._exhausted = True
                return
            self._in_flight.append(self._pool._submit_chunk(self._func, chunk, self._star))
            self._window.start()

    def __iter__(self) -> IMapIterator:
        return self

    def __next__(self) -> Any:
        return self.next()

    def next(self, timeout: float | None = None) -> Any:
        """The next result; TimeoutError if none is ready within ``timeout`` seconds."""
        from rayipy import get, wait
        while not self._ready:
            if not self._in_flight:
                raise StopIteration
            if self._ordered:
                ref = self._in_flight[0]
                if not wait([ref], timeout=timeout)[0]:
                    raise TimeoutError(f"no result within {timeout} s")
                self._in_flight.popleft()
            else:
                done, _ = wait(list(self._in_flight), num_returns=1, timeout=timeout)
                if not done:
                    raise TimeoutError(f"no result within {timeout} s")
                ref = done[0]
                self._in_flight.remove(ref)
            self._window.collect()
            self._refill()
            self._ready.extend(get(ref))
        result = self._ready.popleft()
        error = first_error([result])
        if error is not None:
            raise error
        return result


class Pool:
    """``multiprocessing.Pool`` on the cluster's actors.

    processes: how many actors (default: the cluster's CPUs); initializer(*initargs)
    runs once in each; maxtasksperchild: replace an actor after it has run that many
    chunks; ray_address: the cluster to connect to when this process has none yet;
    ray_remote_args: the actors' options (default ``{"num_cpus": 1}``).
    ``context`` is refused: rayipy has no start methods.
    """

    def __init__(self, processes: int | None = None,
                 initializer: Callable[..., Any] | None = None, initargs: Iterable[Any] = (),
                 maxtasksperchild: int | None = None, context: Any = None,
                 ray_address: str | None = None,
                 ray_remote_args: dict[str, Any] | None = None) -> None:
        import rayipy
        if context is not None:
            raise ValueError("Pool(context=...) is not supported: rayipy's pool runs on the "
                             "cluster's actors, which have no start method; leave it out")
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable, got {initializer!r}")
        if maxtasksperchild is not None and (not isinstance(maxtasksperchild, int)
                                             or isinstance(maxtasksperchild, bool)
                                             or maxtasksperchild < 1):
            raise ValueError(f"maxtasksperchild must be None or an int >= 1, got {maxtasksperchild!r}")
        if ray_address is not None:
            if rayipy.is_initialized():
                raise ValueError("Pool(ray_address=...) connects this process to a cluster, but "
                                 "it already has one: leave ray_address out, or shutdown() first")
            rayipy.init(address=ray_address)
        elif not rayipy.is_initialized():
            rayipy.init()
        options = {"num_cpus": 1, **(ray_remote_args or {})}
        if processes is None:
            processes = max(1, int(rayipy.cluster_resources().get("CPU", 1)))
        if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
            raise ValueError(f"processes must be an int >= 1, got {processes!r}")
        cpus = rayipy.cluster_resources().get("CPU", 0)
        if processes * options["num_cpus"] > cpus:
            raise ValueError(
                f"Pool(processes={processes}) needs {processes * options['num_cpus']:g} CPUs "
                f"({options['num_cpus']:g} per actor) and the cluster has {cpus:g}: lower "
                f"processes, or pass ray_remote_args={{'num_cpus': ...}} with less per actor")
        self._actor_class = rayipy.remote(_PoolActor).options(**options)
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._maxtasksperchild = maxtasksperchild
        self._actors = [self._new_actor() for _ in range(processes)]
        self._chunks_run = [0] * processes
        self._next_actor = 0
        self._outstanding: list[Any] = []   # chunk refs not known to be done, for join()
        self._state = "running"
        self._callbacks = _CallbackThread()
        self._lock = threading.Lock()

    def _new_actor(self) -> Any:
        return self._actor_class.remote(self._initializer, self._initargs)

    def _check_running(self) -> None:
        if self._state != "running":
            raise ValueError("Pool not running")

    def _submit_chunk(self, func: Any, chunk: list[Any], star: bool) -> Any:
        with self._lock:
            self._check_running()
            index = self._next_actor
            self._next_actor = (index + 1) % len(self._actors)
            if self._maxtasksperchild is not None and self._chunks_run[index] >= self._maxtasksperchild:
                # The old actor stops once its pending calls are done and its handle is
                # dropped (pending calls keep an actor alive).
                self._actors[index] = self._new_actor()
                self._chunks_run[index] = 0
            self._chunks_run[index] += 1
            ref = self._actors[index].run_chunk.remote(func, chunk, star)
            self._outstanding = [r for r in self._outstanding if not r.done()]
            self._outstanding.append(ref)
            return ref

    def _function_ref(self, func: Callable[..., Any], num_chunks: int) -> Any:
        # Many chunks of one function: store it once rather than pickle it per chunk.
        if not callable(func):
            raise TypeError(f"func must be callable, got {func!r}")
        if num_chunks > 1:
            from rayipy import put
            return put(func)
        return func

    def _map_refs(self, func: Callable[..., Any], iterable: Iterable[Any],
                  chunksize: int | None, star: bool) -> list[Any]:
        self._check_running()
        items = list(iterable)
        if chunksize is None:
            chunksize = default_chunksize(len(items), len(self._actors))
        check_chunksize(chunksize)
        parts = list(chunks(items, chunksize))
        shipped = self._function_ref(func, len(parts))
        return [self._submit_chunk(shipped, part, star) for part in parts]

    # -- the stdlib's API -------------------------------------------------------------------
    def apply(self, func: Callable[..., Any], args: Iterable[Any] = (),
              kwds: dict[str, Any] | None = None) -> Any:
        """``func(*args, **kwds)`` on one of the actors; waits for the result."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func: Callable[..., Any], args: Iterable[Any] = (),
                    kwds: dict[str, Any] | None = None,
                    callback: Callable[[Any], Any] | None = None,
                    error_callback: Callable[[BaseException], Any] | None = None) -> AsyncResult:
        """``func(*args, **kwds)`` on one of the actors; an AsyncResult at once."""
        if not callable(func):
            raise TypeError(f"func must be callable, got {func!r}")
        call = _Call(func, tuple(args or ()), dict(kwds or {}))
        ref = self._submit_chunk(call, [()], True)
        return AsyncResult([ref], True, self._callbacks, callback, error_callback)

    def map(self, func: Callable[[Any], Any], iterable: Iterable[Any],
            chunksize: int | None = None) -> list[Any]:
        """``[func(x) for x in iterable]`` on the actors, in chunks; raises the first
        item's error."""
        return self.map_async(func, iterable, chunksize).get()

    def map_async(self, func: Callable[[Any], Any], iterable: Iterable[Any],
                  chunksize: int | None = None, callback: Callable[[Any], Any] | None = None,
                  error_callback: Callable[[BaseException], Any] | None = None) -> AsyncResult:
        """``map`` returning an AsyncResult at once."""
        refs = self._map_refs(func, iterable, chunksize, star=False)
        return AsyncResult(refs, False, self._callbacks, callback, error_callback)

    def starmap(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None) -> list[Any]:
        """``[func(*args) for args in iterable]`` on the actors."""
        return self.starmap_async(func, iterable, chunksize).get()

    def starmap_async(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                      chunksize: int | None = None, callback: Callable[[Any], Any] | None = None,
                      error_callback: Callable[[BaseException], Any] | None = None) -> AsyncResult:
        """``starmap`` returning an AsyncResult at once."""
        refs = self._map_refs(func, [tuple(args) for args in iterable], chunksize, star=True)
        return AsyncResult(refs, False, self._callbacks, callback, error_callback)

    def imap(self, func: Callable[[Any], Any], iterable: Iterable[Any],
             chunksize: int = 1) -> IMapIterator:
        """Results in order, as they come; items are read and sent lazily."""
        self._check_running()
        check_chunksize(chunksize)
        return IMapIterator(self, self._function_ref(func, 2), iterable, chunksize, ordered=True)

    def imap_unordered(self, func: Callable[[Any], Any], iterable: Iterable[Any],
                       chunksize: int = 1) -> IMapIterator:
        """Results in the order they finish (within a chunk, in order)."""
        self._check_running()
        check_chunksize(chunksize)
        return IMapIterator(self, self._function_ref(func, 2), iterable, chunksize, ordered=False)

    def close(self) -> None:
        """Accept no more work; what was submitted still runs (``join`` waits for it)."""
        if self._state == "running":
            self._state = "closed"

    def terminate(self) -> None:
        """Stop the actors now; work not finished fails with ActorDiedError."""
        from rayipy import kill
        with self._lock:
            self._state = "terminated"
            actors, self._actors = self._actors, []
            self._outstanding = []
        for actor in actors:
            try:
                kill(actor)
            except Exception:  # already gone, or the cluster is
                pass
        self._callbacks.stop()

    def join(self) -> None:
        """Wait for the submitted work to finish and the actors to stop; only after
        ``close`` or ``terminate`` (ValueError otherwise)."""
        from rayipy import wait
        if self._state == "running":
            raise ValueError("join() needs close() or terminate() first")
        with self._lock:
            outstanding = list(self._outstanding)
        if outstanding:
            wait(outstanding, num_returns=len(outstanding))
        if self._state == "closed":
            self.terminate()

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.terminate()  # as the stdlib's Pool does

    def __reduce__(self) -> Any:
        raise TypeError("a Pool cannot be sent to tasks or actors; create one where it is used")


class _Call:
    """``apply``'s call, run as a one-item chunk: ``func(*args, **kwds)``."""

    __slots__ = ("func", "args", "kwds")

    def __init__(self, func: Callable[..., Any], args: tuple, kwds: dict[str, Any]) -> None:
        self.func = func
        self.args = args
        self.kwds = kwds

    def __call__(self) -> Any:
        return self.func(*self.args, **self.kwds)


