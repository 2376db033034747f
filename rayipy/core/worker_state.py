"""A worker's bookkeeping: what runs next, where each result goes, what a cancel does.

Pure, in the manner of ``rayipy.core.scheduler``: each event is a method, and each returns
the commands the worker process must carry out (a closed set of NamedTuples, below). No
sockets, threads, signals or clocks; a timestamp is passed in where one is kept. The
worker (``rayipy.node.worker``) calls these methods under one lock, because two of its
threads bring events, and carries the commands out after it lets the lock go:

- its I/O thread: tasks from the head (``tasks_from_head``), cancels (``cancel``), steals
  (``steal``). Their commands never reply to a caller, because only the main thread
  writes to callers' connections: a queued direct call that is cancelled is answered
  through the head instead;
- its main thread: calls straight from callers (``calls_from_caller``), the next task
  (``next_task``), the end of its code (``code_done``), a concurrent actor's results
  (``host_finished``), the actor's constructor (``constructor_done``), and a task that
  blocks in ``get`` (``blocked``, then ``return_direct`` while it stays blocked).

What it keeps:

- ``queue``: the specs waiting to run, in order; ``current``: the one whose code runs on
  the main thread now (None between tasks, and while a result is packed);
- ``deferred``: actor calls that came before the actor's constructor ran (the constructor
  comes through the head, the calls straight from their callers, so they can overtake it);
  they run in order, before anything queued since, once it has;
- ``reply_to``: task id -> the caller of a direct call (an actor call, a task on a lease,
  a task sent to this worker by name), which the result goes back to. The caller is an
  opaque token: the worker's connection to it, never looked into here. A task not in it
  came from the head, and its result goes there;
- ``cancelled``: cancels of tasks not here yet (a call still on its way, or one that has
  ended and never will come), the last ``CANCELS_KEPT``, each marked if it was answered
  already. A direct call's cancel is answered at once (through the head): its call may
  sit unread in the caller's connection, which only the main thread reads, between tasks,
  and answering when it comes would wait for the task running now. It is dropped
  unanswered when it comes. A head's task comes on the I/O thread, and is answered then;
- ``done_direct``: the last ``CANCELS_KEPT`` direct calls run here, so that a cancel that
  crossed one's result is not answered as well;
- whether this worker serves an actor, whether the actor's constructor has run, whether
  its calls run on a host of threads or an event loop (``concurrent``), and which do
  (``on_host``).

The per-task path is two calls, ``next_task`` and ``code_done``, a few dict and deque
operations and one command built: a worker runs ten thousand no-op tasks a second. So
``Run`` says where the task's result goes as well (a running task's caller cannot change),
and there is no third call once it is packed.
"""

from __future__ import annotations

import collections
from typing import Any, NamedTuple, Union

from rayipy import exceptions
from rayipy.protocol import errors
from rayipy.protocol.messages import CANCELLED, RETURNED, TaskResult, TaskSpec

# In TaskSpec.options: sent to one named worker, where it stays (never handed back or
# stolen). The same value as ``rayipy.node.client.PINNED``, which puts it there.
PINNED = ("pinned", True)

# Cancels kept for calls not here yet. Most are of calls that ended before the cancel came
# and never will come; a call still on its way is milliseconds behind its cancel, not
# thousands of cancels.
CANCELS_KEPT = 4096

# Who a direct call's result goes back to (the worker's connection to it): opaque here.
Caller = Any

# A task run here in less than this is "quick": the head's refill (results to the head,
# tasks back) takes a few hundred µs, so sending results before a repeat of it, to get
# that refill early, would save at most its own time, for one more message each way.
REFILL_SECONDS = 0.0005
# Only a task with arguments this small, in band and without refs, is kept to compare the
# next with (``repeatable``): a kept spec holds its arguments alive until the next task.
REPEAT_ARGS_BYTES = 1024


# -- commands ---------------------------------------------------------------------------
class Run(NamedTuple):
    """Run this task on the main thread, then send its result to ``caller``, the direct
    caller it came from (``ReplyToCaller``), or when None through the head
    (``ReportToHead``)."""
    spec: TaskSpec
    caller: Caller | None


class RunOnHost(NamedTuple):
    """Hand this call to the concurrent actor's host (threads or an event loop)."""
    spec: TaskSpec


class ReplyToCaller(NamedTuple):
    """Send this result to the caller of a direct call, on its connection."""
    caller: Caller
    result: TaskResult


class ReportToHead(NamedTuple):
    """Send this result through the head (``TASK_DONE``)."""
    result: TaskResult


class ReturnToHead(NamedTuple):
    """Give these tasks back to the head unrun (``RETURNED``; when blocking, ``BLOCKED``)."""
    task_ids: list[bytes]


class InterruptRunning(NamedTuple):
    """Interrupt the code of the task running on the main thread (SIGINT)."""
    task_id: bytes


class KillProcess(NamedTuple):
    """End this process at once (a forced cancel of the running task)."""


class WakeMain(NamedTuple):
    """The main thread has work queued: wake it if it waits."""


KILL = KillProcess()
WAKE = WakeMain()

# Builds a command without the NamedTuple's own ``__new__``, which is Python code and costs
# twice as much: used on the per-task path only. ``_make(Run, (spec, caller))``.
_make = tuple.__new__

Command = Union[Run, RunOnHost, ReplyToCaller, ReportToHead, ReturnToHead, InterruptRunning,
                KillProcess, WakeMain]


class WorkerState:
    """The queue, deferred calls, cancels and the current call of one worker process."""

    __slots__ = ("where", "queue", "deferred", "cancelled", "done_direct", "cancels_kept",
                 "current", "current_since", "reply_to", "serves_actor", "constructed",
                 "concurrent", "on_host")

    def __init__(self, where: str, cancels_kept: int = CANCELS_KEPT) -> None:
        self.where = where                      # "node 1a2b (ip), worker pid 7", in results
        self.queue: collections.deque[TaskSpec] = collections.deque()
        self.deferred: list[TaskSpec] = []
        # Ordered, oldest first; the value: answered already (a direct call's, at its cancel).
        self.cancelled: dict[bytes, bool] = {}
        self.done_direct: dict[bytes, None] = {}  # an ordered set, oldest first
        self.cancels_kept = cancels_kept
        self.current: TaskSpec | None = None
        self.current_since = 0.0                # when ``current`` started (epoch seconds)
        self.reply_to: dict[bytes, Caller] = {}
        self.serves_actor = False               # set by the first actor spec that comes
        self.constructed = False                # the actor's constructor has run (or failed)
        self.concurrent = False                 # its calls run on a host, not the main thread
        self.on_host: set[bytes] = set()        # calls handed to that host, not finished

    # -- I/O thread events ----------------------------------------------------------------
    def tasks_from_head(self, specs: list[TaskSpec], blocked: bool) -> list[Command]:
        """Specs the head sent (``EXECUTE``). ``blocked``: our running task waits in
        ``get``; the head had not heard yet, and they would wait behind it."""
        if specs and specs[0].actor_id:
            self.serves_actor = True
        out: list[Command] = []
        if self.cancelled:
            specs = self._drop_cancelled(specs, None, out)
        if not specs:
            return out
        if blocked and not self.serves_actor:
            out.append(ReturnToHead([s.task_id for s in specs]))
            return out
        self.queue.extend(specs)
        out.append(WAKE)
        return out

    def cancel(self, task_id: bytes, force: bool, direct: bool = False) -> list[Command]:
        """Cancel a task: queued or deferred, it is answered as cancelled (through the head:
        this runs on the I/O thread); running, its code is interrupted (``force``: the
        process is killed); not here yet, it is cancelled when it comes, and if its caller
        sent it straight here (``direct``) it is answered now (see ``cancelled``)."""
        for waiting in (self.queue, self.deferred):
            for spec in waiting:
                if spec.task_id == task_id:
                    waiting.remove(spec)
                    self.reply_to.pop(task_id, None)
                    return [ReportToHead(self.cancelled_result(spec))]
        current = self.current
        if current is not None and current.task_id == task_id:
            return [KILL] if force else [InterruptRunning(task_id)]
        if task_id in self.on_host or task_id in self.done_direct:
            # Running on a concurrent actor's host, whose threads cannot be interrupted,
            # or its result is on its way already.
            return []
        remember(self.cancelled, task_id, self.cancels_kept, direct)
        if not direct:
            return []
        # The owner makes the error, with the task's name, which we have not seen.
        return [ReportToHead(TaskResult(task_id, CANCELLED, (), 0.0, self.where, ()))]

    def steal(self, count: int) -> list[Command]:
        """The head takes back up to ``count`` tasks from the end of the queue, for an idle
        worker. Tasks sent to this worker by name, and direct calls (the head never had
        them), stay, in their order."""
        return [ReturnToHead(self._take_from_end(count))]

    # -- main thread events ---------------------------------------------------------------
    def calls_from_caller(self, caller: Caller, specs: list[TaskSpec]) -> list[ReplyToCaller]:
        """Calls straight from ``caller`` (actor calls, tasks on a lease or sent by name):
        their results go back to it. An actor's calls wait for its constructor."""
        actor_calls = bool(specs[0].actor_id)
        if actor_calls:
            self.serves_actor = True
        reply_to = self.reply_to
        for spec in specs:
            reply_to[spec.task_id] = caller
        out: list[ReplyToCaller] = []
        if self.cancelled:
            specs = self._drop_cancelled(specs, caller, out)
        if actor_calls and not self.constructed:
            self.deferred.extend(specs)
        else:
            self.queue.extend(specs)
        return out

    def next_task(self, now: float) -> Run | RunOnHost | None:
        """The next task to run (None: nothing queued). ``now``: the time, for the
        dashboard's view of the running call."""
        if not self.queue:
            return None
        spec = self.queue.popleft()
        if self.concurrent and spec.method != "__init__":
            self.on_host.add(spec.task_id)
            return RunOnHost(spec)
        self.current_since = now
        self.current = spec
        return _make(Run, (spec, self.reply_to.get(spec.task_id)))

    def code_done(self, task_id: bytes) -> None:
        """The code of a task ``next_task`` gave to run has returned (its result is being
        packed, and goes where ``Run`` said): a cancel that comes now finds nothing to
        interrupt."""
        current = self.current
        if current is not None and current.task_id == task_id:
            self.current = None
            if self.reply_to.pop(task_id, None) is not None:
                remember(self.done_direct, task_id, self.cancels_kept)
        # Otherwise a call of a threaded actor's host: host_finished routes its result.

    def host_finished(self, result: TaskResult) -> ReplyToCaller | ReportToHead:
        """A call run on the concurrent actor's host is done: where its result goes."""
        self.on_host.discard(result.task_id)
        caller = self.reply_to.pop(result.task_id, None)
        if caller is None:
            return ReportToHead(result)
        remember(self.done_direct, result.task_id, self.cancels_kept)
        return ReplyToCaller(caller, result)

    def held_from_head(self) -> list[bytes]:
        """The ids of the head's tasks here, running or queued (not direct calls, nor an
        actor's): a worker registering again with a restarted head names them, for the
        copies their owners send again to come back here (``core/head_recovery.py``)."""
        reply_to = self.reply_to
        out = [spec.task_id for spec in self.queue
               if not spec.actor_id and spec.task_id not in reply_to]
        current = self.current
        if current is not None and not current.actor_id and current.task_id not in reply_to:
            out.insert(0, current.task_id)
        return out

    def caller_of(self, task_id: bytes) -> Caller | None:
        """The direct caller of a task here (None: it came from the head)."""
        return self.reply_to.get(task_id)

    def constructor_done(self, concurrent: bool) -> None:
        """The actor's constructor ran (or failed: its calls then fail the same way).
        ``concurrent``: its calls run on a host. The calls that came first go first."""
        self.constructed = True
        self.concurrent = concurrent
        if self.deferred:
            self.queue.extendleft(reversed(self.deferred))
            self.deferred = []

    def blocked(self) -> list[Command]:
        """Our task blocks in ``get``: give back what waits behind it, so it can run
        elsewhere. Leased tasks go back to their caller, the head's tasks to the head (the
        ``ReturnToHead`` command, always last). Tasks sent here by name stay, and so do an
        actor's calls, which must run here, in order."""
        if self.serves_actor:
            return [ReturnToHead([])]
        out = self.return_direct()
        out.append(ReturnToHead(self._take_from_end(len(self.queue))))
        return out

    def return_direct(self) -> list[Command]:
        """While our task stays blocked: hand leased tasks that came meanwhile back to
        their caller unrun (``RETURNED``), which sends them through the head."""
        if self.serves_actor or not self.reply_to:
            return []
        reply_to = self.reply_to
        out: list[Command] = []
        kept = []
        for spec in self.queue:
            if spec.task_id in reply_to and PINNED not in spec.options:
                out.append(ReplyToCaller(reply_to.pop(spec.task_id), TaskResult(
                    spec.task_id, RETURNED, (), 0.0, self.where, ())))
            else:
                kept.append(spec)
        if out:
            self.queue.clear()
            self.queue.extend(kept)
        return out

    # -- helpers -------------------------------------------------------------------------
    def cancelled_result(self, spec: TaskSpec) -> TaskResult:
        """The result of a task cancelled before it started."""
        error = exceptions.TaskCancelledError(spec.name, "cancelled before it started")
        return TaskResult(spec.task_id, CANCELLED,
                          (errors.capture_system_error(error, spec.name),), 0.0, self.where, ())

    def _drop_cancelled(self, specs: list[TaskSpec], caller: Caller | None,
                        out: list[Any]) -> list[TaskSpec]:
        """Answer specs whose cancel came first, as cancelled (drop them if answered at the
        cancel); the others, to queue."""
        kept = []
        cancelled = self.cancelled
        for spec in specs:
            answered = cancelled.pop(spec.task_id, None)
            if answered:
                self.reply_to.pop(spec.task_id, None)
            elif answered is not None:
                result = self.cancelled_result(spec)
                if caller is None:
                    out.append(ReportToHead(result))
                else:
                    del self.reply_to[spec.task_id]
                    out.append(ReplyToCaller(caller, result))
            else:
                kept.append(spec)
        return kept

    def _take_from_end(self, count: int) -> list[bytes]:
        """Up to ``count`` of the head's queued tasks, from the end (the ones that would
        wait longest here); the rest keep their order."""
        queue, reply_to = self.queue, self.reply_to
        taken: list[bytes] = []
        kept = []
        while queue and len(taken) < count:
            spec = queue.pop()
            if PINNED in spec.options or spec.task_id in reply_to:
                kept.append(spec)
            else:
                taken.append(spec.task_id)
        queue.extend(reversed(kept))
        return taken


def repeatable(spec: TaskSpec) -> bool:
    """Whether to keep ``spec``, just run, to tell a repeat of it (``quick_repeat``):
    only if its arguments are small (``REPEAT_ARGS_BYTES``) and in the spec."""
    args = spec.args
    return not spec.dep_values and not args.buffers and len(args.data) <= REPEAT_ARGS_BYTES


def quick_repeat(spec: TaskSpec, last: TaskSpec | None, last_seconds: float) -> bool:
    """True if ``spec`` calls the same function or method with the same arguments as
    ``last``, the task that just ran here (kept if ``repeatable``), which took
    ``last_seconds``, under ``REFILL_SECONDS``: it will most likely be as quick, so
    results finished before it may wait for it and leave in one batch. Any other task
    may be long, and the results should not wait for it."""
    return (last is not None and last_seconds < REFILL_SECONDS
            and spec.function_id == last.function_id and spec.method == last.method
            and spec.args == last.args and not spec.dep_values)


def remember(ids: dict[bytes, Any], item: bytes, keep: int = CANCELS_KEPT,
             value: Any = None) -> None:
    """Add ``item`` to ``ids`` (a dict used as an ordered set, or with ``value``),
    forgetting the oldest beyond ``keep``."""
    ids[item] = value
    if len(ids) > keep:
        del ids[next(iter(ids))]
