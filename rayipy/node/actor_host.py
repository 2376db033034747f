"""How a worker runs the calls of a concurrent actor: a thread pool, or an event loop.

A plain actor (``max_concurrency=1``, no ``async def`` methods) needs none of this: the
worker's main thread runs its calls one by one, in order. An actor with
``max_concurrency > 1`` runs calls on that many threads; an actor with any ``async def``
method runs every call on one asyncio event loop in its own thread, up to
``max_concurrency`` at once (default 1000, as in Ray), so calls that await overlap.

An actor with ``concurrency_groups`` (Ray's) gets one such host per group, plus one for
the default group (size ``max_concurrency``: 1 for a threaded actor, 1000 for an async
one): a pool of threads each, or an event loop each, in a thread of its own. A call runs
in the group its spec names (``("concurrency_group", name)`` in ``TaskSpec.options``,
which the caller puts there from ``@rayipy.method`` or ``.options()``), else in the
default group; so a group whose calls block or hog their loop does not hold up another's.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from rayipy.protocol.messages import TaskResult, TaskSpec

ASYNC_DEFAULT_CONCURRENCY = 1000
CONCURRENCY_GROUP = "concurrency_group"   # in a call's TaskSpec.options: its group's name
DEFAULT_GROUP = ""                        # the default group's key (a group's name is never "")


def group_of(options: tuple[tuple[str, Any], ...]) -> str:
    """The concurrency group a call's spec options name; ``DEFAULT_GROUP`` if none."""
    for name, value in options:
        if name == CONCURRENCY_GROUP:
            return str(value)
    return DEFAULT_GROUP


def group_sizes(options: dict[str, Any], is_async: bool) -> dict[str, int]:
    """Each group's size, from an actor's creation options; the default group's under
    ``DEFAULT_GROUP``. Empty when the actor declares no groups."""
    groups = options.get("concurrency_groups")
    if not groups:
        return {}
    default = options.get("max_concurrency") or (ASYNC_DEFAULT_CONCURRENCY if is_async else 1)
    return {DEFAULT_GROUP: default, **groups}


def is_async_class(cls: type) -> bool:
    """An ``async def`` method (an async generator too, as in Ray) makes an async actor."""
    return any(inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member)
               for _, member in inspect.getmembers(cls))


class ThreadedActorHost:
    """Runs calls on ``max_concurrency`` threads; ``report`` gets each result."""

    def __init__(self, max_concurrency: int, run: Callable[[TaskSpec], TaskResult],
                 report: Callable[[TaskResult], None], name: str = "rayipy-actor") -> None:
        self.pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix=name)
        self.run = run
        self.report = report

    def submit(self, spec: TaskSpec) -> None:
        self.pool.submit(lambda: self.report(self.run(spec)))


class AsyncActorHost:
    """Runs calls on an event loop of its own thread, ``max_concurrency`` at once."""

    def __init__(self, max_concurrency: int, run_async: Callable[[TaskSpec], Any],
                 report: Callable[[TaskResult], None], name: str = "rayipy-actor-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self.limit = max_concurrency
        self.run_async = run_async
        self.report = report
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True,
                                       name=name)
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


Host = ThreadedActorHost | AsyncActorHost


class GroupedActorHost:
    """An actor with concurrency groups: one host per group; each call to its group's."""

    def __init__(self, hosts: dict[str, Host],
                 fail: Callable[[TaskSpec, BaseException], None]) -> None:
        self.hosts = hosts
        self.fail = fail

    def submit(self, spec: TaskSpec) -> None:
        group = group_of(spec.options) if spec.options else DEFAULT_GROUP
        host = self.hosts.get(group)
        if host is None:   # callers check the name first: only a hand-made spec gets here
            named = sorted(g for g in self.hosts if g != DEFAULT_GROUP)
            self.fail(spec, ValueError(f"{spec.name!r} was called in concurrency group "
                                       f"{group!r}, which this actor does not have; its "
                                       f"groups: {', '.join(map(repr, named))}"))
            return
        host.submit(spec)


def make_host(cls: type, options: dict, run: Callable, run_async: Callable,
              report: Callable, fail: Callable[[TaskSpec, BaseException], None]
              ) -> ThreadedActorHost | AsyncActorHost | GroupedActorHost | None:
    """The host for an actor of class ``cls``, or None when the main thread should run it.
    ``fail(spec, error)``: answer a call with an error, without running it."""
    is_async = is_async_class(cls)
    sizes = group_sizes(options, is_async)
    if sizes:
        label = {DEFAULT_GROUP: "default"}
        return GroupedActorHost(
            {group: AsyncActorHost(size, run_async, report,
                                   f"rayipy-actor-loop-{label.get(group, group)}")
             if is_async else
             ThreadedActorHost(size, run, report, f"rayipy-actor-{label.get(group, group)}")
             for group, size in sizes.items()}, fail)
    if is_async:
        return AsyncActorHost(options.get("max_concurrency") or ASYNC_DEFAULT_CONCURRENCY,
                              run_async, report)
    concurrency = options.get("max_concurrency") or 1
    if concurrency > 1:
        return ThreadedActorHost(concurrency, run, report)
    return None
