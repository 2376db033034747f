"""What tasks print in a worker: captured per task, sent to its owner in whole lines.

A worker replaces ``sys.stdout`` and ``sys.stderr`` with ``TaskOutput`` streams. Text
written is kept per (owner, stream, task) in an ``OutputBuffer``; the runtime's I/O
thread sends the complete lines at each turn of its loop, and the main thread sends
everything, partial lines too, with each batch of results, so a task's output reaches
its owner before its result does. Any thread may write (a task's own threads, a
concurrent actor's); the buffer has its own lock.
"""

from __future__ import annotations

import io
import threading
from typing import Callable

from rayipy.core.objects import owner_of
from rayipy.protocol.messages import TaskSpec


class TaskOutput(io.TextIOBase):
    """sys.stdout / sys.stderr of a worker: text goes to ``write_to(stream, text)``."""

    def __init__(self, write_to: Callable[[str, str], None], stream: str) -> None:
        self.write_to = write_to
        self.stream = stream

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            self.write_to(self.stream, text)
        return len(text)

    def flush(self) -> None:
        pass

    @property
    def encoding(self) -> str:  # type: ignore[override]  # read-only here, as on a real stream
        return "utf-8"

    def isatty(self) -> bool:
        return False


class OutputBuffer:
    """Text printed by tasks and not sent yet, per owner, stream and task."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.parts: dict[tuple, list[str]] = {}  # (owner, stream, task name, task id) -> [text]

    def add(self, spec: TaskSpec, stream: str, text: str) -> None:
        key = (owner_of(spec.task_id), stream, spec.name, spec.task_id)
        with self.lock:
            self.parts.setdefault(key, []).append(text)

    def take(self, final: bool) -> dict[bytes, list[tuple]]:
        """The complete lines gathered, by owner, as (stream, text, task name, task id);
        with ``final``, partial lines too. What is not taken stays for later."""
        if not self.parts:      # most turns: nothing printed (reading a dict's size is atomic)
            return {}
        with self.lock:
            chunks, self.parts = self.parts, {}
            by_owner: dict[bytes, list[tuple]] = {}
            for key, parts in chunks.items():
                owner, stream, task, task_id = key
                text = "".join(parts)
                cut = len(text) if final else text.rfind("\n") + 1
                if cut < len(text):
                    self.parts[key] = [text[cut:]]
                if cut:
                    # The task id lets the owner route the text (a notebook: to the cell
                    # that submitted the task).
                    by_owner.setdefault(owner, []).append((stream, text[:cut], task, task_id))
        return by_owner
