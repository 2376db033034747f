"""Loading and unloading the extension: magics, runtime hooks, HTML formatters.

``%load_ext rayipy`` makes one ``NotebookSession`` for the shell. It attaches its hooks to
every driver runtime of this process (``rayipy.session.runtime_hooks``): the current one if
``rayipy.init`` ran already, and each one ``init`` makes later (``%cluster start`` or a
plain ``rayipy.init()`` in a cell):

- ``on_submit`` / ``on_log``: the output router (task output into the submitting cell);
- ``on_slow_wait``: a progress bar for a ``get`` that blocks past the threshold;
- ``interrupt_grace``: how long cancelled tasks get before they are killed.

It also notes each cell's number as it starts (IPython's ``pre_run_cell``; see
``remote.cell_number``), and shows task errors and interrupted waits its own way
(IPython's custom exception handler, ``tracebacks``).

``%unload_ext rayipy`` takes all of it back and leaves the cluster running.
"""

from __future__ import annotations

from typing import Any, Callable

from rayipy import session
from rayipy.core.object_ref import ObjectRef, current_runtime
from rayipy.jupyter import cluster, remote, reprs, tracebacks
from rayipy.jupyter.magics import RayipyMagics
from rayipy.jupyter.output import OutputRouter
from rayipy.jupyter.progress import slow_get_hook
from rayipy.node.client import Runtime
from rayipy.node.task_logs import TaskLogPrinter

_sessions: dict[int, "NotebookSession"] = {}


class NotebookSession:
    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.magics = RayipyMagics(shell, on_change=self.reattach)
        self.router = OutputRouter(shell, route=self.magics.route_output,
                                   widget=self.magics.output_widget)
        self.magics.local_counts = lambda: dict(self.router.counts)
        self._slow_get = slow_get_hook(self.magics)
        self._formatters: list[type] = []
        self._note_cell: Callable[[Any], None] | None = None

    def load(self) -> None:
        self.shell.register_magics(self.magics)
        html = self.shell.display_formatter.formatters["text/html"]
        html.for_type(ObjectRef, reprs.object_ref_html)
        html.for_type(session.ClusterContext, cluster.context_html)
        self._formatters = [ObjectRef, session.ClusterContext]
        self._note_cell = self._cell_starts
        self.shell.events.register("pre_run_cell", self._note_cell)
        self.shell.events.register("post_run_cell", self._cell_ends)
        if not self.shell.custom_exceptions:   # a handler of the user's own stays
            self.shell.set_custom_exc(tracebacks.HANDLED, tracebacks.show_exception)
        session.runtime_hooks.append(self.attach)
        self.reattach()

    def _cell_starts(self, info: Any) -> None:
        """IPython's ``pre_run_cell``: note the cell's number, and forget an interrupt
        count a cell before left unread (its KeyboardInterrupt was caught)."""
        remote.note_cell(self.shell, info)
        tracebacks.forget_interrupt()

    def _cell_ends(self, result: Any) -> None:
        """IPython's ``post_run_cell``: output that reached the cells' output widgets is
        sent now, while the cell still runs, not at the next timer tick after it (a
        frontend that records only the running cell's messages, nbclient, sees it)."""
        self.router.flush_areas()

    def reattach(self) -> None:
        """Apply the current settings to the runtime of this process, if any."""
        self.router.route = self.magics.route_output
        self.router.widget = self.magics.output_widget
        runtime = current_runtime()
        if isinstance(runtime, Runtime) and runtime.role == "driver":
            self.attach(runtime)

    def attach(self, runtime: Runtime) -> None:
        runtime.on_submit = self.router.on_submit
        runtime.task_logs.printer = self.router.on_log
        runtime.on_slow_wait = self._slow_get if self.magics.auto_progress else None
        runtime.slow_wait_seconds = self.magics.progress_threshold
        runtime.interrupt_grace = self.magics.interrupt_grace

    def unload(self) -> None:
        if self.attach in session.runtime_hooks:
            session.runtime_hooks.remove(self.attach)
        if self._note_cell is not None:
            self.shell.events.unregister("pre_run_cell", self._note_cell)
            self.shell.events.unregister("post_run_cell", self._cell_ends)
            self._note_cell = None
            remote.forget_shell(self.shell)
        if self.shell.custom_exceptions == tracebacks.HANDLED:
            self.shell.set_custom_exc((), None)
        runtime = current_runtime()
        if isinstance(runtime, Runtime) and runtime.on_submit == self.router.on_submit:
            runtime.on_submit = None
            runtime.task_logs.printer = TaskLogPrinter()
            runtime.on_slow_wait = None
        html = self.shell.display_formatter.formatters["text/html"]
        for cls in self._formatters:
            html.pop(cls, None)
        manager = self.shell.magics_manager
        for kind, names in RayipyMagics.magics.items():
            for name in names:
                manager.magics[kind].pop(name, None)
        manager.registry.pop(type(self.magics).__name__, None)
        if self.magics in self.shell.configurables:
            self.shell.configurables.remove(self.magics)


def load(shell: Any) -> None:
    if id(shell) in _sessions:
        return
    notebook = _sessions[id(shell)] = NotebookSession(shell)
    notebook.load()


def unload(shell: Any) -> None:
    notebook = _sessions.pop(id(shell), None)
    if notebook is not None:
        notebook.unload()


def session_of(shell: Any) -> NotebookSession | None:
    return _sessions.get(id(shell))
