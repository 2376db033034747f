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

from helpers import wait_until

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


@rayipy.remote(max_concurrency=4)
class Threaded:
    def __init__(self):
        self.inside = 0
        self.most = 0
        self.lock = __import__("threading").Lock()

    def enter(self, seconds):
        import time
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        time.sleep(seconds)
        with self.lock:
            self.inside -= 1
        return self.most


@rayipy.remote
class AsyncActor:
    def __init__(self):
        import asyncio
        self.event = asyncio.Event()

    async def wait_for_release(self):
        await self.event.wait()
        return "released"

    async def release(self):
        self.event.set()
        return "set"


@rayipy.remote(max_restarts=1)
class Restartable:
    def __init__(self):
        self.calls = 0

    def pid(self):
        self.calls += 1
        return os.getpid(), self.calls


def test_threaded_actor_runs_calls_concurrently(cluster):
    actor = Threaded.remote()
    # Four calls that each wait 0.5 s would take 2 s one by one; together they overlap.
    most = max(rayipy.get([actor.enter.remote(0.5) for _ in range(4)], timeout=60))
    assert most >= 2


def test_async_actor_interleaves_awaiting_calls(cluster):
    actor = AsyncActor.remote()
    waiting = actor.wait_for_release.remote()
    # Would deadlock if the first call blocked the actor: the second must run meanwhile.
    assert rayipy.get(actor.release.remote(), timeout=60) == "set"
    assert rayipy.get(waiting, timeout=60) == "released"


def test_restart_reruns_the_constructor(cluster):
    actor = Restartable.remote()
    pid, calls = rayipy.get(actor.pid.remote(), timeout=60)
    assert calls == 1
    os.kill(pid, signal.SIGKILL)
    new_pid = calls = None
    for _ in range(100):  # the call that races the death may fail; later calls reach the new one
        try:
            new_pid, calls = rayipy.get(actor.pid.remote(), timeout=60)
            break
        except ActorDiedError:
            continue
    assert new_pid != pid and calls == 1  # fresh state: the constructor ran again
    new_pid_again, _ = rayipy.get(actor.pid.remote(), timeout=60)
    os.kill(new_pid_again, signal.SIGKILL)  # no restarts left now
    with pytest.raises(ActorDiedError):
        for _ in range(100):
            rayipy.get(actor.pid.remote(), timeout=60)


def test_named_actors(cluster):
    log = Log.options(name="shared-log").remote(["a"])
    again = rayipy.get_actor("shared-log")
    assert rayipy.get(again.append.remote("b"), timeout=60) == 2
    with pytest.raises(ValueError, match="already exists"):
        Log.options(name="shared-log").remote()
    same = Log.options(name="shared-log", get_if_exists=True).remote()
    assert rayipy.get(same.get.remote(), timeout=60) == ["a", "b"]
    with pytest.raises(ValueError, match="no live actor is named 'nobody'.*shared-log"):
        rayipy.get_actor("nobody")
    rayipy.kill(log)

    def name_released():
        try:
            rayipy.get_actor("shared-log")
            return False
        except ValueError:
            return True
    wait_until(name_released, timeout=20, message="a killed actor's name was not released")


def test_actor_stops_when_its_last_handle_is_gone(cluster):
    import psutil
    log = Log.remote()
    pid = rayipy.get(log.pid.remote(), timeout=60)
    call = log.append.remote("pending")  # a pending call keeps it alive
    del log
    assert rayipy.get(call, timeout=60) == 1

    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:   # exited (between a check and a look, too)
            return True

    wait_until(gone, timeout=20, message="the actor outlived its last handle")


def test_actor_holding_a_cpu_takes_it_from_the_pool(cluster):
    def free_cpus():
        return rayipy.available_resources().get("CPU", 0)
    total = rayipy.cluster_resources()["CPU"]
    wait_until(lambda: free_cpus() == total, timeout=20)  # earlier tests' leases given back
    holder = Log.options(num_cpus=1).remote()
    rayipy.get(holder.get.remote(), timeout=60)
    assert free_cpus() == total - 1
    rayipy.kill(holder)
    wait_until(lambda: free_cpus() == total, timeout=20)


def test_actor_methods_call_tasks_and_other_actors(cluster):
    @rayipy.remote
    class Caller:
        def call(self, log):
            rayipy.get(log.append.remote("from actor"))
            return rayipy.get(append_from_task.remote(log, "from task"))

    log = Log.remote()
    assert rayipy.get(Caller.remote().call.remote(log), timeout=60) == 2


def test_cancel_actor_calls(cluster):
    from rayipy.exceptions import TaskCancelledError

    @rayipy.remote
    class Sleeper:
        def sleep(self, seconds):
            import time
            time.sleep(seconds)
            return "slept"

    actor = Sleeper.remote()
    running = actor.sleep.remote(30)
    queued = actor.sleep.remote(0)
    rayipy.cancel(queued)
    with pytest.raises(TaskCancelledError):
        rayipy.get(queued, timeout=60)
    rayipy.cancel(running)
    with pytest.raises(TaskCancelledError):
        rayipy.get(running, timeout=20)  # interrupted, not waited out
    assert rayipy.get(actor.sleep.remote(0), timeout=60) == "slept"


def test_cancel_of_a_call_behind_a_running_one_is_answered_at_once(cluster, tmp_path):
    # The queued call sits unread in the actor's connection while the running one holds
    # its main thread: the cancel must not wait for that call to end.
    from rayipy.exceptions import TaskCancelledError

    @rayipy.remote
    class Sleeper:
        def sleep(self, seconds, started=""):
            import pathlib
            import time
            if started:
                pathlib.Path(started).write_text("yes")
            time.sleep(seconds)
            return "slept"

    actor = Sleeper.remote()
    started = tmp_path / "started"
    running = actor.sleep.remote(60, str(started))
    wait_until(started.exists, timeout=60, message="the first call never started")
    queued = actor.sleep.remote(0)
    rayipy.cancel(queued)
    with pytest.raises(TaskCancelledError, match="Sleeper.sleep' was cancelled"):
        rayipy.get(queued, timeout=15)
    rayipy.cancel(running)
    with pytest.raises(TaskCancelledError):
        rayipy.get(running, timeout=20)
    assert rayipy.get(actor.sleep.remote(0), timeout=60) == "slept"


def test_actor_asking_for_too_much_fails_with_the_reason(cluster):
    big = Log.options(num_cpus=3).remote()
    with pytest.raises(ActorDiedError, match="CPU=3"):
        rayipy.get(big.get.remote(), timeout=30)


def test_named_and_detached_actors_outlive_their_handles(cluster):
    import gc
    import psutil
    plain = Log.remote()
    plain_pid = rayipy.get(plain.pid.remote(), timeout=60)
    keeper = Log.options(name="keeper", lifetime="detached").remote(["kept"])
    rayipy.get(keeper.pid.remote(), timeout=60)
    del plain, keeper
    gc.collect()
    # Once the plain actor is gone, the handles' release has been processed...
    wait_until(lambda: not psutil.pid_exists(plain_pid)
               or psutil.Process(plain_pid).status() == psutil.STATUS_ZOMBIE, timeout=20)
    # ...and the detached one is still there, by name.
    assert rayipy.get(rayipy.get_actor("keeper").get.remote(), timeout=60) == ["kept"]
    rayipy.kill(rayipy.get_actor("keeper"))
