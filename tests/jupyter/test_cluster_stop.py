"""%cluster stop with work still running: refused with the count, unless --force."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

import rayipy
from helpers import wait_until


def test_stop_refuses_while_tasks_run_and_force_stops_them(shell, capsys):
    shell.run_line_magic("cluster", "start -n 2")
    shell.run_cell("import rayipy, time\n"
                   "@rayipy.remote\n"
                   "def nap(s):\n"
                   "    time.sleep(s)\n"
                   "    return s\n"
                   "@rayipy.remote\n"
                   "class Keeper:\n"
                   "    def ping(self):\n"
                   "        return 1\n"
                   "keeper = Keeper.remote()\n"
                   "assert rayipy.get(keeper.ping.remote()) == 1\n")
    capsys.readouterr()
    # An idle actor is no running task (once its creation is reported done).
    wait_until(lambda: rayipy.cluster_status()["tasks"]["running"] == 0, timeout=30,
               message="the actor's creation never ended")
    refs = [shell.user_ns["nap"].remote(600) for _ in range(3)]
    wait_until(lambda: rayipy.cluster_status()["tasks"]["running"] >= 1, timeout=30,
               message="the naps never started")
    with pytest.raises(UsageError, match=r"^3 tasks still queued or running on the local "
                       r"cluster at .*; stopping it ends them\. Use %cluster stop --force"):
        shell.run_line_magic("cluster", "stop")
    assert rayipy.is_initialized()
    with pytest.raises(UsageError, match="usage: %cluster stop"):
        shell.run_line_magic("cluster", "stop --forse")
    shell.run_line_magic("cluster", "stop --force")
    printed = capsys.readouterr().out
    assert "Stopped the local cluster at" in printed
    assert printed.endswith("; 3 tasks were still queued or running and ended.\n"), printed
    assert not rayipy.is_initialized()
    del refs


def test_stop_with_nothing_running_needs_no_force(shell, capsys):
    shell.run_line_magic("cluster", "start -n 1")
    assert rayipy.get(rayipy.remote(lambda: 2).remote()) == 2
    capsys.readouterr()
    shell.run_line_magic("cluster", "stop")
    printed = capsys.readouterr().out
    assert printed.startswith("Stopped the local cluster at ") and "task" not in printed, printed
    assert not rayipy.is_initialized()
