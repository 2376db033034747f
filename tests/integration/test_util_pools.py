"""rayipy.util.ActorPool and rayipy.util.multiprocessing.Pool on a real cluster."""

from __future__ import annotations

import os
import threading
import time

import pytest

import rayipy
from rayipy.util import ActorPool
from rayipy.util.multiprocessing import Pool, TimeoutError as PoolTimeoutError


@rayipy.remote
class Doubler:
    def double(self, v):
        return 2 * v

    def pid(self, _):
        return os.getpid()

    def hang(self, path):
        deadline = time.monotonic() + 60
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        return "opened"


def test_actor_pool_map_and_unordered(cluster):
    actors = [Doubler.remote(), Doubler.remote()]
    pool = ActorPool(actors)
    assert list(pool.map(lambda a, v: a.double.remote(v), range(20))) == [2 * v for v in range(20)]
    assert sorted(pool.map_unordered(lambda a, v: a.double.remote(v), range(10))) == \
        [2 * v for v in range(10)]
    pids = set(pool.map(lambda a, v: a.pid.remote(v), range(10)))
    assert len(pids) == 2 and os.getpid() not in pids
    pool.submit(lambda a, v: a.double.remote(v), 21)
    assert pool.has_next() and pool.get_next(timeout=30) == 42
    assert pool.pop_idle() in actors and pool.pop_idle() in actors and pool.pop_idle() is None


def test_actor_pool_get_next_timeout(cluster, tmp_path):
    pool = ActorPool([Doubler.remote()])
    path = str(tmp_path / "gate")
    pool.submit(lambda a, p: a.hang.remote(p), path)
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.1)
    open(path, "w").close()
    assert pool.get_next(timeout=30) == "opened"


def _set_flag(value):
    global FLAG
    FLAG = value


def _read_flag(x):
    return (FLAG, x)


def _pid(_):
    return os.getpid()


def test_pool_map_chunks_10000_items_over_the_actors(cluster):
    with Pool(processes=2) as pool:
        result = pool.map_async(_pid, range(10_000))
        assert len(result._refs) == 8 or result.ready()   # ceil(10000 / (2 * 4)) per chunk
        pids = result.get(timeout=60)
        assert len(pids) == 10_000 and len(set(pids)) == 2 and os.getpid() not in pids
        assert pool.map(abs, range(-50, 50), chunksize=7) == [abs(i) for i in range(-50, 50)]
        assert pool.starmap(pow, [(2, i) for i in range(10)]) == [2 ** i for i in range(10)]
        assert pool.apply(pow, (3, 4)) == 81
        assert pool.map(abs, []) == []


def test_pool_initializer_and_errors(cluster):
    with Pool(2, initializer=_set_flag, initargs=("set",)) as pool:
        assert pool.map(_read_flag, range(4)) == [("set", i) for i in range(4)]
        with pytest.raises(ValueError, match="invalid literal") as info:
            pool.map(int, ["1", "2", "x", "y"])
        assert "Traceback" in str(info.value.__cause__)
        result = pool.map_async(int, ["x"])
        result.wait(30)
        assert result.ready() and not result.successful()


def test_pool_imap_is_lazy_and_ordered(cluster):
    pulled = []

    def items():
        for i in range(100):
            pulled.append(i)
            yield i
    with Pool(2) as pool:
        it = pool.imap(abs, items(), chunksize=5)
        assert next(it) == 0
        assert len(pulled) <= 2 * 2 * 5 + 5        # a window of 2 chunks per actor, read ahead
        assert list(it) == list(range(1, 100))
        assert sorted(pool.imap_unordered(abs, range(-20, 0), chunksize=3)) == list(range(1, 21))
        it = pool.imap(_pid, [1])
        assert isinstance(it.next(timeout=30), int)


def _wait_file(path):
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "opened"


def test_pool_apply_async_callbacks_run_off_the_io_thread(cluster, tmp_path):
    seen = {}
    done = threading.Event()

    def on_result(value):
        seen["value"], seen["thread"] = value, threading.current_thread().name
        done.set()

    def on_error(error):
        seen["error"] = error
        done.set()
    with Pool(2) as pool:
        pool.apply_async(pow, (2, 5), callback=on_result)
        assert done.wait(30)
        assert seen["value"] == 32 and seen["thread"] == "rayipy-pool-callbacks"
        done.clear()
        result = pool.apply_async(int, ("x",), error_callback=on_error)
        assert done.wait(30) and isinstance(seen["error"], ValueError)
        assert not result.successful()
        path = str(tmp_path / "gate")
        gated = pool.apply_async(_wait_file, (path,))
        with pytest.raises(PoolTimeoutError):
            gated.get(timeout=0)
        with pytest.raises(ValueError, match="not ready"):
            gated.successful()
        open(path, "w").close()
        assert gated.get(timeout=30) == "opened" and gated.successful()


def test_pool_close_join_and_maxtasksperchild(cluster):
    pool = Pool(2, maxtasksperchild=1)
    pids = pool.map(_pid, range(6), chunksize=1)
    assert len(set(pids)) >= 4       # each actor replaced after every chunk
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(abs, [1])
    pool.join()


def test_pool_refuses_what_it_cannot_do(cluster):
    with pytest.raises(ValueError, match="context"):
        Pool(2, context=object())
    with pytest.raises(ValueError, match="needs 3 CPUs"):
        Pool(3)
    with pytest.raises(ValueError, match="ray_address"):
        Pool(1, ray_address="127.0.0.1:1")
    with pytest.raises(ValueError, match="join"):
        with Pool(1) as pool:
            pool.join()
