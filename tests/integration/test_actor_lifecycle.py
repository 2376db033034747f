"""Actors' lifecycle on a real cluster: max_task_retries, kill(no_restart=False),
exit_actor, __ray_terminate__, and namespaces (within a driver and across drivers)."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

import rayipy
from rayipy.exceptions import ActorDiedError

from helpers import wait_until


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@rayipy.remote(max_restarts=1)
class Crashable:
    def __init__(self):
        self.calls = 0

    def pid(self):
        self.calls += 1
        return os.getpid(), self.calls

    def hang_first_time(self, flag):
        """The first instance to run it hangs (to be killed); a restarted one answers."""
        path = pathlib.Path(flag)
        if not path.exists():
            path.write_text(str(os.getpid()))
            import time
            time.sleep(120)
        return os.getpid()


def kill_while_in_flight(actor, tmp_path, method_options=None):
    """Start a call that hangs, SIGKILL the actor's process under it; its ref and the old pid."""
    flag = tmp_path / "started"
    method = actor.hang_first_time
    if method_options:
        method = method.options(**method_options)
    ref = method.remote(str(flag))
    wait_until(flag.exists, timeout=60, message="the call never started")
    old = int(flag.read_text())
    os.kill(old, signal.SIGKILL)
    return ref, old


# -- max_task_retries ----------------------------------------------------------------------
def test_calls_in_flight_go_again_to_the_restarted_actor_with_max_task_retries(cluster, tmp_path):
    actor = Crashable.options(max_task_retries=1).remote()
    ref, old = kill_while_in_flight(actor, tmp_path)
    new = rayipy.get(ref, timeout=60)
    assert new != old                              # ran again, on the new instance
    assert rayipy.get(actor.pid.remote(), timeout=60) == (new, 1)   # fresh state there


def test_without_max_task_retries_calls_in_flight_fail(cluster, tmp_path):
    actor = Crashable.remote()
    ref, _ = kill_while_in_flight(actor, tmp_path)
    with pytest.raises(ActorDiedError, match="restarting"):
        rayipy.get(ref, timeout=60)


def test_a_methods_max_task_retries_overrides_the_actors(cluster, tmp_path):
    actor = Crashable.remote()                     # max_task_retries=0
    ref, old = kill_while_in_flight(actor, tmp_path, {"max_task_retries": -1})
    assert rayipy.get(ref, timeout=60) != old


# -- kill(no_restart=False) ----------------------------------------------------------------
def test_kill_without_no_restart_restarts_within_max_restarts(cluster):
    actor = Crashable.remote()
    first, _ = rayipy.get(actor.pid.remote(), timeout=60)
    rayipy.get(actor.pid.remote(), timeout=60)
    rayipy.kill(actor, no_restart=False)
    second, calls = rayipy.get(actor.pid.remote(), timeout=60)   # waits for the new instance
    assert second != first and calls == 1
    wait_until(lambda: gone(first), timeout=20)
    rayipy.kill(actor, no_restart=False)           # no restarts left: dead for good
    with pytest.raises(ActorDiedError, match=r"rayipy.kill\(no_restart=False\)"):
        rayipy.get(actor.pid.remote(), timeout=60)


def test_kill_kills_a_restartable_actor_for_good_by_default(cluster):
    actor = Crashable.remote()
    pid, _ = rayipy.get(actor.pid.remote(), timeout=60)
    rayipy.kill(actor)
    with pytest.raises(ActorDiedError, match=r"killed by rayipy.kill\(\)"):
        rayipy.get(actor.pid.remote(), timeout=60)
    wait_until(lambda: gone(pid), timeout=20)
    with pytest.raises(TypeError, match="no_restart"):
        rayipy.kill(actor, no_restart="yes")


# -- exit_actor and __ray_terminate__ ------------------------------------------------------
@rayipy.remote(max_restarts=2)
class Quitter:
    def __init__(self, marker):
        import atexit
        atexit.register(pathlib.Path(marker).write_text, "atexit ran")

    def pid(self):
        return os.getpid()

    def wait_for(self, path):
        wait_until(pathlib.Path(path).exists, timeout=60)
        return "waited"

    def quit(self):
        rayipy.actor.exit_actor()
        return "never"


def test_exit_actor_ends_the_actor_cleanly_and_for_good(cluster, tmp_path):
    marker, go = tmp_path / "marker", tmp_path / "go"
    actor = Quitter.remote(str(marker))
    pid = rayipy.get(actor.pid.remote(), timeout=60)
    blocker = actor.wait_for.remote(str(go))      # holds the actor while calls queue
    quitting = actor.quit.remote()
    queued = actor.pid.remote()
    go.write_text("go")
    assert rayipy.get(blocker, timeout=60) == "waited"
    with pytest.raises(ActorDiedError, match=r"exit_actor\(\) was called in 'Quitter.quit'"):
        rayipy.get(quitting, timeout=60)           # the caller sees the death, not a value
    with pytest.raises(ActorDiedError, match="exit_actor"):
        rayipy.get(queued, timeout=60)
    wait_until(lambda: gone(pid), timeout=20, message="the actor's process did not exit")
    assert marker.read_text() == "atexit ran"
    with pytest.raises(ActorDiedError, match="exit_actor"):   # not restarted
        rayipy.get(actor.pid.remote(), timeout=60)


def test_exit_actor_outside_an_actor_is_a_type_error(cluster):
    @rayipy.remote
    def task():
        try:
            rayipy.actor.exit_actor()
        except TypeError as e:
            return str(e)

    with pytest.raises(TypeError, match="inside an actor's method"):
        rayipy.actor.exit_actor()
    assert "inside an actor's method" in rayipy.get(task.remote(), timeout=60)


def test_ray_terminate_stops_after_the_calls_queued_before_it(cluster, tmp_path):
    marker, go = tmp_path / "marker", tmp_path / "go"
    actor = Quitter.remote(str(marker))
    pid = rayipy.get(actor.pid.remote(), timeout=60)
    before = [actor.wait_for.remote(str(go)), actor.pid.remote()]
    terminating = actor.__ray_terminate__.remote()
    after = actor.pid.remote()
    go.write_text("go")
    assert rayipy.get(before, timeout=60) == ["waited", pid]
    with pytest.raises(ActorDiedError, match="__ray_terminate__"):
        rayipy.get(terminating, timeout=60)
    with pytest.raises(ActorDiedError, match="__ray_terminate__"):
        rayipy.get(after, timeout=60)
    wait_until(lambda: gone(pid), timeout=20, message="the actor's process did not exit")
    assert marker.read_text() == "atexit ran"


# -- namespaces ----------------------------------------------------------------------------
@rayipy.remote
class Box:
    def __init__(self, value=None):
        self.value = value

    def get(self):
        return self.value

    def namespace(self):
        return rayipy.get_runtime_context().namespace

    def find(self, name):
        return rayipy.get(rayipy.get_actor(name).get.remote())


@rayipy.remote
def namespace_in_task():
    return rayipy.get_runtime_context().namespace


@rayipy.remote
def find_in_task(name):
    return rayipy.get(rayipy.get_actor(name).get.remote())


def test_a_drivers_anonymous_namespace_is_inherited_by_its_tasks_and_actors(cluster):
    mine = rayipy.get_runtime_context().namespace
    assert mine.startswith("anonymous-")
    assert rayipy.get(namespace_in_task.remote(), timeout=60) == mine
    box = Box.remote()
    assert rayipy.get(box.namespace.remote(), timeout=60) == mine
    Box.options(name="ns-box").remote("here")
    assert rayipy.get(find_in_task.remote("ns-box"), timeout=60) == "here"
    assert rayipy.get(box.find.remote("ns-box"), timeout=60) == "here"


def test_an_actor_named_in_another_namespace_is_found_only_there(cluster):
    Box.options(name="elsewhere", namespace="other").remote("there")
    with pytest.raises(ValueError, match=r"no live actor is named 'elsewhere' in namespace "
                                         r"'anonymous-.*lives in namespace\(s\) 'other'"):
        rayipy.get_actor("elsewhere")
    found = rayipy.get_actor("elsewhere", namespace="other")
    assert rayipy.get(found.get.remote(), timeout=60) == "there"
    Box.options(name="elsewhere").remote("here")   # the name is free in our namespace
    with pytest.raises(ValueError, match="already exists in namespace 'other'"):
        Box.options(name="elsewhere", namespace="other").remote()
    with pytest.raises(ValueError, match="name="):
        Box.options(namespace="other").remote()
    with pytest.raises(ValueError, match="no live actor is named 'nobody' in namespace 'nowhere'"):
        rayipy.get_actor("nobody", namespace="nowhere")
