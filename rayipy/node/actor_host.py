"""How a worker runs the calls of a concurrent actor: a thread pool, or an event loop.

A plain actor (``max_concurrency=1``, no ``async def`` methods) needs none of this: the
worker's main thread runs its calls one by one, in order. An actor with
``max_concurrency > 1`` runs calls on that many threads; an actor with any ``async def``
method runs every call on one asyncio event loop in its own thread, up to
``max_concurrency`` at once (default 1000, as in Ray), so calls that await overlap.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from rayipy.protocol.messages import TaskResult, TaskSpec

ASYNC_DEFAULT_CONCURRENCY = 1000


def is_async_class(cls: type) -> bool:
    """An ``async def`` method (an async generator too, as in Ray) makes an async actor."""
    return any(inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member)
               for _, member in inspect.getmembers(cls))


class ThreadedActorHost:
    def __init__(self, max_concurrency: int, run: Callable[[TaskSpec], TaskResult],
                 report: Callable[[TaskResult], None]) -> None:
        self.pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="rayipy-actor")
        self.run = run
        self.report = report

    def submit(self, spec: TaskSpec) -> None:
        self.pool.submit(lambda: self.report(self.run(spec)))


class AsyncActorHost:
    def __init__(self, max_concurrency: int, run_async: Callable[[TaskSpec], Any],
                 report: Callable[[TaskResult], None]) -> None:
        self.loop = asyncio.new_event_loop()
        self.limit = max_concurrency
        self.run_async = run_async
        self.report = report
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True,
                                       name="rayipy-actor-loop")
        self.thread.start()
        ready.wait()

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.slots = asyncio.Semaphore(self.limit)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    def submit(self, spec: TaskSpec) -> None:
        asyncio.run_coroutine_threadsafe(self._call(spec), self.loop)

    async def _call(self, spec: TaskSpec) -> None:
        async with self.slots:
            self.report(await self.run_async(spec))


def make_host(cls: type, options: dict, run: Callable, run_async: Callable,
              report: Callable) -> ThreadedActorHost | AsyncActorHost | None:
    """The host for an actor of class ``cls``, or None when the main thread should run it."""
    if is_async_class(cls):
        return AsyncActorHost(options.get("max_concurrency") or ASYNC_DEFAULT_CONCURRENCY,
                              run_async, report)
    concurrency = options.get("max_concurrency") or 1
    if concurrency > 1:
        return ThreadedActorHost(concurrency, run, report)
    return None
