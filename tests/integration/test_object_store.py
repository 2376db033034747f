"""The node's object store: one shared copy per node, read without copying, freed with
its last ref, spilled to disk over its budget (``rayipy/node/store_server.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import psutil
import pytest

import rayipy
from helpers import local_store, wait_until
from rayipy.core.object_ref import current_runtime

MB = 2**20



def listing() -> dict[str, dict]:
    """The driver's node's store: object id (hex) -> its entry."""
    _summary, objects = local_store().listing()
    return {o["object_id"]: o for o in objects}



def head_bytes() -> int:
    return rayipy.cluster_status()["bytes_received"]


@rayipy.remote
def in_store_mapping(array):
    """Whether the worker got the array as a view of its node's store, and its sum."""
    client = current_runtime().access.store()
    return bool(client.arena.contains_address(array.ctypes.data)), float(array.sum())


@rayipy.remote
def make(n_mb, value=7.0):
    return np.full(n_mb * MB // 8, value)


@rayipy.remote
def total(array):
    return float(array.sum())


def test_a_put_array_comes_back_as_a_read_only_view_of_the_store(cluster):
    array = np.arange(8 * MB // 8, dtype=np.float64)
    ref = rayipy.put(array)
    assert listing()[ref.hex()]["size"] > array.nbytes
    got = rayipy.get(ref)
    assert local_store().arena.contains_address(got.ctypes.data)
    assert not got.flags.writeable
    with pytest.raises(ValueError):
        got[0] = 1.0
    assert np.array_equal(got, array)
    array[0] = -1.0           # the caller's array is its own: the stored value stays
    assert rayipy.get(ref)[0] == 0.0


def test_dataframes_and_arrow_tables_come_back_without_copies(cluster):
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    arena = local_store().arena
    frame = pd.DataFrame({"a": np.arange(500_000, dtype=np.float64), "b": np.arange(500_000)})
    got = rayipy.get(rayipy.put(frame))
    assert got.equals(frame)
    assert all(arena.contains_address(got[c].to_numpy().ctypes.data) for c in got.columns)
    table = pa.table({"x": np.arange(500_000, dtype=np.int64)})
    got_table = rayipy.get(rayipy.put(table))
    assert got_table.equals(table)
    assert arena.contains_address(got_table.column(0).chunk(0).buffers()[1].address)


def test_readers_share_one_copy_and_gets_do_not_grow_memory(cluster):
    ref = rayipy.put(np.ones(64 * MB // 8))
    rayipy.get(total.remote(ref))
    process = psutil.Process()
    before = process.memory_full_info()
    views = [rayipy.get(ref) for _ in range(20)]
    after = process.memory_full_info()
    assert after.rss - before.rss < 16 * MB     # 20 gets of 64 MB: no copies
    assert after.uss - before.uss < 16 * MB
    assert all(v.ctypes.data == views[0].ctypes.data for v in views)   # the same copy
    results = rayipy.get([in_store_mapping.remote(ref) for _ in range(20)])
    assert results == [(True, float(64 * MB // 8))] * 20
    assert sum(1 for o in listing().values() if o["size"] >= 64 * MB) == 1


def test_a_large_return_is_written_to_the_store_not_sent(cluster):
    rayipy.get(make.remote(1))
    before = head_bytes()
    ref = make.remote(24)
    value = rayipy.get(ref)
    assert value[-1] == 7.0 and value.shape == (24 * MB // 8,)
    assert local_store().arena.contains_address(value.ctypes.data)
    assert listing()[ref.hex()]["primary"]
    assert head_bytes() - before < MB


def test_a_large_argument_by_value_is_put_once_and_mapped_by_the_worker(cluster):
    array = np.arange(4 * MB // 8, dtype=np.float64)
    rayipy.get(in_store_mapping.remote(np.zeros(2)))
    before = head_bytes()
    assert rayipy.get(in_store_mapping.remote(array)) == (True, float(array.sum()))
    assert head_bytes() - before < MB


def test_a_freed_object_leaves_the_store_but_a_view_of_it_stays_valid(cluster):
    ref = rayipy.put(np.full(8 * MB // 8, 3.0))
    key = ref.hex()
    view = rayipy.get(ref)
    del ref
    # The owner freed it, but our view pins it: nothing else may take its place.
    wait_until(lambda: listing().get(key, {}).get("readers") == 1,
               message="the store forgot a pinned object")
    others = [rayipy.put(np.full(8 * MB // 8, 5.0)) for _ in range(3)]
    assert float(view.sum()) == 3.0 * view.size
    del view
    wait_until(lambda: key not in listing(), message="the freed object stayed in the store")
    del others


def test_values_stored_in_unusual_layouts_come_back_equal(cluster):
    fortran = np.asfortranarray(np.arange(600_000, dtype=np.int32).reshape(600, 1000))
    strided = np.arange(2_000_000, dtype=np.float32)[::3]
    record = np.zeros(200_000, dtype=[("a", "i4"), ("b", "f8")])
    record["a"] = np.arange(200_000)
    for value in (fortran, strided, record, bytearray(b"x" * 300_000), b"y" * 300_000):
        got = rayipy.get(rayipy.put(value))
        if isinstance(value, np.ndarray):
            assert got.dtype == value.dtype and np.array_equal(got, value)
        else:
            assert got == value and type(got) is type(value)
    assert rayipy.get(total.remote(fortran.astype(np.float64))) == float(fortran.sum())


# -- lifetime ---------------------------------------------------------------------------------

DRIVER = textwrap.dedent("""
    import sys, numpy as np, rayipy
    from rayipy.core.object_ref import current_runtime
    rayipy.init(num_cpus=1)
    ref = rayipy.put(np.ones(1_000_000))
    print(current_runtime().access.store().arena.path, flush=True)
    sys.stdin.read()
""")


def test_a_killed_driver_leaves_no_arena_behind(tmp_path):
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        path = driver.stdout.readline().strip()
        assert path and os.path.exists(path)
        assert os.stat(path).st_mode & 0o777 == 0o600
        family = psutil.Process(driver.pid).children(recursive=True)
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
        wait_until(lambda: not os.path.exists(path), timeout=20,
                   message=f"{path} stayed after its driver was killed")
        psutil.wait_procs(family, timeout=20)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for process in psutil.Process().children(recursive=True):
            process.kill()
