"""The magics through a real IPython InteractiveShell: %cluster, %%remote, %remote, %config."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
from IPython.core.error import UsageError

import rayipy
from rayipy.actor import ActorClass
from rayipy.core.object_ref import current_runtime
from rayipy.remote_function import RemoteFunction


@pytest.fixture
def live(shell):
    """The module's shell with a 2-CPU cluster running (started by %cluster if needed)."""
    if not rayipy.is_initialized():
        shell.run_line_magic("cluster", "start -n 2")
    return shell


def run_cell(shell, source: str) -> tuple[bool, str]:
    """Run a cell as a notebook would; (success, what it printed, tracebacks included)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = shell.run_cell(source)
    return result.success, out.getvalue()


def test_cluster_without_a_cluster_explains_what_to_do(shell, capsys):
    assert not rayipy.is_initialized()
    shell.run_line_magic("cluster", "")
    assert "%cluster start [-n N]" in capsys.readouterr().out
    with pytest.raises(UsageError, match="no rayipy cluster is running: %cluster start"):
        shell.run_line_magic("cluster", "status")
    with pytest.raises(UsageError, match="unknown %cluster command 'begin'"):
        shell.run_line_magic("cluster", "begin")
    with pytest.raises(UsageError, match="usage: %cluster start"):
        shell.run_line_magic("cluster", "start -n two")
    with pytest.raises(UsageError, match=r"unrecognized arguments: now; usage: %cluster stop \[--force\]"):
        shell.run_line_magic("cluster", "stop now")
    with pytest.raises(UsageError, match="takes no arguments"):
        shell.run_line_magic("cluster", "dashboard now")


def test_cluster_start_shows_the_cluster_and_a_second_start_says_it_runs(shell, capsys):
    context = shell.run_line_magic("cluster", "start -n 2")
    assert rayipy.is_initialized() and context.started_locally
    assert rayipy.cluster_resources()["CPU"] == 2
    data, _ = shell.display_formatter.format(context)
    assert "rayipy local cluster" in data["text/html"] and "CPU 2" in data["text/html"]
    again = shell.run_line_magic("cluster", "start -n 4")
    assert again is context
    assert "already running" in capsys.readouterr().out
    assert rayipy.cluster_resources()["CPU"] == 2


@pytest.mark.usefixtures("live")
def test_remote_cell_makes_functions_and_classes_remote(shell):
    ok, printed = run_cell(shell, (
        "%%remote --num-cpus 0.5\n"
        "def square(x):\n"
        "    return x * x\n"
        "def _helper():\n"
        "    return 'stays plain'\n"
        "class Counter:\n"
        "    def __init__(self):\n"
        "        self.n = 0\n"
        "    def incr(self):\n"
        "        self.n += 1\n"
        "        return self.n\n"))
    assert ok, printed
    ns = shell.user_ns
    assert isinstance(ns["square"], RemoteFunction) and isinstance(ns["Counter"], ActorClass)
    assert ns["_helper"]() == "stays plain"
    assert ns["square"]._resources == (("CPU", 0.5),)
    assert rayipy.get([ns["square"].remote(i) for i in range(4)]) == [0, 1, 4, 9]
    counter = ns["Counter"].remote()
    rayipy.get([counter.incr.remote() for _ in range(3)])
    assert rayipy.get(counter.incr.remote()) == 4


@pytest.mark.usefixtures("live")
def test_a_function_that_cannot_travel_fails_in_its_own_cell(shell):
    shell.user_ns["lock_for_test"] = __import__("threading").Lock()
    ok, printed = run_cell(shell, "%%remote\ndef uses_lock():\n    return lock_for_test.locked()\n")
    assert not ok
    assert "could not serialize remote function" in printed


@pytest.mark.usefixtures("live")
def test_remote_run_runs_the_cell_on_a_worker_with_the_globals_it_reads(shell, capsys):
    shell.user_ns["base"] = 40
    value = shell.run_cell_magic("remote", "--run", "import os\nprint('on worker', os.getpid())\nbase + 2")
    assert value == 42
    import os
    printed = capsys.readouterr().out
    assert "on worker" in printed and f"on worker {os.getpid()}" not in printed
    assert shell.run_cell_magic("remote", "--run -o answer", "base * 2") is None
    assert shell.user_ns["answer"] == 80
    ref = shell.run_cell_magic("remote", "--run --no-block -o later", "base + 1")
    assert ref is None and rayipy.get(shell.user_ns["later"]) == 41
    assert isinstance(shell.run_cell_magic("remote", "--run --no-block", "1"), rayipy.ObjectRef)
    assert shell.run_line_magic("remote", "sum(range(base))") == sum(range(40))


@pytest.mark.usefixtures("live")
def test_remote_run_errors_are_readable(shell):
    with pytest.raises(UsageError, match="plain Python on a worker"):
        shell.run_cell_magic("remote", "--run", "!ls")
    shell.user_ns["open_lock"] = __import__("threading").Lock()
    with pytest.raises(UsageError, match="reads the notebook variable 'open_lock'"):
        shell.run_cell_magic("remote", "--run", "open_lock.locked()")
    with pytest.raises(UsageError, match="go with --run"):
        shell.run_cell_magic("remote", "-o x", "1")
    with pytest.raises(UsageError, match="needs an expression"):
        shell.run_line_magic("remote", "  ")


@pytest.mark.usefixtures("live")
def test_remote_exceptions_render_as_compact_remote_tracebacks(shell):
    ok, printed = run_cell(shell, "%%remote --run\nvalue = 5\nraise KeyError(value)\n")
    assert not ok
    assert "KeyError\x1b[0m raised in remote task 'In[" in printed
    assert '<cell In[' in printed and "raise KeyError(value)" in printed  # the cell's own line
    assert "cell_tasks.py" not in printed and "worker.py" not in printed  # not our frames
    ok, printed = run_cell(shell, "%%remote\ndef boom(x):\n    raise ValueError(f'bad {x}')\n")
    assert ok
    ok, printed = run_cell(shell, "import rayipy\nrayipy.get(boom.remote(3))")
    assert not ok and "ValueError\x1b[0m raised in remote task 'boom'" in printed
    assert "raise ValueError(f'bad {x}')" in printed and "bad 3" in printed


@pytest.mark.usefixtures("live")
def test_remote_all_runs_the_cell_on_every_worker_grouped(shell, capsys):
    shell.run_cell_magic("remote", "--all", "import os\nSETUP_DONE = True\nprint('ready', os.getpid())\n")
    printed = capsys.readouterr().out
    # One block per pool worker (at least one per CPU; extra workers may exist for a
    # while after nested tasks), each with the output of its own process.
    blocks = re.findall(r"worker pid (\d+) ---\nready (\d+)\n", printed)
    assert len(blocks) >= 2 and all(header == body for header, body in blocks)
    assert len({pid for pid, _ in blocks}) == len(blocks)
    # The cell ran in every worker process: state left there is visible to later tasks.
    value = shell.run_cell_magic("remote", "--run", "SETUP_DONE = globals().get('SETUP_DONE')\n"
                                 "import __main__\ngetattr(__main__, 'SETUP_DONE', 'no')")
    assert value in (True, "no")  # tasks run in their own namespace; the process is shared


@pytest.mark.usefixtures("live")
def test_remote_all_raises_the_first_error_after_showing_every_worker(shell, capsys):
    with pytest.raises(ZeroDivisionError):
        shell.run_cell_magic("remote", "--all", "print('before')\n1 / 0\n")
    printed = capsys.readouterr().out
    assert printed.count("before") >= 2 and printed.count("failed: ZeroDivisionError") >= 2
    with pytest.raises(UsageError, match="takes no other option"):
        shell.run_cell_magic("remote", "--all --run", "1")


@pytest.mark.usefixtures("live")
def test_cluster_status_lists_nodes_and_counts_this_notebooks_tasks(shell):
    shell.run_cell_magic("remote", "", "def one(x):\n    return 1\n")
    rayipy.get([shell.user_ns["one"].remote(i) for i in range(5)])
    status = shell.run_line_magic("cluster", "status")
    html = status._repr_html_()
    node = rayipy.nodes()[0]["NodeID"][:8]
    assert node in html and "tasks of this notebook" in html and "CPU 2" in html
    counts = shell.magics_manager.registry["RayipyMagics"].local_counts()
    assert counts["submitted"] >= 5 and counts["done"] >= 5
    assert "node(s)" in repr(status)
    # each node's object store: used / capacity, from the head's status answer
    assert "<th>object store</th>" in html and re.search(r"<td>[\d.]+ \w?B / [\d.]+ \wiB</td>", html)
    assert re.search(r"node \w{8} object store [\d.]+ \w?B / ", repr(status))


@pytest.mark.usefixtures("live")
def test_cluster_dashboard_links_the_dashboard_or_says_there_is_none(shell, monkeypatch):
    url = rayipy.get_dashboard_url()   # a local cluster serves one ("host:port", as Ray)
    assert url
    shown = shell.run_line_magic("cluster", "dashboard")
    assert f'href="http://{url}"' in shown._repr_html_() and f"http://{url}" in repr(shown)
    context_html = shell.display_formatter.format(rayipy.session.context())[0]["text/html"]
    assert f'href="http://{url}"' in context_html
    # A cluster started without one (rayipy start --no-dashboard, include_dashboard=False):
    monkeypatch.setattr(rayipy.session.context(), "dashboard_url", "")
    monkeypatch.setattr(rayipy.api, "get_dashboard_url", lambda: "")
    assert "No dashboard is running" in repr(shell.run_line_magic("cluster", "dashboard"))


@pytest.mark.usefixtures("live")
def test_object_refs_render_their_state_task_and_place(shell):
    shell.run_cell_magic("remote", "", "def slow_id(x):\n    import time\n    time.sleep(x)\n    return x\n")
    ref = shell.user_ns["slow_id"].remote(0.0)
    rayipy.get(ref)
    html = shell.display_formatter.format(ref)[0]["text/html"]
    assert "done" in html and "slow_id" in html and "worker pid" in html
    failing = shell.user_ns["slow_id"].remote("not a number")
    with pytest.raises(TypeError):
        rayipy.get(failing)
    assert "failed: TypeError" in shell.display_formatter.format(failing)[0]["text/html"]


@pytest.mark.usefixtures("live")
def test_pending_refs_say_whether_they_are_queued_or_running_and_for_how_long(shell):
    from helpers import wait_until
    shell.run_cell_magic("remote", "", "def hold(x):\n    import time\n    time.sleep(x)\n    return x\n")
    refs = [shell.user_ns["hold"].remote(4.0) for _ in range(3)]   # 2 CPUs: one waits

    def shown(ref):
        return shell.display_formatter.format(ref)[0]["text/html"]
    # (a worker this driver leased earlier in the module runs its task without the head:
    # the owner knows that one runs, not since when)
    wait_until(lambda: sum(">running " in shown(r) for r in refs) == 2, timeout=20,
               message="two of three should show running")
    queued = [shown(r) for r in refs if ">running " not in shown(r)]
    assert len(queued) == 1 and re.search(r"queued for \d+\.\d s", queued[0]), queued
    running = [shown(r) for r in refs if ">running " in shown(r)]
    assert all(re.search(r"running (for \d+\.\d s|on a leased worker \(submitted \d+\.\d s ago\))", r)
               for r in running), running
    rayipy.cancel(refs[2])
    rayipy.get(refs[:2])


@pytest.mark.usefixtures("live")
def test_config_changes_apply_to_the_running_cluster_at_once(shell):
    runtime = current_runtime()
    shell.run_line_magic("config", "RayipyMagics.progress_threshold = 0.25")
    shell.run_line_magic("config", "RayipyMagics.interrupt_grace = 1.5")
    assert runtime.slow_wait_seconds == 0.25 and runtime.interrupt_grace == 1.5
    shell.run_line_magic("config", "RayipyMagics.auto_progress = False")
    assert runtime.on_slow_wait is None
    shell.run_line_magic("config", "RayipyMagics.auto_progress = True")
    assert runtime.on_slow_wait is not None
    shell.run_line_magic("config", "RayipyMagics.progress_threshold = 1.0")


@pytest.mark.usefixtures("live")
def test_a_slow_get_of_many_refs_shows_a_bar_by_itself(shell, capsys):
    """Outside a kernel the automatic bar is the terminal one (the kernel test sees the widget)."""
    shell.run_line_magic("config", "RayipyMagics.progress_threshold = 0.1")
    try:
        shell.run_cell_magic("remote", "", "def nap(x):\n    import time\n    time.sleep(0.1)\n    return x\n")
        assert rayipy.get([shell.user_ns["nap"].remote(i) for i in range(8)]) == list(range(8))
        assert "get: 100%" in capsys.readouterr().err
        rayipy.get([shell.user_ns["nap"].remote(i) for i in range(1)])
        assert "get:" not in capsys.readouterr().err  # one ref: no bar
    finally:
        shell.run_line_magic("config", "RayipyMagics.progress_threshold = 1.0")


@pytest.mark.usefixtures("live")
def test_unload_takes_everything_back_and_reload_restores_it(shell):
    runtime = current_runtime()
    shell.run_line_magic("unload_ext", "rayipy")
    try:
        assert "cluster" not in shell.magics_manager.magics["line"]
        assert "remote" not in shell.magics_manager.magics["cell"]
        assert runtime.on_submit is None and runtime.on_slow_wait is None
        assert not rayipy.session.runtime_hooks
        assert "text/html" not in shell.display_formatter.format(rayipy.put(1))[0]
        assert rayipy.is_initialized()  # the cluster keeps running
    finally:
        shell.run_line_magic("load_ext", "rayipy")
    assert runtime.on_submit is not None and "cluster" in shell.magics_manager.magics["line"]


@pytest.mark.usefixtures("live")
def test_cluster_stop_stops_and_a_new_start_works(shell, capsys):
    shell.run_line_magic("cluster", "stop")
    assert "Stopped the local cluster" in capsys.readouterr().out
    assert not rayipy.is_initialized()
    shell.run_line_magic("cluster", "stop")
    assert "No rayipy cluster is running" in capsys.readouterr().out
    shell.run_line_magic("config", "RayipyMagics.num_cpus = 1")   # the default for start
    try:
        shell.run_line_magic("cluster", "start")
    finally:
        shell.run_line_magic("config", "RayipyMagics.num_cpus = None")
    assert rayipy.cluster_resources()["CPU"] == 1
    assert current_runtime().on_submit is not None  # hooks attached to the new cluster too


def test_settings_from_the_config_file_apply_when_the_extension_loads(shell):
    """``c.RayipyMagics.progress_threshold = 0.3`` in ipython_config.py: the shell's config."""
    shell.run_line_magic("unload_ext", "rayipy")
    shell.config.RayipyMagics.progress_threshold = 0.3
    try:
        shell.run_line_magic("load_ext", "rayipy")
        assert shell.magics_manager.registry["RayipyMagics"].progress_threshold == 0.3
    finally:
        del shell.config.RayipyMagics["progress_threshold"]
