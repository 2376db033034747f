"""Errors on a real cluster: task exceptions, cancellation, crashes, retries, misuse."""

from __future__ import annotations

import os
import threading
import time

import pytest

import rayipy
from rayipy.exceptions import TaskCancelledError, TaskError, WorkerCrashedError

from helpers import wait_until


class CustomError(Exception):
    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code


@rayipy.remote
def raises(kind):
    if kind == "value":
        raise ValueError("bad value 17")
    if kind == "custom":
        raise CustomError(42, "custom detail")
    raise OSError(2, "no such thing")


@rayipy.remote
def sleeper(seconds):
    time.sleep(seconds)
    return "woke"


@rayipy.remote
def crash_once(marker):
    # The first attempt dies; the retry finds the marker and succeeds.
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    return "second attempt"


@rayipy.remote(max_retries=0)
def crash_always():
    os._exit(7)


@rayipy.remote
def ok(x):
    return x


def test_task_exception_is_task_error_and_original_class(cluster):
    with pytest.raises(ValueError) as info:
        rayipy.get(raises.remote("value"))
    err = info.value
    assert isinstance(err, TaskError)
    text = str(err)
    assert "bad value 17" in text
    assert "raises" in text and "worker pid" in text
    assert 'raise ValueError("bad value 17")' in text  # the remote source line
    with pytest.raises(CustomError) as info:
        rayipy.get(raises.remote("custom"))
    assert info.value.code == 42
    with pytest.raises(OSError) as info:
        rayipy.get(raises.remote("os"))
    assert info.value.errno == 2
    assert rayipy.get(ok.remote(1)) == 1  # the cluster keeps working


@rayipy.remote
def sleeper_flagged(path, seconds):
    open(path, "w").close()  # says "started"
    time.sleep(seconds)
    return "woke"


def test_cancel_running_task(cluster, tmp_path):
    flag = tmp_path / "started"
    ref = sleeper_flagged.remote(str(flag), 30)
    wait_until(flag.exists, timeout=30, message="the task never started")
    started = time.monotonic()
    rayipy.cancel(ref)
    with pytest.raises(TaskCancelledError):
        rayipy.get(ref, timeout=20)
    assert time.monotonic() - started < 10  # interrupted, not waited out
    assert rayipy.get(ok.remote(2)) == 2


def test_cancel_force_kills_and_cluster_recovers(cluster):
    ref = sleeper.remote(30)
    time.sleep(0)  # let it be submitted; cancel works queued or running
    rayipy.cancel(ref, force=True)
    with pytest.raises(TaskCancelledError):
        rayipy.get(ref, timeout=30)
    assert rayipy.get([ok.remote(i) for i in range(10)], timeout=30) == list(range(10))


def test_cancel_queued_tasks(cluster):
    blockers = [sleeper.remote(2) for _ in range(2)]
    queued = [sleeper.remote(0) for _ in range(5)]
    for ref in queued:
        rayipy.cancel(ref)
    for ref in queued:
        with pytest.raises(TaskCancelledError):
            rayipy.get(ref, timeout=30)
    for ref in blockers:
        rayipy.cancel(ref)


def test_worker_crash_is_retried(cluster, tmp_path):
    assert rayipy.get(crash_once.remote(str(tmp_path / "marker")), timeout=60) == "second attempt"


def test_worker_crash_without_retries_raises(cluster):
    with pytest.raises(WorkerCrashedError, match="exited with code 7"):
        rayipy.get(crash_always.remote(), timeout=60)
    assert rayipy.get([ok.remote(i) for i in range(4)], timeout=60) == [0, 1, 2, 3]


def test_misuse_errors(cluster):
    with pytest.raises(TypeError, match=r"ok\.remote\(\)"):
        ok(1)
    with pytest.raises(TypeError, match="argument 0 of ok.*lock"):
        ok.remote(threading.Lock())
    with pytest.raises(TypeError, match="keyword argument 'x'"):
        ok.remote(x=[1, threading.Lock()])
    with pytest.raises(TypeError, match="ObjectRef or a list"):
        rayipy.get(5)
    with pytest.raises(TypeError, match="item 1"):
        rayipy.get([ok.remote(1), "not a ref"])
    with pytest.raises(TypeError, match="timeout"):
        rayipy.get(ok.remote(1), timeout="soon")
    with pytest.raises(TypeError, match="list of ObjectRefs"):
        rayipy.wait(ok.remote(1))
    with pytest.raises(ValueError, match="num_returns"):
        rayipy.wait([ok.remote(1)], num_returns=2)
    with pytest.raises(ValueError, match="num_cpus"):
        ok.options(num_cpu=1)
    with pytest.raises(TypeError, match="num_cpus"):
        rayipy.remote(num_cpus="two")(lambda: 1)
    with pytest.raises(RuntimeError, match="already called"):
        rayipy.init()
    assert rayipy.init(ignore_reinit_error=True) is not None
    with pytest.raises(TypeError, match="cancel"):
        rayipy.cancel("ref")
    with pytest.raises(TypeError):
        rayipy.put(ok.remote(1))
    # after all of that, the cluster still answers
    assert rayipy.get(ok.remote("fine")) == "fine"


def test_unpicklable_return_value_is_a_clear_error(cluster):
    @rayipy.remote
    def returns_lock():
        return threading.Lock()

    with pytest.raises(TypeError, match="return value 0 of .*returns_lock"):
        rayipy.get(returns_lock.remote(), timeout=30)


def test_retry_exceptions(cluster, tmp_path):
    @rayipy.remote(retry_exceptions=True, max_retries=3)
    def flaky(path):
        # Fails twice, then succeeds: the attempts are counted in a file.
        with open(path, "a") as f:
            f.write("x")
        if len(open(path).read()) < 3:
            raise ConnectionError("not yet")
        return "third time"

    assert rayipy.get(flaky.remote(str(tmp_path / "a")), timeout=60) == "third time"

    @rayipy.remote(retry_exceptions=[ConnectionError], max_retries=5)
    def wrong_kind(path):
        with open(path, "a") as f:
            f.write("x")
        raise ValueError("never retried")

    with pytest.raises(ValueError):
        rayipy.get(wrong_kind.remote(str(tmp_path / "b")), timeout=60)
    assert open(tmp_path / "b").read() == "x"

    @rayipy.remote(retry_exceptions=True, max_retries=1)
    def always(path):
        with open(path, "a") as f:
            f.write("x")
        raise ConnectionError("always")

    with pytest.raises(ConnectionError):
        rayipy.get(always.remote(str(tmp_path / "c")), timeout=60)
    assert open(tmp_path / "c").read() == "xx"  # one try plus one retry


@rayipy.remote
def stopped_once(marker):
    # The first attempt waits to be stopped (SIGTERM, as when its node leaves); the retry
    # finds the marker and returns.
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)
    return "second attempt"


def test_a_task_whose_worker_is_stopped_is_retried_not_failed(cluster, tmp_path):
    import signal
    marker = tmp_path / "marker"
    ref = stopped_once.remote(str(marker))
    pid = wait_until(lambda: marker.exists() and marker.read_text() and int(marker.read_text()))
    os.kill(pid, signal.SIGTERM)
    assert rayipy.get(ref, timeout=60) == "second attempt"
