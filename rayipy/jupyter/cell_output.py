"""A cell's task output kept in an ``ipywidgets.Output``: nothing lost on a page reload.

Why a widget (see docs/jupyter.md, "Task output that survives a reload"): JupyterLab
renders late output routed by parent header only while the page that ran the cell is
open; after a reload those messages are dropped and never saved (32 of 40 lines lost in
the report). A widget's state lives in the kernel and the frontend rebuilds the model
from the live kernel after a reload, then keeps receiving its updates by comm id. With
jupyterlab-manager's ``saveState`` (which rayipy's Lab extension turns on unless the user
chose otherwise) the outputs are also saved in the notebook's widget state.

``Output.append_stdout`` sends the whole ``outputs`` tuple each time (O(n²) over a run,
and the frontend redraws every output), so text is gathered here and flushed at most
every ``FLUSH_SECONDS``, and consecutive text of one stream is merged into one output.
Rich output (a task's ``display()``: MIME bundles) is appended as ``display_data``.
"""

from __future__ import annotations

import threading
from typing import Any

FLUSH_SECONDS = 0.25
MAX_CHARS = 2_000_000     # a cell's kept text; beyond it the oldest text is dropped, said so


class CellOutputArea:
    """The Output widget a submitting cell shows, and the buffered appends to it."""

    def __init__(self, widget: Any) -> None:
        self.widget = widget
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []
        self._timer: threading.Timer | None = None
        self.flushes = 0

    @classmethod
    def shown_here(cls) -> "CellOutputArea":
        """A new area, displayed in the cell that runs now (call on the cell's thread)."""
        import ipywidgets
        from IPython.display import display
        widget = ipywidgets.Output()
        widget.add_class("rayipy-task-output")
        display(widget)
        return cls(widget)

    def append_text(self, stream: str, text: str) -> None:
        """Lines of a task's stdout or stderr (any thread); shown within FLUSH_SECONDS."""
        self._add({"output_type": "stream", "name": stream, "text": text})

    def append_display(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        """A MIME bundle a task displayed."""
        self._add({"output_type": "display_data", "data": dict(data),
                   "metadata": dict(metadata or {})})

    def _add(self, output: dict[str, Any]) -> None:
        with self._lock:
            self._pending.append(output)
            if self._timer is None:
                self._timer = threading.Timer(FLUSH_SECONDS, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Send what is pending as one update of the widget."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._timer = None
            if not pending:
                return
            outputs = merge_outputs(list(self.widget.outputs), pending)
            try:
                self.widget.outputs = tuple(outputs)
                self.flushes += 1
            except Exception:
                pass   # the kernel is going away: nobody can see it any more


def merge_outputs(outputs: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``outputs`` followed by ``new``, consecutive text of one stream as one output, and
    no more than MAX_CHARS of text in all (the oldest dropped first). Pure."""
    for output in new:
        last = outputs[-1] if outputs else None
        if (output["output_type"] == "stream" and last is not None
                and last["output_type"] == "stream" and last["name"] == output["name"]):
            outputs[-1] = {**last, "text": last["text"] + output["text"]}
        else:
            outputs.append(output)
    return _bounded(outputs)


DROPPED_NOTE = "[earlier task output dropped: more than 2 MB]\n"


def _bounded(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest outputs whose text fits in MAX_CHARS (a stream cut at a line), after a
    line that says the rest was dropped. One pass from the end."""
    if sum(len(o.get("text", "")) for o in outputs) <= MAX_CHARS:
        return outputs
    budget = MAX_CHARS - len(DROPPED_NOTE)
    kept: list[dict[str, Any]] = []
    for output in reversed(outputs):
        size = len(output.get("text", ""))
        if size <= budget:
            kept.append(output)
            budget -= size
            continue
        if output["output_type"] == "stream" and budget > 0:
            tail = output["text"][-budget:]
            tail = tail[tail.find("\n") + 1:]
            if tail:
                kept.append({**output, "text": tail})
        break
    kept.reverse()
    if kept and kept[0]["output_type"] == "stream" and kept[0]["name"] == "stdout":
        kept[0] = {**kept[0], "text": DROPPED_NOTE + kept[0]["text"]}
        return kept
    return [{"output_type": "stream", "name": "stdout", "text": DROPPED_NOTE}] + kept
