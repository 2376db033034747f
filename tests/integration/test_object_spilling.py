"""The object store's budget: objects spill to disk and come back, and a value that
cannot fit is refused with the reason (``rayipy/core/store_state.py``)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import rayipy
from helpers import local_store, wait_until
from rayipy.exceptions import ObjectStoreFullError

MB = 2**20




@rayipy.remote
def make(n_mb, value=7.0):
    return np.full(n_mb * MB // 8, value)


@rayipy.remote
def total(array):
    return float(array.sum())


def test_over_the_budget_objects_spill_and_come_back(fresh_cluster, tmp_path):
    spill = tmp_path / "spill"
    config = {"object_spilling_config": json.dumps(
        {"type": "filesystem", "params": {"directory_path": str(spill)}})}
    fresh_cluster(object_store_memory=50 * MB, _system_config=config)
    refs = [rayipy.put(np.full(10 * MB // 8, float(i))) for i in range(12)]   # 120 MB
    summary, _ = local_store().listing()
    assert summary["used"] <= 50 * MB and summary["spilled_objects"] >= 7
    spilled_files = list(spill.rglob("*"))
    assert sum(1 for p in spilled_files if p.is_file()) == summary["spilled_objects"]
    for i, ref in enumerate(refs):
        assert float(rayipy.get(ref)[0]) == float(i)
    assert rayipy.get([total.remote(r) for r in refs[:3]]) == [
        float(i * (10 * MB // 8)) for i in range(3)]
    del refs
    wait_until(lambda: not [p for p in spill.rglob("*") if p.is_file()],
               message="spill files stayed after their objects were freed")


def test_a_put_larger_than_the_store_says_so_and_loses_nothing(fresh_cluster):
    fresh_cluster(object_store_memory=20 * MB)
    kept = rayipy.put(np.ones(4 * MB // 8))
    with pytest.raises(ObjectStoreFullError, match=r"30\.0 MiB.*object_store_memory"):
        rayipy.put(np.ones(30 * MB // 8))
    with pytest.raises(ObjectStoreFullError):
        rayipy.get(make.remote(30))
    assert float(rayipy.get(kept).sum()) == float(4 * MB // 8)
    assert rayipy.get(total.remote(kept)) == float(4 * MB // 8)


def test_a_full_store_whose_objects_are_all_read_says_what_holds_it(fresh_cluster):
    fresh_cluster(object_store_memory=20 * MB)
    ref = rayipy.put(np.ones(12 * MB // 8))
    view = rayipy.get(ref)      # read: it cannot spill
    with pytest.raises(ObjectStoreFullError, match="being read"):
        rayipy.put(np.ones(12 * MB // 8))
    del view


def test_object_store_memory_must_be_a_size(fresh_cluster):
    with pytest.raises(ValueError, match="object_store_memory"):
        rayipy.init(num_cpus=1, object_store_memory="1GB")
    with pytest.raises(ValueError, match="not supported"):
        rayipy.init(num_cpus=1, _system_config={"max_io_workers": 4})
    with pytest.raises(ValueError, match="one directory"):
        rayipy.init(num_cpus=1, _system_config={"object_spilling_config": json.dumps(
            {"type": "filesystem", "params": {"directory_path": ["/tmp/a", "/tmp/b"]}})})
    assert not rayipy.is_initialized()


def test_init_refuses_local_mode_and_runtime_env_saying_what_to_do(fresh_cluster):
    with pytest.raises(ValueError, match="local_mode=True is not supported.*num_cpus=1"):
        rayipy.init(num_cpus=1, local_mode=True)
    with pytest.raises(ValueError, match="conda environments are not supported.*'pip'"):
        rayipy.init(num_cpus=1, runtime_env={"conda": "environment.yml"})
    assert not rayipy.is_initialized()
    fresh_cluster(num_cpus=1, local_mode=False, runtime_env={})
    with pytest.raises(ValueError, match="container.*start the nodes inside"):
        total.options(runtime_env={"container": {"image": "x"}})


def test_shutdown_removes_the_arena(fresh_cluster):
    fresh_cluster(num_cpus=1)
    rayipy.put(np.ones(1_000_000))
    path = local_store().arena.path
    assert os.path.exists(path)
    rayipy.shutdown()
    assert not os.path.exists(path)


def test_a_reader_that_dies_holding_a_view_leaves_nothing_pinned(fresh_cluster):
    import signal
    fresh_cluster(num_cpus=1)

    @rayipy.remote(max_retries=0)
    def read_then_die(array):
        import os
        keep = array           # a view of the store, held as the process dies
        os.kill(os.getpid(), signal.SIGKILL)
        return keep

    ref = rayipy.put(np.ones(4 * MB // 8))
    key = ref.hex()
    with pytest.raises(rayipy.exceptions.WorkerCrashedError):
        rayipy.get(read_then_die.remote(ref))
    del ref

    def gone():
        _summary, objects = local_store().listing()
        return all(o["object_id"] != key for o in objects)
    wait_until(gone, message="the dead reader's pin kept the freed object in the store")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs to fill the disk")
def test_a_full_spill_disk_is_a_clear_error_and_the_objects_stay(fresh_cluster, tmp_path):
    import subprocess
    disk = tmp_path / "small"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        config = {"object_spilling_config": json.dumps(
            {"type": "filesystem", "params": {"directory_path": str(disk)}})}
        fresh_cluster(num_cpus=1, object_store_memory=20 * MB, _system_config=config)
        first = rayipy.put(np.full(8 * MB // 8, 1.0))
        second = rayipy.put(np.full(8 * MB // 8, 2.0))
        with pytest.raises(ObjectStoreFullError, match="spilling to .* failed"):
            rayipy.put(np.full(8 * MB // 8, 3.0))       # room only by spilling 8 MB
        assert float(rayipy.get(first)[0]) == 1.0 and float(rayipy.get(second)[-1]) == 2.0
        rayipy.shutdown()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
