"""Task output into the cell that submitted the task, live, even after that cell finished.

When a task is submitted (``Runtime.on_submit``, on the submitting thread) we note the
cell running now: its ``execute_request`` (the kernel's parent header). Workers stream
the task's lines tagged with its task id; the runtime hands them to ``on_log`` on its
I/O thread, and we write them under that cell's parent:

- ipykernel >= 7.4: the kernel's stdout/stderr stream is pinned to the cell for this
  thread only (``set_thread_parent``), written, and reset. The stream buffers text per
  parent and sends it in a few messages (every 0.2 s), which keeps us far below the
  server's iopub rate limits however fast tasks print.
- older ipykernel: an explicit ``stream`` message with that parent, batched here for
  0.1 s per cell and stream, for the same reason.
- no kernel (terminal IPython): plain writes to stdout/stderr.

JupyterLab keeps each cell's request alive after it finished, so these messages render
under it and are saved with the notebook; but after a page reload or a re-run of that
cell they are dropped (shared/recipes/late-output.md). So in a kernel with ipywidgets,
by default (``%config RayipyMagics.output_widget``), a cell's first task shows an
``Output`` widget in the cell (``cell_output.CellOutputArea``) and its tasks' output goes
there: the widget's state lives in the kernel and comes back after a reload.

A task's ``display()`` (a line on the ``"display"`` stream with a MIME bundle,
``rayipy.node.task_display``) takes the same route: into the cell's widget with
``append_display``, or a ``display_data`` message with the cell's parent.

Lines are labelled ``(task pid=123)`` like Ray's when they could come from more than one
place: the cell submitted more than one task, or more than one worker wrote for it.

Memory stays bounded: a task's entry is dropped ``GRACE_SECONDS`` after its result came
(output may trail the result, which can travel a shorter path), cells in an LRU.
"""

from __future__ import annotations

import collections
import functools
import logging
import sys
import threading
import time
from typing import Any, Callable

from rayipy.core.object_ref import ObjectRef
from rayipy.core.objects import READY
from rayipy.node.task_output import DISPLAY_STREAM, decode_bundle
from rayipy.protocol.errors import error_class_name

log = logging.getLogger("rayipy.jupyter.output")

GRACE_SECONDS = 10.0        # keep routing a finished task's late lines this long
MAX_CELLS = 1000            # cells remembered (for labels); older ones are forgotten
SEND_BATCH_SECONDS = 0.1    # explicit stream messages (old ipykernel) are batched this long


class _Cell:
    __slots__ = ("parent", "tasks", "labels", "area")

    def __init__(self, parent: dict | None) -> None:
        self.parent = parent          # the cell's execute_request, or None outside a kernel
        self.tasks = 0
        self.labels: set[str] = set()
        self.area: Any = None         # its CellOutputArea, when output goes to a widget


class OutputRouter:
    """``on_submit`` and ``on_log`` of a notebook's runtime, and its task counts."""

    def __init__(self, shell: Any, route: bool = True, widget: bool = False,
                 make_area: Callable[[], Any] | None = None) -> None:
        self.shell = shell
        self.route = route
        self.kernel = getattr(shell, "kernel", None)
        # Output into a widget per cell (in a kernel only): ``make_area`` shows one in the
        # cell running now (``CellOutputArea.shown_here`` unless a test gives another).
        self.widget = widget
        self.make_area = make_area
        self._streams = {"stdout": sys.stdout, "stderr": sys.stderr}
        self._lock = threading.Lock()
        self._tasks: dict[bytes, _Cell] = {}
        self._finished: collections.deque[tuple[float, bytes]] = collections.deque()
        self._cells: collections.OrderedDict[Any, _Cell] = collections.OrderedDict()
        self.counts = collections.Counter()   # this notebook's tasks: submitted, done...
        self._batch: dict[tuple, list[str]] = {}
        self._batch_parents: dict[tuple, dict] = {}
        self._batch_timer: threading.Timer | None = None
        self._last: _Cell | None = None          # the cell of the last submitted task

    # -- the submitting thread ------------------------------------------------------------
    def on_submit(self, task_id: bytes, refs: list[ObjectRef]) -> None:
        """Called for every task: kept cheap (a cell submits thousands in a loop)."""
        parent = self._parent()
        with self._lock:
            last = self._last
            if last is not None and last.parent is parent and parent is not None:
                cell = last  # the same cell as the task before: the common case
            else:
                cell = self._last = self._cell(parent)
            cell.tasks += 1
            self._tasks[task_id] = cell
            self.counts["submitted"] += 1
            needs_area = (self.widget and self.route and cell.area is None
                          and self.kernel is not None and parent is not None)
        if needs_area:
            self._show_area(cell)
        ref = refs[0]  # our own new task: its ref is pending and owned here
        if not ref._runtime.objects.add_callback(ref.id, functools.partial(self._task_done, ref)):
            self._task_done(ref)

    def _show_area(self, cell: _Cell) -> None:
        """The cell's output widget, shown now, while the cell runs (its first task)."""
        try:
            make = self.make_area
            if make is None:
                from rayipy.jupyter.cell_output import CellOutputArea
                make = CellOutputArea.shown_here
            area = make()
        except Exception:   # no ipywidgets, or no display: the stream route stays
            log.debug("no output widget for this cell", exc_info=True)
            return
        with self._lock:
            if cell.area is None:
                cell.area = area

    def _cell(self, parent: dict | None) -> _Cell:
        key = _cell_key(parent, self.shell)
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = _Cell(parent)
            while len(self._cells) > MAX_CELLS:
                self._cells.popitem(last=False)
        else:
            self._cells.move_to_end(key)
        return cell

    def _parent(self) -> dict | None:
        if self.kernel is None:
            return None
        get_parent = getattr(self.shell, "get_parent", None)
        parent = get_parent() if get_parent is not None else getattr(self.shell, "parent_header", None)
        return parent or None

    # -- the I/O thread -----------------------------------------------------------------------
    def _task_done(self, ref: ObjectRef) -> None:
        state, payload = ref._runtime.objects.value(ref.id)
        if state == READY:
            outcome = "done"
        elif payload is not None and error_class_name(payload) == "TaskCancelledError":
            outcome = "cancelled"
        else:
            outcome = "failed"
        now = time.monotonic()
        with self._lock:
            self.counts[outcome] += 1
            self._finished.append((now, ref.id[:16]))
            self._forget(now)

    def _forget(self, now: float) -> None:
        """Drop tasks finished more than GRACE_SECONDS ago (lock held)."""
        finished = self._finished
        while finished and now - finished[0][0] > GRACE_SECONDS:
            self._tasks.pop(finished.popleft()[1], None)

    def flush_areas(self) -> None:
        """Send what waits in every cell's output widget (at the end of each cell)."""
        with self._lock:
            areas = [cell.area for cell in self._cells.values() if cell.area is not None]
        for area in areas:
            area.flush()

    def tracked_tasks(self) -> int:
        return len(self._tasks)

    def on_log(self, lines: list, label: str) -> None:
        with self._lock:
            self._forget(time.monotonic())
            # (target, stream, text) or, for a display, (target, DISPLAY_STREAM, (bundle, text))
            routed: list[tuple[Any, str, Any]] = []
            for stream, text, task, task_id, *extra in lines:
                cell = self._tasks.get(task_id)
                if stream == DISPLAY_STREAM:
                    bundle = _bundle(extra)
                    if bundle is None:
                        stream = "stdout"   # not a bundle after all: its text will do
                    else:
                        target = (cell.area if cell.area is not None else cell.parent) \
                            if cell is not None and self.route else None
                        routed.append((target, DISPLAY_STREAM, (bundle, text)))
                        continue
                if cell is None:
                    routed.append((None, stream, _labelled(text, task, label)))
                    continue
                cell.labels.add(label)
                many = cell.tasks > 1 or len(cell.labels) > 1
                shown = _labelled(text, task, label) if many else text
                if self.route and cell.area is not None:
                    routed.append((cell.area, stream, shown))
                else:
                    routed.append((cell.parent if self.route else None, stream, shown))
        for target, stream, text in routed:
            if stream == DISPLAY_STREAM:
                self._display(target, *text)
            elif isinstance(target, dict) or target is None:
                self._write(target, stream, text)
            else:
                target.append_text("stderr" if stream == "stderr" else "stdout", text)

    def _display(self, target: Any, bundle: tuple[dict[str, Any], dict[str, Any]],
                 fallback: str) -> None:
        """A task's MIME bundle: into the cell's widget, or a ``display_data`` message
        with the cell's parent; outside a kernel, its text."""
        data, metadata = bundle
        if target is not None and not isinstance(target, dict):
            target.append_display(data, metadata)
            return
        kernel = self.kernel
        if target is None or kernel is None:
            self._write(None, "stdout", fallback)
            return
        try:
            self._streams["stdout"].flush()   # what the task printed before comes first
            kernel.session.send(kernel.iopub_socket, "display_data",
                                {"data": data, "metadata": metadata, "transient": {}},
                                parent=target, ident=b"display_data")
        except Exception:
            pass  # a kernel going away must not break the I/O thread

    def _write(self, parent: dict | None, stream: str, text: str) -> None:
        name = "stderr" if stream == "stderr" else "stdout"
        out = getattr(sys, name)
        pin = getattr(out, "set_thread_parent", None)
        if pin is None and self.kernel is not None:
            kernel_stream = self._streams[name]
            pin = getattr(kernel_stream, "set_thread_parent", None)
            if pin is not None:
                out = kernel_stream
        try:
            if parent is None:
                out.write(text)
            elif pin is not None:
                token = pin(parent)
                try:
                    out.write(text)
                finally:
                    out.reset_thread_parent(token)
            elif self.kernel is not None:
                self._send_later(parent, name, text)
            else:
                out.write(text)
        except Exception:
            pass  # a closed or replaced stream must not break the I/O thread

    # -- old ipykernel: explicit, batched stream messages ----------------------------------------
    def _send_later(self, parent: dict, name: str, text: str) -> None:
        key = (parent.get("header", {}).get("msg_id"), name)
        with self._lock:
            self._batch.setdefault(key, []).append(text)
            self._batch_parents[key] = parent
            if self._batch_timer is None:
                self._batch_timer = threading.Timer(SEND_BATCH_SECONDS, self.flush)
                self._batch_timer.daemon = True
                self._batch_timer.start()

    def flush(self) -> None:
        with self._lock:
            batch, self._batch = self._batch, {}
            parents, self._batch_parents = self._batch_parents, {}
            self._batch_timer = None
        kernel = self.kernel
        for key, parts in batch.items():
            name = key[1]
            kernel.session.send(kernel.iopub_socket, "stream", {"name": name, "text": "".join(parts)},
                                parent=parents[key], ident=f"stream.{name}".encode())


def _cell_key(parent: dict | None, shell: Any) -> Any:
    if parent:
        msg_id = (parent.get("header") or {}).get("msg_id")
        if msg_id:
            return msg_id
    return ("execution", getattr(shell, "execution_count", 0))


def _bundle(extra: list[Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(data, metadata) of a display line's bundle JSON, or None if it has none."""
    try:
        return decode_bundle(extra[0])
    except (IndexError, TypeError, ValueError):
        return None


def _labelled(text: str, task: str, label: str) -> str:
    prefix = f"({task} {label}) "
    body = "".join(prefix + line for line in text.splitlines(keepends=True))
    return body if body.endswith("\n") else body + "\n"
