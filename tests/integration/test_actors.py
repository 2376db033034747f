"""Actors on a real cluster: state, call order, handles in tasks, kill and crash."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import pytest

import rayipy
from rayipy.exceptions import ActorDiedError

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


@rayipy.remote
class Log:
    def __init__(self, start=()):
        self.items = list(start)

    def append(self, item):
        self.items.append(item)
        return len(self.items)

    def get(self):
        return self.items

    def pid(self):
        return os.getpid()

    @rayipy.method(num_returns=2)
    def split(self):
        return self.items[:1], self.items[1:]


@rayipy.remote
class Broken:
    def __init__(self):
        raise ValueError("constructor failed")

    def hello(self):
        return "never"


@rayipy.remote
def append_from_task(log, item):
    return rayipy.get(log.append.remote(item))


def test_seed_program_two():
    result = subprocess.run([sys.executable, str(EXAMPLES / "seed_counters.py")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[3, 3, 3, 3]"


def test_calls_run_in_order(cluster):
    log = Log.remote()
    refs = [log.append.remote(i) for i in range(10_000)]
    assert rayipy.get(refs[-1], timeout=120) == 10_000
    assert rayipy.get(log.get.remote(), timeout=60) == list(range(10_000))


def test_handles_pass_to_tasks_and_reach_the_same_actor(cluster):
    log = Log.remote(["first"])
    rayipy.get([append_from_task.remote(log, i) for i in range(5)], timeout=60)
    items = rayipy.get(log.get.remote(), timeout=60)
    assert items[0] == "first" and sorted(items[1:]) == list(range(5))


def test_multiple_returns_and_ref_arguments(cluster):
    log = Log.remote([1, 2, 3])
    head, tail = log.split.remote()
    assert rayipy.get([head, tail]) == [[1], [2, 3]]
    assert rayipy.get(log.append.remote(rayipy.put("via put"))) == 4


def test_constructor_error_surfaces_on_calls(cluster):
    broken = Broken.remote()
    with pytest.raises(ValueError, match="constructor failed"):
        rayipy.get(broken.hello.remote(), timeout=60)


def test_kill_fails_pending_and_later_calls(cluster):
    log = Log.remote()
    assert rayipy.get(log.append.remote(1), timeout=60) == 1
    rayipy.kill(log)
    with pytest.raises(ActorDiedError, match="killed"):
        rayipy.get(log.append.remote(2), timeout=60)


def test_crashed_actor_raises_actor_died(cluster):
    log = Log.remote()
    pid = rayipy.get(log.pid.remote(), timeout=60)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ActorDiedError, match="SIGKILL"):
        rayipy.get(log.append.remote(1), timeout=60)
    # the pool still runs tasks
    assert rayipy.get(append_from_task.remote(Log.remote(), "x"), timeout=60) == 1


def test_misuse(cluster):
    with pytest.raises(TypeError, match=r"Log\.remote\(\)"):
        Log()
    log = Log.remote()
    with pytest.raises(TypeError, match=r"append\.remote\(\)"):
        log.append(1)
    with pytest.raises(AttributeError, match="'appendd'.*Did you mean 'append'"):
        log.appendd.remote(1)
    import threading
    with pytest.raises(TypeError, match="argument 0"):
        Log.remote(threading.Lock())
    with pytest.raises(TypeError, match="actor handle"):
        rayipy.kill("not an actor")
