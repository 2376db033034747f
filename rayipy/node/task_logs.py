"""Task output arriving at its owner: labelled as Ray labels it, repeats deduplicated,
then handed to the printer (a script's stdout and stderr; in a notebook, the cell's).

Runs on the runtime's I/O thread only: ``received`` for each ``LOG`` message, ``tick``
at each turn of its loop (held repeats are shown when their window ends), ``close``
when the runtime stops (what is held is shown then).

Each line is labelled with its task's name and the worker that printed it:
``(train pid=4711)`` for a worker on this process's own node, ``(train pid=4711,
ip=10.0.0.2)`` for one elsewhere, as in Ray.

Deduplication (``rayipy.core.log_dedup``) is on by default; ``RAYIPY_DEDUP_LOGS=0`` (or
Ray's ``RAY_DEDUP_LOGS=0``) turns it off, and ``RAYIPY_DEDUP_LOGS_AGG_WINDOW_S`` (or
``RAY_DEDUP_LOGS_AGG_WINDOW_S``) sets its window, 5 s by default.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from rayipy.core.log_dedup import WINDOW_SECONDS, LogDeduplicator, LogLine
from rayipy.node.task_output import DISPLAY_STREAM

TICK_SECONDS = 0.25     # how often held repeats are looked at
WARNING_STREAM = "warning"   # a LOG line from the head itself (``Warn``), not a task's


class TaskLogPrinter:
    """Prints output streamed from tasks on this process's own stdout/stderr, labelled;
    a display (a MIME bundle) as its text fallback, on stdout."""

    def __call__(self, lines: list, label: str) -> None:
        for stream, text, task, *_ in lines:
            out = sys.stderr if stream == "stderr" else sys.stdout
            prefix = f"({task} {label}) "
            body = "".join(prefix + line for line in text.splitlines(keepends=True))
            if not body.endswith("\n"):
                body += "\n"
            try:
                out.write(body)
                out.flush()
            except Exception:
                pass


def _setting(name: str, default: str) -> str:
    return os.environ.get(f"RAYIPY_{name}", os.environ.get(f"RAY_{name}", default))


def dedup_from_environment() -> LogDeduplicator:
    """The deduplicator the environment asks for (see the module's docstring)."""
    enabled = _setting("DEDUP_LOGS", "1").strip().lower() not in ("0", "false", "no", "off")
    text = _setting("DEDUP_LOGS_AGG_WINDOW_S", str(WINDOW_SECONDS))
    try:
        window = float(text)
    except ValueError:
        raise ValueError(f"RAYIPY_DEDUP_LOGS_AGG_WINDOW_S must be a number of seconds, "
                         f"got {text!r}") from None
    return LogDeduplicator(window, enabled)


def local_label(label: str, own_ip: str) -> str:
    """A worker's label as this process shows it: its address only if it is elsewhere."""
    if own_ip and label.endswith(f", ip={own_ip}"):
        return label[:-len(f", ip={own_ip}")]
    return label


class TaskLogs:
    """The owner's side of task output, between the ``LOG`` messages and the printer."""

    def __init__(self, own_ip: str, dedup: LogDeduplicator | None = None) -> None:
        self.own_ip = own_ip
        self.dedup = dedup if dedup is not None else dedup_from_environment()
        # (lines, label) -> None; lines are (stream, text, task name, task id). The
        # Jupyter layer replaces it with its output router.
        self.printer: Callable[[list, str], None] = TaskLogPrinter()
        self.next_tick = 0.0

    def received(self, lines: list, label: str, now: float) -> None:
        """A worker's lines: (stream, text, task name, task id), ``label`` its pid and ip."""
        if lines and lines[0][0] == WARNING_STREAM:
            # The head's warning about one of our tasks (it cannot be scheduled): shown
            # once, as it came, on stderr, never held back as a repeat.
            self.printer([("stderr", *line[1:]) for line in lines], label)
            return
        source = local_label(label, self.own_ip)
        if not self.dedup.enabled:
            self.printer(lines, source)
            return
        # A display (a MIME bundle, ``task_output.DISPLAY_STREAM``) is never a repeat to
        # sum up: it goes to the printer whole, after the text before it.
        text_lines: list = []
        for line in lines:
            if line[0] == DISPLAY_STREAM:
                self._feed(text_lines, source, now)
                text_lines = []
                self.printer([line], source)
            else:
                text_lines.append(line)
        self._feed(text_lines, source, now)

    def _feed(self, lines: list, source: str, now: float) -> None:
        if not lines:
            return
        split = [LogLine(stream, line, task, source, task_id)
                 for stream, text, task, task_id, *_ in lines
                 for line in text.splitlines(keepends=True)]
        self._show(self.dedup.feed(split, now))

    def tick(self, now: float) -> None:
        if now >= self.next_tick:
            self.next_tick = now + TICK_SECONDS
            self._show(self.dedup.due(now))

    def close(self) -> None:
        self._show(self.dedup.due(0.0, everything=True))

    def _show(self, lines: list[LogLine]) -> None:
        """To the printer, one call per run of lines from the same worker."""
        start = 0
        for end in range(1, len(lines) + 1):
            if end == len(lines) or lines[end].source != lines[start].source:
                self.printer([(line.stream, line.text, line.task, line.route)
                              for line in lines[start:end]], lines[start].source)
                start = end
