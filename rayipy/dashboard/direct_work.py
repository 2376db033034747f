"""A worker's account of the work that reached it without passing through the head.

Actor method calls and tasks sent to a leased worker go straight from the caller to the
worker (``rayipy/node/direct.py``), so the head, and with it the dashboard, never sees
them one by one. The worker keeps cumulative counts per function name and says what
its main thread runs; the runtime's heartbeat (once a second) carries that to the head,
which adds the differences to its ``TaskHistory``. The dashboard therefore shows
direct work at most a second late, and in counts rather than one row per call.

Pure: the worker's main thread calls ``accepted`` and ``finished``; the I/O thread calls
``heartbeat``, which only copies (a dict copy and attribute reads are atomic under the GIL).
"""

from __future__ import annotations

from typing import Iterable

from rayipy.protocol.messages import OK, RETURNED, TaskResult, TaskSpec

MAX_NAMES = 200
OTHER = "(other functions)"


class DirectWork:
    def __init__(self) -> None:
        self.names: dict[bytes, str] = {}                        # task id -> name, until done
        self.counts: dict[str, tuple[int, int, float]] = {}     # name -> (done, failed, seconds)

    def accepted(self, specs: Iterable[TaskSpec]) -> None:
        for spec in specs:
            self.names[spec.task_id] = spec.name

    def dropped(self, task_id: bytes) -> None:
        """A direct call that will be answered through the head instead (cancelled)."""
        self.names.pop(task_id, None)

    def finished(self, result: TaskResult) -> None:
        name = self.names.pop(result.task_id, "?")
        if result.status == RETURNED:   # handed back unrun: it will run elsewhere
            return
        if name not in self.counts and len(self.counts) >= MAX_NAMES:
            name = OTHER
        done, failed, seconds = self.counts.get(name, (0, 0, 0.0))
        ok = result.status == OK
        # A new tuple, never one changed in place: the I/O thread may be copying the dict.
        self.counts[name] = (done + ok, failed + (not ok), seconds + result.duration)

    def heartbeat(self, current: TaskSpec | None, since: float, in_flight: int) -> tuple:
        """The heartbeat's body: (the direct call the main thread runs as (task id, name,
        started at) or None, calls running on a concurrent actor's threads, counts)."""
        running = None
        if current is not None and current.task_id in self.names:
            running = (current.task_id, current.name, since)
        return (running, in_flight, dict(self.counts))
