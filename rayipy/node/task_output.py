"""What tasks print in a worker: captured per task, sent to its owner in whole lines.

A worker replaces ``sys.stdout`` and ``sys.stderr`` with ``TaskOutput`` streams. Text
written is kept per (owner, stream, task) in an ``OutputBuffer``; the runtime's I/O
thread sends the complete lines at each turn of its loop, and the main thread sends
everything, partial lines too, with each batch of results, so a task's output reaches
its owner before its result does. Any thread may write (a task's own threads, a
concurrent actor's); the buffer has its own lock.

Rich output (a task's ``display()``, a matplotlib figure shown; captured by
``rayipy.node.task_display``) travels the same way, as a line of its own on the
``"display"`` stream: ``("display", text fallback, task name, task id, bundle JSON)``.
The fallback is what a script prints and the dashboard's log shows; a notebook shows
the bundle under the submitting cell. Text the task printed before a display is sent
before it (its partial line too), so the order the task wrote in is kept.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import threading
from typing import Any, Callable

from rayipy.core.objects import owner_of
from rayipy.protocol.messages import TaskSpec


DISPLAY_STREAM = "display"


def encode_bundle(data: dict[str, Any], metadata: dict[str, Any] | None = None) -> str:
    """A MIME bundle as the JSON text a ``display`` line carries. Bytes values (a PNG)
    become base64 text, as Jupyter's messages carry them."""
    clean = {mime: base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value
             for mime, value in data.items()}
    return json.dumps({"data": clean, "metadata": metadata or {}}, default=str)


def decode_bundle(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(data, metadata) of a ``display`` line's JSON; ValueError when it is not one."""
    bundle = json.loads(text)
    if not isinstance(bundle, dict) or not isinstance(bundle.get("data"), dict):
        raise ValueError("not a MIME bundle")
    metadata = bundle.get("metadata")
    return bundle["data"], metadata if isinstance(metadata, dict) else {}


def text_fallback(data: dict[str, Any]) -> str:
    """The text shown where the bundle cannot be (a script, a log): its text/plain, or
    a line naming what was displayed. Always ends in a newline."""
    text = data.get("text/plain")
    if not isinstance(text, str) or not text:
        kinds = ", ".join(sorted(data)) or "nothing"
        text = f"<display: {kinds}>"
    return text if text.endswith("\n") else text + "\n"


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
        # (owner, stream, task name, task id, seq) -> [text]. seq is 0 for text still open
        # to more writes; a display, and the text before it, has a seq of its own, so the
        # dict's order is the order the task wrote in.
        self.parts: dict[tuple, list[str]] = {}
        self._seq = itertools.count(1)

    def add(self, spec: TaskSpec, stream: str, text: str) -> None:
        key = (owner_of(spec.task_id), stream, spec.name, spec.task_id, 0)
        with self.lock:
            self.parts.setdefault(key, []).append(text)

    def add_display(self, spec: TaskSpec, bundle_json: str, fallback: str) -> None:
        """A MIME bundle the task displayed (``encode_bundle``), after what it printed."""
        owner = owner_of(spec.task_id)
        with self.lock:
            # Seal the task's open text: it goes before the display, partial line too.
            # Rebuilding the dict keeps every entry where it was; displays are rare.
            self.parts = {(key[:4] + (next(self._seq),) if key[3] == spec.task_id and key[4] == 0
                           else key): parts for key, parts in self.parts.items()}
            key = (owner, DISPLAY_STREAM, spec.name, spec.task_id, next(self._seq))
            self.parts[key] = [fallback, bundle_json]

    def take(self, final: bool) -> dict[bytes, list[tuple]]:
        """The complete lines gathered, by owner, as (stream, text, task name, task id);
        with ``final``, partial lines too. What is not taken stays for later."""
        if not self.parts:      # most turns: nothing printed (reading a dict's size is atomic)
            return {}
        with self.lock:
            chunks, self.parts = self.parts, {}
            by_owner: dict[bytes, list[tuple]] = {}
            for key, parts in chunks.items():
                owner, stream, task, task_id, seq = key
                if stream == DISPLAY_STREAM:
                    by_owner.setdefault(owner, []).append((stream, parts[0], task, task_id, parts[1]))
                    continue
                text = "".join(parts)
                cut = len(text) if final or seq else text.rfind("\n") + 1
                if cut < len(text):
                    self.parts[key] = [text[cut:]]
                if cut:
                    # The task id lets the owner route the text (a notebook: to the cell
                    # that submitted the task).
                    by_owner.setdefault(owner, []).append((stream, text[:cut], task, task_id))
        return by_owner
