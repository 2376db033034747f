"""A bound on work in flight: pure bookkeeping for back-pressure, no cluster.

``rayipy.util.map_unordered`` and the pool's ``imap`` submit from a lazy iterable and
must never have more than ``limit`` tasks running or queued at once: a new one starts
only when an earlier one has been collected.
"""

from __future__ import annotations

from typing import Any


class InFlightWindow:
    """Counts tasks started and collected; says how many more may start now."""

    __slots__ = ("limit", "in_flight", "started", "collected", "peak")

    def __init__(self, limit: Any) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"the limit of tasks in flight must be an int >= 1, got {limit!r}")
        self.limit = limit
        self.in_flight = 0
        self.started = 0
        self.collected = 0
        self.peak = 0

    def room(self) -> int:
        """How many tasks may start now."""
        return self.limit - self.in_flight

    def start(self) -> None:
        """One task was submitted; refused if the window is full."""
        if self.in_flight >= self.limit:
            raise RuntimeError(f"{self.limit} tasks already in flight: collect one first")
        self.in_flight += 1
        self.started += 1
        self.peak = max(self.peak, self.in_flight)

    def collect(self) -> None:
        """One task's result was taken."""
        if self.in_flight == 0:
            raise RuntimeError("no task in flight to collect")
        self.in_flight -= 1
        self.collected += 1
