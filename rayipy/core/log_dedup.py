"""Repeated task output, shown once: the same line printed by many workers, deduplicated.

A hundred tasks that each print "loading model" fill a notebook with a hundred lines that
say nothing new. As Ray does, the first instance of a line is shown at once. When the same
line (the same words, ignoring those with digits in them: "epoch 3", "epoch 4" are one
line) then comes from another worker within ``window`` seconds, it and its later repeats
are held back, and at the end of the window the last of them is shown once, followed by
"[repeated Nx across cluster]". Lines repeated by one worker alone are its own output
and are all shown: a loop's progress is not deduplicated away.

Pure: lines in, lines to show out; the caller passes the clock and asks for the held
summaries (``due``) now and then. Each line carries an opaque ``route`` (the owner uses
the task id, to put the summary under the cell that ran the tasks).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

WINDOW_SECONDS = 5.0
# Held lines are forgotten once their window ends; a flood of distinct lines is bounded
# by the window, but a cap keeps memory fixed whatever comes.
MAX_KEPT = 10_000

_NUMERIC_WORD = re.compile(r"\S*\d\S*")


class LogLine(NamedTuple):
    """One line of task output (``text`` ends with its newline, if it had one)."""
    stream: str      # "stdout" or "stderr"
    text: str
    task: str        # the task's name, for the label
    source: str      # the worker it came from ("pid=7, ip=10.0.0.2"), for the label too
    route: Any       # where the caller sends it (opaque here)


class _Seen:
    __slots__ = ("first_at", "sources", "held", "last")

    def __init__(self, first_at: float, source: str) -> None:
        self.first_at = first_at
        self.sources = {source}
        self.held = 0                 # repeats not shown
        self.last: LogLine | None = None


def pattern_of(stream: str, text: str) -> tuple[str, str]:
    """What makes two lines "the same": their stream, and their words but those with
    digits (counters, ids, timings)."""
    return stream, _NUMERIC_WORD.sub("*", text.strip())


def with_count(line: LogLine, repeats: int) -> LogLine:
    """``line`` with Ray's note of how many more times it was printed."""
    body = line.text.rstrip("\n")
    return line._replace(text=f"{body} [repeated {repeats}x across cluster]\n")


class LogDeduplicator:
    """Which lines of task output to show now, and summaries of the ones held back."""

    def __init__(self, window: float = WINDOW_SECONDS, enabled: bool = True,
                 max_kept: int = MAX_KEPT) -> None:
        self.window = window
        self.enabled = enabled
        self.max_kept = max_kept
        self._seen: dict[tuple[str, str], _Seen] = {}   # oldest first

    def feed(self, lines: list[LogLine], now: float) -> list[LogLine]:
        """The lines to show now, in order; the others are held for ``due``."""
        if not self.enabled:
            return lines
        shown = []
        seen = self._seen
        for line in lines:
            if not line.text.strip():
                shown.append(line)      # blank lines are layout, not messages
                continue
            key = pattern_of(line.stream, line.text)
            entry = seen.get(key)
            if entry is None or now - entry.first_at >= self.window:
                if entry is not None:
                    shown.extend(self._summary(entry))
                    del seen[key]
                seen[key] = _Seen(now, line.source)
                shown.append(line)
                if len(seen) > self.max_kept:
                    oldest = next(iter(seen))
                    shown.extend(self._summary(seen.pop(oldest)))
                continue
            entry.sources.add(line.source)
            if len(entry.sources) > 1:
                entry.held += 1
                entry.last = line
            else:
                shown.append(line)      # one worker repeating itself: its own output
        return shown

    def due(self, now: float, everything: bool = False) -> list[LogLine]:
        """Summaries of lines held back whose window has ended (``everything``: all of
        them, at shutdown)."""
        out: list[LogLine] = []
        seen = self._seen
        for key in list(seen):
            entry = seen[key]
            if not everything and now - entry.first_at < self.window:
                break               # oldest first: the rest are younger still
            del seen[key]
            out.extend(self._summary(entry))
        return out

    @staticmethod
    def _summary(entry: _Seen) -> list[LogLine]:
        if entry.held == 0 or entry.last is None:
            return []
        return [with_count(entry.last, entry.held)]
