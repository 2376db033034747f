"""A worker's account of the work that reached it without passing through the head.

Actor method calls and tasks sent to a leased worker go straight from the caller to the
worker (``rayipy/node/direct.py``), so the head never sees them one by one. The worker
keeps cumulative counts per function name, says what its main thread runs, and keeps
the calls that ended since its last heartbeat (id, name, status, start, duration, actor,
method, error), the last ``MAX_PER_BEAT`` of them. The runtime's heartbeat (once a second)
carries that to the head, which adds the counts' differences and the calls to its
``TaskHistory``. The dashboard and the state API (``rayipy.util.state``) therefore show
direct work at most a second late; when a worker ends more than ``MAX_PER_BEAT`` calls
in a second, the older ones are counted but not listed one by one. A call costs the
worker a clock read and a tuple appended to a bounded deque, and adds no message.

Pure but for one clock read: the worker's main thread calls ``accepted`` and
``finished``; the I/O thread calls ``heartbeat``, which only copies (a dict copy,
attribute reads and ``deque.popleft`` are atomic under the GIL).
"""

from __future__ import annotations

import collections
import time
from typing import Iterable

from rayipy.core.state_rows import error_text
from rayipy.protocol.messages import CANCELLED, OK, RETURNED, TaskResult, TaskSpec

MAX_NAMES = 200
OTHER = "(other functions)"
MAX_PER_BEAT = 500     # ended calls a heartbeat lists one by one (about 50 KB at most)


class DirectWork:
    def __init__(self) -> None:
        self.names: dict[bytes, TaskSpec] = {}                   # task id -> spec, until done
        # name -> (done, failed, cancelled, seconds), as ``core/task_counts`` defines them
        self.counts: dict[str, tuple[int, int, int, float]] = {}
        # Calls ended since the last heartbeat: (task id, name, status, started at (epoch
        # seconds), duration, actor id, method, error text), the newest MAX_PER_BEAT.
        self.ended: collections.deque[tuple] = collections.deque(maxlen=MAX_PER_BEAT)
        self.ended_total = 0         # appended so far (main thread)
        self.reported_total = 0      # of which heartbeats took or found dropped (I/O thread)

    def accepted(self, specs: Iterable[TaskSpec]) -> None:
        names = self.names
        for spec in specs:
            names[spec.task_id] = spec

    def dropped(self, task_id: bytes) -> None:
        """A direct call that will be answered through the head instead (cancelled)."""
        self.names.pop(task_id, None)

    def finished(self, result: TaskResult) -> None:
        spec = self.names.pop(result.task_id, None)
        status = result.status
        if status == RETURNED:   # handed back unrun: it will run elsewhere
            return
        duration = result.duration
        ok = status == OK
        if spec is not None:
            name = listed = spec.name
            self.ended.append((result.task_id, name, status, time.time() - duration, duration,
                               spec.actor_id, spec.method, "" if ok else error_text(result.values)))
        else:
            name = listed = "?"
            self.ended.append((result.task_id, name, status, time.time() - duration, duration,
                               b"", "", "" if ok else error_text(result.values)))
        self.ended_total += 1
        if listed not in self.counts and len(self.counts) >= MAX_NAMES:
            name = OTHER
        cancelled = status == CANCELLED
        done, failed, was_cancelled, seconds = self.counts.get(name, (0, 0, 0, 0.0))
        # A new tuple, never one changed in place: the I/O thread may be copying the dict.
        self.counts[name] = (done + ok, failed + (not ok and not cancelled),
                             was_cancelled + cancelled, seconds + duration)

    def heartbeat(self, current: TaskSpec | None, since: float, in_flight: int) -> tuple:
        """The heartbeat's body: (the direct call the main thread runs as (task id, name,
        started at) or None, calls running on a concurrent actor's threads, counts,
        (calls ended since the last beat, how many more ended but were not kept))."""
        running = None
        if current is not None and current.task_id in self.names:
            running = (current.task_id, current.name, since)
        ended = []
        popleft = self.ended.popleft
        while True:
            try:
                ended.append(popleft())
            except IndexError:
                break
        # Read after the pops: every call counted in the total was either taken now,
        # taken before, or pushed out of the deque (dropped). A call appended between the
        # pops and this read is counted next time, not dropped now.
        total = self.ended_total - len(self.ended)
        dropped = max(0, total - self.reported_total - len(ended))
        self.reported_total = total
        return (running, in_flight, dict(self.counts), (ended, dropped))
