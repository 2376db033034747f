"""The notebook progress display: an ipywidgets bar that moves while the kernel is idle.

``rayipy.progress(refs)`` (``rayipy.progress_bars``) creates a ``NotebookBar`` in the
cell that called it (the factory is registered by ``rayipy.jupyter.displays``); from
then on the progress thread redraws it at most ten times a second. A redraw is one comm message per widget (``hold_sync``). Widget messages are
routed by the frontend by comm id, so they reach the bar whichever cell runs meanwhile;
they keep the kernel's default parent (the cell running now), which is also what lets
nbclient record them when a later cell waits.

``ProgressWidget`` is a plain ``HBox`` (a bar and a label) that renders in any frontend
with ipywidgets; the counts are also synced traits of the box, so tools (and tests) can
read them from the widget state saved in the notebook.
"""

from __future__ import annotations

import html
import threading
import time
from typing import Any, Callable

import ipywidgets
from IPython import get_ipython
from IPython.display import display
from traitlets import Bool, Float, Int, Unicode

from rayipy import progress_bars
from rayipy.core.object_ref import ObjectRef
from rayipy.core import progress as core
from rayipy.core.progress import ProgressCounts, describe

# Each outcome its own colour (``core.outcome_style``): ipywidgets' bar styles where one
# fits, else an explicit colour (cancelled: blue grey, never failed's red).
CANCELLED_COLOUR = "#607d8b"
_BAR = {core.RUNNING: ("info", None), core.RUNNING_WITH_FAILURES: ("warning", None),
        core.RUNNING_WITH_CANCELS: ("info", CANCELLED_COLOUR), core.ALL_DONE: ("success", None),
        core.SOME_FAILED: ("danger", None), core.SOME_CANCELLED: ("", CANCELLED_COLOUR),
        core.ABANDONED: ("", "#9e9e9e")}
_TEXT = {core.RUNNING_WITH_FAILURES: "var(--jp-error-color1, #d32f2f)",
         core.SOME_FAILED: "var(--jp-error-color1, #d32f2f)",
         core.RUNNING_WITH_CANCELS: CANCELLED_COLOUR, core.SOME_CANCELLED: CANCELLED_COLOUR,
         core.ABANDONED: "#757575"}


class ProgressWidget(ipywidgets.HBox):
    """[bar | 'done 37/100, 2 failed, 4 running, 12.3 s, about 20 s left']."""

    total = Int(0).tag(sync=True)
    done = Int(0).tag(sync=True)
    failed = Int(0).tag(sync=True)
    cancelled = Int(0).tag(sync=True)
    running = Int(0).tag(sync=True)
    elapsed = Float(0.0).tag(sync=True)
    eta = Float(None, allow_none=True).tag(sync=True)
    complete = Bool(False).tag(sync=True)
    summary = Unicode("").tag(sync=True)
    outcome = Unicode(core.RUNNING).tag(sync=True)   # core.outcome_style: what the colours mean

    def __init__(self, total: int, description: str = "", **kwargs: Any) -> None:
        self.bar = ipywidgets.IntProgress(value=0, min=0, max=max(total, 1),
                                          description=description, bar_style="info",
                                          layout=ipywidgets.Layout(width="40%", min_width="200px"))
        self.label = ipywidgets.HTML(value="")
        super().__init__(children=[self.bar, self.label], total=total, **kwargs)
        self.add_class("rayipy-progress")

    def __repr__(self) -> str:
        # The text a frontend without widgets shows (and nbconvert's text output).
        return f"rayipy progress: {self.summary or f'0/{self.total} done'}"

    def show(self, counts: ProgressCounts) -> None:
        """Draw ``counts``: one message per widget, whatever changed."""
        text = describe(counts)
        outcome = core.outcome_style(counts)
        style, colour = _BAR[outcome]
        with self.hold_sync():
            self.done = counts.done
            self.failed = counts.failed
            self.cancelled = counts.cancelled
            self.running = counts.running
            self.elapsed = round(counts.elapsed, 2)
            self.eta = None if counts.eta is None else round(counts.eta, 1)
            self.complete = counts.complete
            self.summary = text
            self.outcome = outcome
        with self.bar.hold_sync():
            self.bar.value = counts.finished if counts.total else 1
            self.bar.bar_style = style
        self.bar.style.bar_color = colour
        self.label.value = _label_html(outcome, text)


def _label_html(outcome: str, text: str) -> str:
    colour = _TEXT.get(outcome, "inherit")
    return (f'<span class="rayipy-progress-text" style="margin-left: 0.5em; color: {colour}; '
            f'font-variant-numeric: tabular-nums">{html.escape(text)}</span>')


def _current_cell() -> str | None:
    shell = get_ipython()
    parent = getattr(shell, "parent_header", None) or {}
    return (parent.get("header") or {}).get("msg_id")


class NotebookBar:
    """A progress display shown in the cell that made it."""

    def __init__(self, total: int, description: str) -> None:
        self.widget = ProgressWidget(total, description)
        self._shown_in = _current_cell()
        # With a display id, so that the display's text (what a saved notebook shows
        # where the widget's model is gone) can be brought up to date when it ends.
        self._handle = display(self.widget, display_id=True)

    def draw(self, counts: ProgressCounts) -> None:
        self.widget.show(counts)

    def close(self) -> None:
        """The final state is drawn: update the display, so that its text/plain fallback
        (saved with the notebook) says the final counts, not the first ("0/40 done")."""
        if self._handle is not None:
            self._handle.update(self.widget)

    def ipython_display(self) -> None:
        # The bar is already under the cell that made it; shown from another cell, it
        # is a second view of the same live widget (its text updated with the first).
        if _current_cell() != self._shown_in:
            display(self.widget, display_id=getattr(self._handle, "display_id", True))


FINAL_DRAW_SECONDS = 0.5


def slow_get_hook(settings: Any) -> Callable[[list[ObjectRef]], Callable[[], None] | None]:
    """The runtime's ``on_slow_wait``: a ``get`` of many refs blocked past the threshold
    shows a bar (``settings``: the magics' ``auto_progress``, ``progress_threshold`` and
    ``auto_progress_min_refs``). Its clock starts when the get did."""
    def on_slow_wait(refs: list[ObjectRef]) -> Callable[[], None] | None:
        if not settings.auto_progress or len(set(refs)) < settings.auto_progress_min_refs:
            return None
        if threading.current_thread() is not threading.main_thread():
            return None  # only a cell's own get: another thread has no cell to show it in
        started = time.monotonic() - settings.progress_threshold
        bar = progress_bars.progress(refs, description="get", _started=started)

        def get_returned() -> None:
            # Show the final state before the cell goes on (the results may still be
            # on their way to the bar's callbacks: a short wait).
            if all(r.done() for r in refs):
                bar.wait(FINAL_DRAW_SECONDS)
        return get_returned
    return on_slow_wait
