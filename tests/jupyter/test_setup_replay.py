"""%%remote --all means every worker, always: workers that start after the cell ran it
before their first task (a replacement for a killed worker, extra workers for tasks
blocked in get); a cell that failed is not replayed."""

from __future__ import annotations

import os
import signal

import pytest

import rayipy
from rayipy import session
from helpers import wait_until

MARK = "RAYIPY_TEST_SETUP_MARK"


@pytest.fixture
def live(shell):
    if not rayipy.is_initialized():
        shell.run_line_magic("cluster", "start -n 1")
    return shell


def pool_pids() -> set[int]:
    return {w["pid"] for w in session.runtime_for_submit().request("workers")
            if not w.get("actor")}


@rayipy.remote
def where_and_mark() -> tuple[int, str | None]:
    return os.getpid(), os.environ.get(MARK)


@rayipy.remote
def blocked_get() -> tuple[int, str | None, list]:
    # Blocks in get on a task of its own: the node starts another worker for it.
    return os.getpid(), os.environ.get(MARK), rayipy.get(where_and_mark.remote())


def test_a_replaced_worker_runs_the_setup_cell_before_its_first_task(live, capsys):
    live.run_cell_magic("remote", "--all", f"import os\nos.environ['{MARK}'] = 'set'\n")
    [(old_pid, mark)] = [rayipy.get(where_and_mark.remote())]
    assert mark == "set"
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: pool_pids() and old_pid not in pool_pids(), timeout=30,
               message="the killed worker was not replaced")
    new_pid, mark = rayipy.get(where_and_mark.remote(), timeout=60)
    assert new_pid != old_pid
    assert mark == "set", "the replacement worker did not run the setup cell"

    # Extra workers, started for a task blocked in get, have it too.
    pid, mark, (inner_pid, inner_mark) = rayipy.get(
        blocked_get.remote(), timeout=60)
    assert mark == inner_mark == "set" and pid != inner_pid


def test_a_failed_setup_cell_is_not_replayed(live):
    with pytest.raises(ZeroDivisionError):
        live.run_cell_magic("remote", "--all", "import os\nos.environ['RAYIPY_TEST_BAD'] = 'x'\n1 / 0\n")
    runtime = session.runtime_for_submit()
    cells = runtime.request("setup_cells")
    assert all(b"RAYIPY_TEST_BAD" not in blob for _driver, _id, blob in cells)
    assert any(b"RAYIPY_TEST_SETUP_MARK" in blob for _driver, _id, blob in cells)


def test_a_setup_cell_got_both_ways_runs_once_and_answers_with_its_first_output():
    from rayipy.node import cell_tasks
    counter = {"n": 0}
    source = "counter['n'] += 1\nprint('ran', counter['n'])\n"
    first = cell_tasks.run_setup(source, "<cell>", {"counter": counter}, "id-1")
    again = cell_tasks.run_setup(source, "<cell>", {"counter": counter}, "id-1")
    assert counter["n"] == 1 and first["stdout"] == "ran 1\n"
    assert again["stdout"] == "ran 1\n" + cell_tasks.ALREADY_RAN
    cell_tasks.run_setup(source, "<cell>", {"counter": counter})   # no id: always runs
    assert counter["n"] == 2
