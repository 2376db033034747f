"""How a notebook shows a task's error and an interrupted wait.

Two cases IPython would otherwise show badly, handled by one IPython custom exception
handler (``show_exception``, registered by the extension):

- A ``TaskError``: its remote traceback (``_render_traceback_``) names the file a
  ``%%remote`` cell's functions were compiled in, which under ipykernel is a temporary
  file (``/tmp/ipykernel_123/456.py``). IPython shows its own frames of that file as
  ``Cell In[3], line 6``; ``cell_names`` writes the remote frames the same way, from the
  shell's own map of those files to cell numbers (``shell.compile._filename_map``).
- A ``KeyboardInterrupt`` that stopped a ``get`` or ``wait``: rayipy cancelled the tasks
  the cell waited on (``Runtime.cancel_waited``), and the forty lines of traceback through
  rayipy's internals say nothing the user needs. One line says what happened instead,
  ``interrupted: 20 tasks cancelled``. An interrupt anywhere else keeps IPython's own
  traceback.

The text functions are pure; ``show_exception`` is the thin part that talks to IPython.
"""

from __future__ import annotations

import os
import re
from types import TracebackType
from typing import Any, Mapping

import rayipy
from rayipy.core.object_ref import current_runtime
from rayipy.exceptions import TaskError

# A frame line of Python's traceback module: '  File "/tmp/x.py", line 6, in f'.
_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')
_RAYIPY_DIR = os.path.dirname(os.path.abspath(rayipy.__file__)) + os.sep
HANDLED = (TaskError, KeyboardInterrupt)


def cell_names(text: str, filename_map: Mapping[str, int]) -> str:
    """``text`` with each frame of a notebook cell's file written as IPython writes it,
    ``Cell In[3], line 6``; frames of other files are left as they are."""
    def rename(match: re.Match[str]) -> str:
        number = filename_map.get(match["file"])
        if number is None:
            return match[0]
        return f"Cell In[{number}], line {match['line']}"
    return _FRAME.sub(rename, text)


def interrupt_line(cancelled: int) -> str:
    """The one line an interrupted wait shows."""
    tasks = "task" if cancelled == 1 else "tasks"
    return f"\x1b[31mKeyboardInterrupt\x1b[0m: interrupted: {cancelled} {tasks} cancelled"


def passes_through_rayipy(tb: TracebackType | None) -> bool:
    """Whether the exception came out of rayipy's own code (a get or wait)."""
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith(_RAYIPY_DIR):
            return True
        tb = tb.tb_next
    return False


def forget_interrupt() -> None:
    """A new cell starts: an interrupt count no handler read is stale."""
    runtime = current_runtime()
    if runtime is not None and getattr(runtime, "cancelled_on_interrupt", None) is not None:
        runtime.cancelled_on_interrupt = None


def _taken_cancel_count() -> int | None:
    runtime = current_runtime()
    count = getattr(runtime, "cancelled_on_interrupt", None)
    if runtime is not None and count is not None:
        runtime.cancelled_on_interrupt = None
    return count


def show_exception(shell: Any, etype: type, value: BaseException, tb: TracebackType | None,
                   tb_offset: int | None = None) -> list[str]:
    """IPython's custom exception handler for ``HANDLED``: show it, return what was shown."""
    if isinstance(value, TaskError):
        filename_map = getattr(shell.compile, "_filename_map", {})
        stb = [cell_names(line, filename_map) for line in value._render_traceback_()]
        shell._showtraceback(etype, value, stb)
        return stb
    cancelled = _taken_cancel_count()
    if cancelled is None or not passes_through_rayipy(tb):
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return []
    stb = [interrupt_line(cancelled)]
    shell._showtraceback(etype, value, stb)
    return stb
