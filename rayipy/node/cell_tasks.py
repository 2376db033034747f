"""What a worker runs for ``%%remote --run``, ``%remote`` and ``%%remote --all``.

These functions travel by reference (workers import this module), so this module and
the package's ``__init__`` import nothing from IPython: a worker never pays for it.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import linecache
import os
import pickle
import traceback
from typing import Any


def _remember_source(source: str, filename: str) -> None:
    # Remote tracebacks then show the cell's lines, as they would in the notebook.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


def run_cell(source: str, filename: str, namespace: dict[str, Any]) -> Any:
    """Run a notebook cell's code here; return its last expression's value (or None).

    ``namespace`` holds the notebook globals the cell reads, captured when it was sent.
    """
    __tracebackhide__ = True  # the worker shows the cell's frames only
    _remember_source(source, filename)
    tree = ast.parse(source, filename)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    scope = {"__name__": "__main__", "__builtins__": builtins, **namespace}
    exec(compile(tree, filename, "exec"), scope)
    if last is None:
        return None
    return eval(compile(last, filename, "eval"), scope)


# The setup cells this process has run, by id, with their reports: a worker that started
# while a cell was being sent out gets it both ways, from the head at start and as a task;
# it runs once, and the task answers with what the first run printed.
_setup_done: dict[str, dict[str, Any]] = {}
MAX_SETUP_REPORTS = 256    # kept (the oldest forgotten): the race they serve lasts moments

ALREADY_RAN = "(this worker ran the cell when it started)\n"


def run_setup(source: str, filename: str, namespace: dict[str, Any],
              setup_id: str = "") -> dict[str, Any]:
    """Run a cell on this worker, capturing what it prints (shown grouped per worker).

    Errors are returned, not raised, so the output printed before them is kept; the
    driver raises the first one after showing every worker's part. A cell with a
    ``setup_id`` this process has run already is not run again: the first run's report.
    """
    if setup_id:
        done = _setup_done.get(setup_id)
        if done is not None:
            return {**done, "stdout": done["stdout"] + ALREADY_RAN}
        report = _setup_done[setup_id] = _run_setup(source, filename, namespace)
        while len(_setup_done) > MAX_SETUP_REPORTS:
            del _setup_done[next(iter(_setup_done))]
        return report
    return _run_setup(source, filename, namespace)


def _run_setup(source: str, filename: str, namespace: dict[str, Any]) -> dict[str, Any]:
    report: dict[str, Any] = {"pid": os.getpid(), "value": None, "error": None}
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            value = run_cell(source, filename, namespace)
        report["value"] = None if value is None else _safe_repr(value)
    except Exception as e:  # KeyboardInterrupt (a cancel) still ends the task
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != filename:
            tb = tb.tb_next  # from the cell's first frame on: our own frames are noise
        text = "".join(traceback.format_exception(type(e), e, tb or e.__traceback__))
        try:
            pickled = pickle.dumps(e)
        except Exception:
            pickled = None
        report["error"] = (type(e).__qualname__, str(e), text, pickled)
    report["stdout"] = out.getvalue()
    report["stderr"] = err.getvalue()
    return report


def replay_setup_cells(cells: list[tuple[bytes, str, bytes]]) -> list[dict[str, Any]]:
    """At a worker's start: run the recorded setup cells (the head's ``setup_cells``
    answer: (driver, setup id, pickle of (source, filename, namespace))), in order; the
    reports, with ``error`` set for a cell that failed or could not be unpickled."""
    reports = []
    for _driver, setup_id, blob in cells:
        try:
            source, filename, namespace = pickle.loads(blob)
        except Exception as e:
            reports.append({"pid": os.getpid(), "value": None, "stdout": "", "stderr": "",
                            "error": (type(e).__qualname__, f"setup cell {setup_id}: {e}",
                                      traceback.format_exc(), None)})
            continue
        reports.append(run_setup(source, filename, namespace, setup_id))
    return reports


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as e:
        return f"<repr failed: {type(e).__name__}: {e}>"
