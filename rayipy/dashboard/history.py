"""What the head remembers about tasks, in bounded memory (the dashboard and the state API).

The scheduler forgets a task the moment it finishes; the dashboard and
``rayipy.util.state`` want the last ones, how many of each function ran, and since when
each worker runs its current task. The head keeps one ``TaskHistory`` always (with or
without the dashboard) and feeds it four events: tasks handed to a worker, results back
from a worker, failures decided by the head, and each worker's heartbeat, which reports
the work that reached it without passing through the head (actor calls, tasks on a
lease: ``direct_work.py``). The per-task ones cost a few hundred nanoseconds, and memory
is bounded whatever the number of tasks: a ring buffer of the last ``capacity`` tasks
(``RECENT_CAPACITY``), one entry per worker, one per function name (up to
``MAX_FUNCTIONS``, the rest counted together).

Start and end times: a worker's own results give how long each task ran, not when it
started. Through the head they come in batches, so the head places a batch's tasks back
to back, the last ending when the batch arrived, and never before the end of the
worker's previous task (``last_end``): a worker that runs one task at a time shows no
overlap. Direct work carries the worker's own start times.

Pure bookkeeping: no sockets, no threads, no clock read (callers pass ``now``, seconds
since the epoch). Only the head's thread touches it.
"""

from __future__ import annotations

import collections
from typing import Any, NamedTuple, Sequence

from rayipy.core.state_rows import error_text
from rayipy.protocol.messages import CANCELLED, CRASHED, OK

RECENT_CAPACITY = 10_000   # finished tasks kept (the state API's and the dashboard's bound)
FAILURES_CAPACITY = 1_000  # failed tasks kept apart, so a flood of successes cannot hide them
MAX_FUNCTIONS = 500
OTHER_FUNCTIONS = "(other functions)"
SLACK = 64             # entries of gone workers tolerated before a sweep


class Finished(NamedTuple):
    """One task that ended, as the dashboard and the state API list it."""
    task_id: bytes
    name: str
    status: int           # protocol status: OK, ERROR, CANCELLED, CRASHED
    node_id: bytes        # b"" when the head decided the outcome (never ran, or its worker died)
    worker_pid: int       # 0 likewise
    duration: float       # seconds the function ran (0.0 when it never ran)
    ended_at: float       # epoch seconds (see the module's docstring)
    worker_id: bytes = b""
    actor_id: bytes = b""  # set for actor creation and actor calls
    method: str = ""       # "__init__" for an actor's creation, else the method called
    error: str = ""        # "ClassName: message" of a failure ("" when it did not fail)
    started_at: float = 0.0   # epoch seconds (0.0 when it never ran)
    direct: bool = False   # it reached its worker without the head (actor call, lease)


class FunctionStats:
    """One function's ended tasks, counted as ``rayipy.core.task_counts`` defines them."""
    __slots__ = ("finished", "failed", "cancelled", "seconds")

    def __init__(self) -> None:
        self.finished = 0
        self.failed = 0
        self.cancelled = 0
        self.seconds = 0.0

    @property
    def ended(self) -> int:
        return self.finished + self.failed + self.cancelled


def state_of(status: int) -> str:
    return "FINISHED" if status == OK else "FAILED"


def failure_of(status: int) -> str:
    """Why a task failed, in a word; "" when it did not."""
    if status == OK:
        return ""
    if status == CANCELLED:
        return "cancelled"
    if status == CRASHED:
        return "worker died"
    return "raised"


class TaskHistory:
    def __init__(self, capacity: int = RECENT_CAPACITY, max_functions: int = MAX_FUNCTIONS,
                 failures_capacity: int = FAILURES_CAPACITY) -> None:
        # Finished records as plain tuples (see ``results``); ``Finished(*item)`` reads one.
        self.recent: collections.deque[tuple] = collections.deque(maxlen=capacity)
        self.appended = 0      # records ever put in ``recent``: the dashboard's stream cursor
        # The failed ones again, in a ring of their own: (seq in ``recent``, record).
        self.failures: collections.deque[tuple] = collections.deque(maxlen=failures_capacity)
        self.functions: dict[str, FunctionStats] = {}
        self.max_functions = max_functions
        # Ended tasks, as ``rayipy.core.task_counts`` defines the three counts.
        self.finished = 0                          # returned normally
        self.failed = 0                            # raised, or lost with their worker
        self.cancelled = 0
        self.by_node: collections.Counter[bytes] = collections.Counter()
        # worker id -> (task id of the task at the front of its queue, when it got there)
        self.running_since: dict[bytes, tuple[bytes, float]] = {}
        # Work that went straight to a worker (actor calls, leased tasks), from heartbeats:
        # worker id -> (its running direct call or None, calls in flight on actor threads)
        self.direct_running: dict[bytes, tuple] = {}
        self.direct_seen: dict[bytes, dict] = {}    # worker id -> the counts it last reported
        # worker id -> when its last task ended, as placed here (see the module's docstring)
        self.last_end: dict[bytes, float] = {}
        self.direct_dropped = 0     # direct calls workers ran but could not report one by one

    @property
    def capacity(self) -> int:
        return self.recent.maxlen or 0

    # -- events (the head's thread) ----------------------------------------------------------
    def started(self, worker_id: bytes, workers: dict, now: float) -> None:
        """Tasks were handed to a worker, or it finished some: note its new front task.
        ``workers`` is the scheduler's worker table."""
        worker = workers.get(worker_id)
        if worker is None or not worker.queue:
            self.running_since.pop(worker_id, None)
            return
        limit = len(workers) + SLACK
        if len(self.running_since) > limit or len(self.last_end) > limit:
            self.prune(workers)
        front = worker.queue[0]
        seen = self.running_since.get(worker_id)
        if seen is None or seen[0] != front:
            self.running_since[worker_id] = (front, now)

    def results(self, worker: Any, results: Sequence, tasks: dict, now: float) -> None:
        """A worker's results (``worker`` is the scheduler's record of it, None if it is
        gone), in the order it ran them. ``tasks`` is the scheduler's task table, read
        before it forgets them.

        On the head's hot path: plain tuples (a NamedTuple costs four times as much to
        make), and counts added once per run of same-named results, not once per task."""
        if worker is not None:
            node_id, pid, worker_id = worker.node_id, worker.pid, worker.worker_id
        else:
            node_id, pid, worker_id = b"", 0, b""
        append = self.recent.append
        get = tasks.get
        run_name = None
        ok = failed = cancelled = 0
        seconds = 0.0
        # Back to back, the last ending now, none before the worker's previous task ended.
        total = 0.0
        for result in results:
            total += result.duration
        start = now - total
        last_end = self.last_end
        previous = last_end.get(worker_id)
        if previous is not None and previous > start:
            start = previous
        for result in results:
            record = get(result.task_id)
            if record is not None:
                spec = record.spec
                name, actor_id, method = spec.name, spec.actor_id, spec.method
            else:
                name, actor_id, method = "?", b"", ""
            if name != run_name:
                if run_name is not None:
                    self._add(run_name, ok, failed, cancelled, seconds)
                run_name, ok, failed, cancelled, seconds = name, 0, 0, 0, 0.0
            status = result.status
            duration = result.duration
            if status == OK:
                ok += 1
                error = ""
            else:
                if status == CANCELLED:
                    cancelled += 1
                else:
                    failed += 1
                error = error_text(result.values)
            seconds += duration
            end = start + duration
            item = (result.task_id, name, status, node_id, pid, duration, end, worker_id,
                    actor_id, method, error, start, False)
            append(item)
            self.appended += 1
            if status != OK:
                self.failures.append((self.appended, item))
            start = end
        if run_name is not None:
            self._add(run_name, ok, failed, cancelled, seconds)
            self.by_node[node_id] += ok + failed + cancelled
            if worker_id:
                last_end[worker_id] = start

    def failed_at_head(self, task_id: bytes, name: str, status: int, now: float,
                       actor_id: bytes = b"", method: str = "", error: str = "") -> None:
        """A task the head failed itself: cancelled while queued, out of retries, impossible.
        ``error`` is "ClassName: message"."""
        item = (task_id, name, status, b"", 0, 0.0, now, b"", actor_id, method, error, 0.0, False)
        self.recent.append(item)
        self.appended += 1
        self.failures.append((self.appended, item))
        self._count(name, status, 0.0)

    def direct(self, worker_id: bytes, workers: dict, report: tuple) -> None:
        """A worker's heartbeat: its direct work (``rayipy.dashboard.direct_work``), with
        cumulative counts per name, of which only what is new since its last report counts,
        and the calls that ended since its last beat, one by one (at most
        ``direct_work.MAX_PER_BEAT``; how many more there were). ``workers`` is the
        scheduler's worker table."""
        worker = workers.get(worker_id)
        if worker is None:
            return
        if len(self.direct_seen) > len(workers) + SLACK:
            self.prune(workers)
        running, in_flight, counts = report[:3]
        if running is None and not in_flight:
            self.direct_running.pop(worker_id, None)
        else:
            self.direct_running[worker_id] = (running, in_flight)
        seen = self.direct_seen.get(worker_id, {})
        new = 0
        for name, (done, failed, cancelled, seconds) in counts.items():
            was = seen.get(name, (0, 0, 0, 0.0))
            if done != was[0] or failed != was[1] or cancelled != was[2]:
                self._add(name, done - was[0], failed - was[1], cancelled - was[2],
                          seconds - was[3])
                new += done - was[0] + failed - was[1] + cancelled - was[2]
        self.direct_seen[worker_id] = counts
        if new:
            self.by_node[worker.node_id] += new
        if len(report) > 3:   # (ended calls, how many more were not kept)
            ended, dropped = report[3]
            self.direct_dropped += dropped
            node_id, pid, append = worker.node_id, worker.pid, self.recent.append
            for task_id, name, status, started_at, duration, actor_id, method, error in ended:
                item = (task_id, name, status, node_id, pid, duration, started_at + duration,
                        worker_id, actor_id, method, error, started_at, True)
                append(item)
                self.appended += 1
                if status != OK:
                    self.failures.append((self.appended, item))

    def prune(self, workers: dict) -> None:
        """Forget workers that are gone (died, retired, their actor killed), so that a long
        session that nobody watches does not keep one entry per worker it ever had."""
        for worker_id in [w for w in {*self.running_since, *self.direct_seen, *self.last_end}
                          if w not in workers]:
            self.running_since.pop(worker_id, None)
            self.last_end.pop(worker_id, None)
            self.direct_running.pop(worker_id, None)
            self.direct_seen.pop(worker_id, None)

    def _count(self, name: str, status: int, duration: float) -> None:
        cancelled = status == CANCELLED
        self._add(name, int(status == OK), int(status != OK and not cancelled), int(cancelled),
                  duration)

    def _add(self, name: str, finished: int, failed: int, cancelled: int,
             seconds: float) -> None:
        stats = self.functions.get(name)
        if stats is None:
            if len(self.functions) >= self.max_functions:
                name = OTHER_FUNCTIONS
            stats = self.functions.get(name)
            if stats is None:
                stats = self.functions[name] = FunctionStats()
        self.finished += finished
        self.failed += failed
        self.cancelled += cancelled
        stats.finished += finished
        stats.failed += failed
        stats.cancelled += cancelled
        stats.seconds += seconds
