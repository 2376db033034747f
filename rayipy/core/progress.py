"""Progress of a set of tasks: counts, ETA, text, and when to redraw. Pure, no threads.

A display (a terminal bar, a notebook widget) owns one ``ProgressState``, feeds it
outcomes as refs finish, and asks a ``RedrawClock`` whether to redraw on each tick; the
clock keeps redraws to at most one per ``min_interval`` however many refs finish, so a
display never floods a terminal or a notebook's message channel.

The time left (``RateEstimate``) comes from the measured throughput, not from the
elapsed time: the start of a run (workers starting, functions shipped, the first results
on their way) says nothing about how fast the rest will go, and dividing the elapsed time
by the finished count gave 12.2 s left at 7% of a run that took 3.4 s in all. So the
clock starts at the first completion; the rate is an exponentially weighted average of
the completions per interval (a time constant of a few seconds: it follows a change of
pace, and one slow task does not swing it); and until enough completions were seen over
a long enough span the estimate is None, which displays write as "estimating...".
"""

from __future__ import annotations

import math
import threading
from typing import NamedTuple

OK, FAILED, CANCELLED = "ok", "failed", "cancelled"

# The rate estimate (see the module's docstring).
MIN_SAMPLES = 5            # completions after the first, before any estimate
MIN_SAMPLE_FRACTION = 0.05  # ... and this share of the total (capped by MAX_MIN_SAMPLES)
MAX_MIN_SAMPLES = 50
MIN_SPAN = 1.0             # seconds since the first completion, before any estimate
RATE_INTERVAL = 0.5        # completions are counted in intervals of at least this
RATE_TIME_CONSTANT = 3.0   # seconds: the EWMA's memory


class RateEstimate:
    """Completions per second from a timeline of completions, and the time left. Not
    thread-safe: ``ProgressState`` calls it under its lock."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.first: float | None = None   # the first completion: the clock starts here
        self.seen = 0                     # completions since (not counting) the first
        self.rate: float | None = None    # completions per second, smoothed
        self._window_start = 0.0
        self._window_count = 0
        need = max(MIN_SAMPLES, math.ceil(total * MIN_SAMPLE_FRACTION))
        self.min_samples = min(need, MAX_MIN_SAMPLES, max(total - 1, 0))

    def record(self, now: float, count: int = 1) -> None:
        """``count`` tasks finished at ``now``."""
        if self.first is None:
            self.first = self._window_start = now
            count -= 1
            if count <= 0:
                return
        self.seen += count
        self._window_count += count
        span = now - self._window_start
        if span >= RATE_INTERVAL:
            self._fold(self._window_count / span, span)
            self._window_start = now
            self._window_count = 0

    def _fold(self, rate: float, span: float) -> None:
        if self.rate is None:   # the first interval, which starts at the first completion
            self.rate = rate
            return
        weight = 1.0 - math.exp(-span / RATE_TIME_CONSTANT)
        self.rate += weight * (rate - self.rate)

    def ready(self, now: float) -> bool:
        """Enough seen for an estimate worth showing."""
        return (self.first is not None and self.seen >= self.min_samples
                and now - self.first >= MIN_SPAN and self.rate is not None)

    def current_rate(self, now: float) -> float | None:
        """The smoothed rate, with the open interval taken into account: when nothing has
        finished for a while, the rate falls instead of staying at its last value."""
        if not self.ready(now) or self.rate is None:
            return None
        span = now - self._window_start
        if span < RATE_INTERVAL:
            return self.rate
        weight = 1.0 - math.exp(-span / RATE_TIME_CONSTANT)
        return self.rate + weight * (self._window_count / span - self.rate)

    def seconds_left(self, finished: int, now: float) -> float | None:
        """The time left for ``total - finished`` tasks; None while still estimating."""
        if finished >= self.total:
            return 0.0
        rate = self.current_rate(now)
        if rate is None or rate <= 0.0:
            return None
        return (self.total - finished) / rate


class ProgressCounts(NamedTuple):
    """One moment of a set of tasks. ``done`` counts successes only."""
    total: int
    done: int
    failed: int
    cancelled: int
    running: int
    elapsed: float
    eta: float | None        # seconds left, from the measured rate; None while estimating
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
        self._rate = RateEstimate(total)
        self._lock = threading.Lock()
        self.version = 0            # bumped on every change, so displays see news cheaply

    def record(self, outcome: str, now: float) -> None:
        with self._lock:
            self._counts[outcome] += 1
            self._rate.record(now)
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
        elif not abandoned:
            with self._lock:
                eta = self._rate.seconds_left(finished, now)
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
    if not counts.complete:
        parts.append("estimating time left..." if counts.eta is None
                     else f"about {format_seconds(counts.eta)} left")
    if counts.abandoned and counts.finished < counts.total:
        parts.append(f"{counts.total - counts.finished} never finished: the cluster is gone")
    return ", ".join(parts)


# What a display colours a bar by: each outcome its own colour, cancelled not failed's red.
RUNNING, RUNNING_WITH_FAILURES, RUNNING_WITH_CANCELS = "running", "running-failures", "running-cancels"
ALL_DONE, SOME_FAILED, SOME_CANCELLED, ABANDONED = "done", "failed", "cancelled", "abandoned"


def outcome_style(counts: ProgressCounts) -> str:
    """Which of the styles above ``counts`` is drawn in: a failure outweighs a cancel (it
    needs looking at; a cancel was asked for), and a bar left by its cluster is neither."""
    if counts.complete:
        if counts.failed:
            return SOME_FAILED
        if counts.abandoned and counts.finished < counts.total:
            return ABANDONED
        return SOME_CANCELLED if counts.cancelled else ALL_DONE
    if counts.failed:
        return RUNNING_WITH_FAILURES
    return RUNNING_WITH_CANCELS if counts.cancelled else RUNNING
