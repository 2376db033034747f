"""``%%remote`` and ``%remote``: cells whose code runs on the cluster.

Three ways (the magic parses the options and calls one of these):

- ``define``: the cell runs here; each function and class it defines at top level
  becomes a remote function / actor class under the same name (names starting with
  ``_`` stay plain, for helpers), and is pickled and sent to the head at once, so a
  function that cannot travel fails in this cell, not at its first call.
- ``run``: the cell's code runs as one task on a worker, with the notebook globals it
  reads captured now; its output streams into this cell (the output router), and the
  value of its last expression comes back.
- ``run_everywhere``: the cell runs once on every pool worker (imports, setup); each
  worker's output is shown as one block, as the workers finish.
"""

from __future__ import annotations

import ast
import builtins
import linecache
import sys
import time
import uuid
from typing import Any

from IPython.core.error import UsageError

from rayipy import api, exceptions, session
from rayipy.actor import ActorClass
from rayipy.core import options as option_table
from rayipy.core.object_ref import ObjectRef
from rayipy.node import cell_tasks
from rayipy.protocol import errors, serialization
from rayipy.remote_function import RemoteFunction

# Names IPython puts in the user namespace: never captured for a remote cell.
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "_", "__", "___", "_i", "_ii", "_iii",
                  "_ih", "_oh", "_dh"}
ALL_POLL_SECONDS = 0.5      # --all: how often to look for workers that died meanwhile
WORKERS_START_SECONDS = 10.0  # --all: how long to wait for workers still starting

_run_cell = RemoteFunction(cell_tasks.run_cell, {})
_run_setup = RemoteFunction(cell_tasks.run_setup, {})


# id(shell) -> the number of the cell running now, noted as it starts (``note_cell``).
_running_cell: dict[int, int] = {}


def number_of_running_cell(execution_count: int, store_history: bool) -> int:
    """The ``In[N]`` of a cell that is running, from what ``shell.execution_count`` says
    during it: IPython adds one before the cell runs when it keeps the cell in history
    (a notebook's cells), so the cell's own number is one less; otherwise it is the
    count itself (IPython's own ``compile.cache`` of the cell uses the same number)."""
    return execution_count - 1 if store_history else execution_count


def note_cell(shell: Any, info: Any) -> None:
    """IPython's ``pre_run_cell`` event (registered by the extension): note the number of
    the cell that starts."""
    _running_cell[id(shell)] = number_of_running_cell(
        getattr(shell, "execution_count", 1), bool(getattr(info, "store_history", True)))


def forget_shell(shell: Any) -> None:
    _running_cell.pop(id(shell), None)


def cell_number(shell: Any) -> int:
    """The ``In[N]`` of the cell running now (as noted when it started; without the
    extension's hook, the count as a notebook cell would have it)."""
    number = _running_cell.get(id(shell))
    if number is not None:
        return number
    return number_of_running_cell(getattr(shell, "execution_count", 1), True)


# -- define: functions and classes become remote ---------------------------------------------
def define(shell: Any, cell: str, options: dict[str, Any]) -> list[str]:
    """Run the cell here; make its top-level functions and classes remote. Returns their names."""
    __tracebackhide__ = True
    code = shell.transform_cell(cell)
    filename = _cache_source(shell, code, cell)
    tree = ast.parse(code, filename)
    names = [node.name for node in tree.body
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
             and not node.name.startswith("_")]
    try:
        exec(compile(tree, filename, "exec"), shell.user_ns)
    except Exception as e:
        raise e.with_traceback(_from_file(e.__traceback__, filename)) from None
    made: dict[str, Any] = {}
    for name in names:
        value = shell.user_ns.get(name)
        if isinstance(value, (RemoteFunction, ActorClass)) or not callable(value):
            continue  # already remote (@rayipy.remote in the cell), or rebound to data
        if isinstance(value, type):
            # --max-retries is for the cell's functions: an actor class refuses task-only
            # options (its own restarts are max_restarts).
            made[name] = api.remote(**{k: v for k, v in options.items()
                                       if k not in option_table.TASK_ONLY_OPTIONS})(value)
        else:
            made[name] = api.remote(**options)(value)
    # Every name first, then pickling: a function that calls another of the cell's
    # functions then always sees the remote one, whatever the order.
    shell.user_ns.update(made)
    runtime = session.require_runtime() if session.is_initialized() else None
    for remote in made.values():
        function_id, pickled = remote._shared.get()
        if runtime is not None:
            runtime.ensure_function(function_id, pickled)
    return list(made)


def _cache_source(shell: Any, code: str, raw: str) -> str:
    """A file name for the cell whose lines linecache knows (tracebacks, pickled source)."""
    try:
        return shell.compile.cache(code, cell_number(shell), raw_code=raw)
    except Exception:
        filename = f"<remote cell {cell_number(shell)}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        return filename


def _from_file(tb: Any, filename: str) -> Any:
    """The traceback from the first frame of ``filename`` on (our frames are noise)."""
    first = tb
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            return tb
        tb = tb.tb_next
    return first


# -- run: the cell as one task ----------------------------------------------------------------
def parse_plain(cell: str, filename: str, what: str) -> ast.Module:
    try:
        return ast.parse(cell, filename)
    except SyntaxError as e:
        raise UsageError(f"{what} runs plain Python on a worker (IPython syntax such as %magics "
                         f"and !commands is not available there): line {e.lineno}: {e.msg}") from None


def captured_globals(shell: Any, tree: ast.AST) -> dict[str, Any]:
    """The notebook globals the code reads, to send with it."""
    read = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)
            and isinstance(node.ctx, ast.Load)}
    user_ns = shell.user_ns
    return {name: user_ns[name] for name in sorted(read)
            if name in user_ns and name not in _IPYTHON_NAMES and not _is_output_name(name)
            and not (hasattr(builtins, name) and user_ns[name] is getattr(builtins, name))}


def _is_output_name(name: str) -> bool:
    return name.startswith("_") and name.lstrip("_i").isdigit()


def _check_picklable(namespace: dict[str, Any], what: str) -> None:
    for name, value in namespace.items():
        e = serialization.pickling_error(value)
        if e is not None:
            raise UsageError(f"{what} reads the notebook variable {name!r} ({type(value).__name__}), "
                             f"which cannot be sent to a worker: {type(e).__name__}: {e}. Create it "
                             f"inside the cell instead.") from None


def _submit(function: RemoteFunction, args: tuple, name: str, options: dict[str, Any],
            worker: tuple[bytes, str] | None = None) -> ObjectRef:
    runtime = session.runtime_for_submit()
    function_id, pickled = function._shared.get()
    runtime.ensure_function(function_id, pickled)
    checked = option_table.validate(options)
    retries = checked.get("max_retries", option_table.TASK_OPTIONS["max_retries"].default)
    [ref] = runtime.submit(function_id, name, args, {}, 1, option_table.resource_request(checked),
                           2**31 if retries == -1 else retries, worker=worker)
    return ref


def run(shell: Any, cell: str, options: dict[str, Any], block: bool = True) -> Any:
    """Run the cell as one task; its last expression's value (or, with ``block=False``, the ref)."""
    __tracebackhide__ = True
    number = cell_number(shell)
    what = "%%remote --run" if "\n" in cell.strip() else "%remote"
    filename = f"<cell In[{number}] (remote)>"
    tree = parse_plain(cell, filename, what)
    namespace = captured_globals(shell, tree)
    try:
        ref = _submit(_run_cell, (cell, filename, namespace), f"In[{number}]", options)
    except exceptions.SerializationError:
        _check_picklable(namespace, what)
        raise
    if not block:
        return ref
    return api.get(ref)


# -- run_everywhere: the cell on every worker --------------------------------------------------
def run_everywhere(shell: Any, cell: str) -> list[dict]:
    """Run the cell on every pool worker; print each worker's output as one block.

    Actor workers are left out: they run only their actor's methods. The cell is also
    recorded at the head, and workers that start later (new pool workers, replacements,
    workers of nodes that join) run it before their first task, as long as this driver
    is connected; a cell that fails here is taken back.
    """
    __tracebackhide__ = True
    number = cell_number(shell)
    filename = f"<cell In[{number}] (every worker)>"
    tree = parse_plain(cell, filename, "%%remote --all")
    namespace = captured_globals(shell, tree)
    runtime = session.runtime_for_submit()
    # Recorded at the head first, then the workers listed: a worker that registers in
    # between gets the cell both ways and runs it once (its setup id).
    setup_id = uuid.uuid4().hex
    try:
        blob = serialization.dumps_inband((cell, filename, namespace))
    except Exception:
        _check_picklable(namespace, "%%remote --all")
        raise
    runtime.request("setup_cell_add", setup_id, blob)
    targets = _pool_workers(runtime)
    if not targets:
        runtime.request("setup_cell_drop", setup_id)
        raise UsageError("the cluster has no workers to run the cell on yet; try again in a moment")
    try:
        refs = {_submit(_run_setup, (cell, filename, namespace, setup_id), f"In[{number}]",
                        {"num_cpus": 0, "max_retries": 0},
                        worker=(w["worker_id"], w["address"])): w for w in targets}
    except exceptions.SerializationError:
        _check_picklable(namespace, "%%remote --all")
        raise
    reports: list[dict] = []
    first_error: BaseException | None = None
    pending = dict(refs)
    while pending:
        ready, _ = api.wait(list(pending), num_returns=1, timeout=ALL_POLL_SECONDS)
        for ref in ready:
            worker = pending.pop(ref)
            error = _show_worker(ref, worker, reports)
            first_error = first_error or error
        if not ready:
            alive = {w["worker_id"] for w in runtime.request("workers")}
            for ref, worker in list(pending.items()):
                if worker["worker_id"] not in alive:
                    del pending[ref]
                    print(f"--- worker pid {worker['pid']}: it exited before running the cell ---")
    if first_error is not None:
        # A cell that fails is not one to run on every worker that starts later.
        runtime.request("setup_cell_drop", setup_id)
        raise first_error
    return reports


def _pool_workers(runtime: Any, timeout: float = WORKERS_START_SECONDS) -> list[dict]:
    """The pool workers, once every node has started its own (one per CPU): right after
    %cluster start, or after an actor took a worker, some may still be starting."""
    deadline = time.monotonic() + timeout
    while True:
        workers = [w for w in runtime.request("workers") if not w["actor"] and w["address"]]
        expected = int(sum(node["Resources"].get("CPU", 0) for node in runtime.request("nodes")))
        if len(workers) >= expected or time.monotonic() > deadline:
            return workers
        time.sleep(0.05)


def _show_worker(ref: ObjectRef, worker: dict, reports: list[dict]) -> BaseException | None:
    where = ref._runtime.objects.info(ref.id).get("where", f"worker pid {worker['pid']}")
    try:
        report = api.get(ref)
    except exceptions.TaskCancelledError:
        print(f"--- {where}: cancelled ---")
        return None
    except Exception as e:  # the task itself could not run (crash): shown, raised later
        print(f"--- {where}: failed: {type(e).__name__}: {e} ---")
        return e
    reports.append(report)
    print(f"--- {where} ---")
    if report["stdout"]:
        sys.stdout.write(report["stdout"] if report["stdout"].endswith("\n") else report["stdout"] + "\n")
    if report["stderr"]:
        sys.stderr.write(report["stderr"])
        sys.stderr.flush()
    if report["value"] is not None:
        print(report["value"])
    if report["error"] is not None:
        class_name, text, tb, pickled = report["error"]
        print(f"failed: {class_name}: {text}")
        cause = errors.unpickled_or_none(pickled)
        if cause is None:
            cause = exceptions.RayipyError(f"{class_name}: {text}")
        return exceptions.as_task_error(cause, tb, ref._runtime.objects.info(ref.id).get("task", "cell"),
                                        where)
    return None
