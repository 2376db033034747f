"""What the head remembers about tasks for the dashboard, in bounded memory.

The scheduler forgets a task the moment it finishes; the dashboard wants to show the
last ones, how many of each function ran, and since when each worker runs its current
task. The head's loop feeds ``TaskHistory`` three events (tasks handed to a worker,
results back from a worker, failures decided by the head); each costs a few hundred
nanoseconds per task, and memory is bounded whatever the number of tasks: a ring buffer
of the last ``capacity`` tasks, one entry per worker, one per function name (up to
``MAX_FUNCTIONS``, the rest counted together).

Pure bookkeeping: no sockets, no threads, no clock read (callers pass ``now``, seconds
since the epoch). Only the head's thread touches it.
"""

from __future__ import annotations

import collections
from typing import Any, Iterable, NamedTuple

from rayipy.protocol.messages import CANCELLED, CRASHED, OK

RECENT_CAPACITY = 1000
MAX_FUNCTIONS = 500
OTHER_FUNCTIONS = "(other functions)"
SLACK = 64             # entries of gone workers tolerated before a sweep


class Finished(NamedTuple):
    """One task that ended, as the dashboard lists it."""
    task_id: bytes
    name: str
    status: int           # protocol status: OK, ERROR, CANCELLED, CRASHED
    node_id: bytes        # b"" when the head decided the outcome (never ran, or its worker died)
    worker_pid: int       # 0 likewise
    duration: float       # seconds the function ran (0.0 when it never ran)
    ended_at: float       # epoch seconds, as seen by the head


class FunctionStats:
    __slots__ = ("finished", "failed", "seconds")

    def __init__(self) -> None:
        self.finished = 0
        self.failed = 0
        self.seconds = 0.0


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
    def __init__(self, capacity: int = RECENT_CAPACITY, max_functions: int = MAX_FUNCTIONS) -> None:
        # Finished records as plain tuples (see ``results``); ``Finished(*item)`` reads one.
        self.recent: collections.deque[tuple] = collections.deque(maxlen=capacity)
        self.functions: dict[str, FunctionStats] = {}
        self.max_functions = max_functions
        self.finished = 0                          # tasks that returned normally
        self.failed = 0                            # raised, cancelled, or lost with their worker
        self.by_node: collections.Counter[bytes] = collections.Counter()
        # worker id -> (task id of the task at the front of its queue, when it got there)
        self.running_since: dict[bytes, tuple[bytes, float]] = {}
        # Work that went straight to a worker (actor calls, leased tasks), from heartbeats:
        # worker id -> (its running direct call or None, calls in flight on actor threads)
        self.direct_running: dict[bytes, tuple] = {}
        self.direct_seen: dict[bytes, dict] = {}    # worker id -> the counts it last reported

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
        if len(self.running_since) > len(workers) + SLACK:
            self.prune(workers)
        front = worker.queue[0]
        seen = self.running_since.get(worker_id)
        if seen is None or seen[0] != front:
            self.running_since[worker_id] = (front, now)

    def results(self, worker: Any, results: Iterable, tasks: dict, now: float) -> None:
        """A worker's results (``worker`` is the scheduler's record of it, None if it is
        gone). ``tasks`` is the scheduler's task table, read before it forgets them.

        On the head's hot path: plain tuples (a NamedTuple costs four times as much to
        make), and counts added once per run of same-named results, not once per task."""
        node_id, pid = (worker.node_id, worker.pid) if worker is not None else (b"", 0)
        append = self.recent.append
        get = tasks.get
        run_name = None
        ok = failed = 0
        seconds = 0.0
        for result in results:
            record = get(result.task_id)
            name = record.spec.name if record is not None else "?"
            if name != run_name:
                if run_name is not None:
                    self._add(run_name, ok, failed, seconds)
                run_name, ok, failed, seconds = name, 0, 0, 0.0
            status = result.status
            if status == OK:
                ok += 1
            else:
                failed += 1
            seconds += result.duration
            append((result.task_id, name, status, node_id, pid, result.duration, now))
        if run_name is not None:
            self._add(run_name, ok, failed, seconds)
            self.by_node[node_id] += ok + failed

    def failed_at_head(self, task_id: bytes, name: str, status: int, now: float) -> None:
        """A task the head failed itself: cancelled while queued, out of retries, impossible."""
        self.recent.append((task_id, name, status, b"", 0, 0.0, now))
        self._count(name, status, 0.0)

    def direct(self, worker_id: bytes, workers: dict, report: tuple) -> None:
        """A worker's heartbeat: its direct work (``rayipy.dashboard.direct_work``), with
        cumulative counts per name, of which only what is new since its last report counts.
        ``workers`` is the scheduler's worker table."""
        worker = workers.get(worker_id)
        if worker is None:
            return
        if len(self.direct_seen) > len(workers) + SLACK:
            self.prune(workers)
        running, in_flight, counts = report
        if running is None and not in_flight:
            self.direct_running.pop(worker_id, None)
        else:
            self.direct_running[worker_id] = (running, in_flight)
        seen = self.direct_seen.get(worker_id, {})
        new = 0
        for name, (done, failed, seconds) in counts.items():
            was = seen.get(name, (0, 0, 0.0))
            if done != was[0] or failed != was[1]:
                self._add(name, done - was[0], failed - was[1], seconds - was[2])
                new += done - was[0] + failed - was[1]
        self.direct_seen[worker_id] = counts
        if new:
            self.by_node[worker.node_id] += new

    def prune(self, workers: dict) -> None:
        """Forget workers that are gone (died, retired, their actor killed), so that a long
        session that nobody watches does not keep one entry per worker it ever had."""
        for worker_id in [w for w in {*self.running_since, *self.direct_seen} if w not in workers]:
            self.running_since.pop(worker_id, None)
            self.direct_running.pop(worker_id, None)
            self.direct_seen.pop(worker_id, None)

    def _count(self, name: str, status: int, duration: float) -> None:
        ok = status == OK
        self._add(name, int(ok), int(not ok), duration)

    def _add(self, name: str, finished: int, failed: int, seconds: float) -> None:
        stats = self.functions.get(name)
        if stats is None:
            if len(self.functions) >= self.max_functions:
                name = OTHER_FUNCTIONS
            stats = self.functions.get(name)
            if stats is None:
                stats = self.functions[name] = FunctionStats()
        self.finished += finished
        self.failed += failed
        stats.finished += finished
        stats.failed += failed
        stats.seconds += seconds
