"""Progress of a set of tasks: counts, ETA, text, and when to redraw. Pure, no threads.

A display (a terminal bar, a notebook widget) owns one ``ProgressState``, feeds it
outcomes as refs finish, and asks a ``RedrawClock`` whether to redraw on each tick; the
clock keeps redraws to at most one per ``min_interval`` however many refs finish, so a
display never floods a terminal or a notebook's message channel.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

OK, FAILED, CANCELLED = "ok", "failed", "cancelled"


class ProgressCounts(NamedTuple):
    """One moment of a set of tasks. ``done`` counts successes only."""
    total: int
    done: int
    failed: int
    cancelled: int
    running: int
    elapsed: float
    eta: float | None        # seconds left, from the rate so far; None until one finished
    abandoned: bool = False  # the cluster went away before all of them finished

    @property
    def finished(self) -> int:
        """How many are over, whatever the outcome."""
        return self.done + self.failed + self.cancelled

    @property
    def complete(self) -> bool:
        """Nothing more will change: all are over, or nobody will tell us any more."""
        return self.finished >= self.total or self.abandoned

    @property
    def waiting(self) -> int:
        return max(0, self.total - self.finished - self.running)


class ProgressState:
    """Outcomes of ``total`` tasks as they arrive (from any thread)."""

    def __init__(self, total: int, started: float) -> None:
        self.total = total
        self.started = started
        self.ended: float | None = started if total == 0 else None
        self._counts = {OK: 0, FAILED: 0, CANCELLED: 0}
        self._running = 0
        self.abandoned = False
        self._lock = threading.Lock()
        self.version = 0            # bumped on every change, so displays see news cheaply

    def record(self, outcome: str, now: float) -> None:
        with self._lock:
            self._counts[outcome] += 1
            self.version += 1
            if sum(self._counts.values()) >= self.total and self.ended is None:
                self.ended = now
                self._running = 0

    def abandon(self, now: float) -> None:
        """The cluster is gone (shut down, or lost): the rest will never be reported."""
        with self._lock:
            if self.ended is None:
                self.ended = now
                self.abandoned = True
                self._running = 0
                self.version += 1

    def set_running(self, running: int) -> None:
        with self._lock:
            left = self.total - sum(self._counts.values())
            running = max(0, min(running, left))
            if running != self._running:
                self._running = running
                self.version += 1

    def snapshot(self, now: float) -> ProgressCounts:
        with self._lock:
            done, failed, cancelled = self._counts[OK], self._counts[FAILED], self._counts[CANCELLED]
            running = self._running
            abandoned = self.abandoned
            end = self.ended if self.ended is not None else now
        elapsed = max(0.0, end - self.started)
        finished = done + failed + cancelled
        eta = None
        if finished >= self.total:
            eta = 0.0
        elif finished and not abandoned:
            eta = elapsed / finished * (self.total - finished)
        return ProgressCounts(self.total, done, failed, cancelled, running, elapsed, eta, abandoned)


class RedrawClock:
    """When a display should redraw: on news, but at most once per ``min_interval``; at
    least once per ``idle_interval`` while unfinished (the elapsed time moves); once more
    when everything is over, and then never again."""

    def __init__(self, min_interval: float = 0.1, idle_interval: float = 1.0) -> None:
        self.min_interval = min_interval
        self.idle_interval = idle_interval
        self.last_drawn: float | None = None
        self.last_version = -1
        self.final_drawn = False
        self.redraws = 0

    def due(self, now: float, version: int, complete: bool) -> bool:
        if self.final_drawn:
            return False
        if self.last_drawn is not None and now - self.last_drawn < self.min_interval:
            return False
        news = version != self.last_version
        if not (complete or news or self.last_drawn is None
                or now - self.last_drawn >= self.idle_interval):
            return False
        self.last_drawn = now
        self.last_version = version
        self.final_drawn = complete
        self.redraws += 1
        return True


def format_seconds(seconds: float) -> str:
    """3.2 s, 1 min 05 s, 2 h 03 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def describe(counts: ProgressCounts) -> str:
    """One line: '37/100 done, 2 failed, 4 running, 12.3 s, about 20.0 s left'."""
    parts = [f"{counts.done}/{counts.total} done"]
    if counts.failed:
        parts.append(f"{counts.failed} failed")
    if counts.cancelled:
        parts.append(f"{counts.cancelled} cancelled")
    if counts.running and not counts.complete:
        parts.append(f"{counts.running} running")
    parts.append(format_seconds(counts.elapsed))
    if not counts.complete and counts.eta is not None:
        parts.append(f"about {format_seconds(counts.eta)} left")
    if counts.abandoned and counts.finished < counts.total:
        parts.append(f"{counts.total - counts.finished} never finished: the cluster is gone")
    return ", ".join(parts)
