"""Unit tests of rayipy.node.shm: the node's arena file, its pages, and views on it.

Arenas go in ``tmp_path`` except in the one test that needs a real tmpfs (/dev/shm);
every arena a test makes is closed and removed by the ``arenas`` fixture, and the one
child process is killed by the test that starts it."""

from __future__ import annotations

import ctypes
import fcntl
import gc
import logging
import mmap
import os
import pickle
import re
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from rayipy.node import shm
from rayipy.node.shm import Arena

KB = 1024
NAME = re.compile(r"rayipy-arena-[0-9a-f]{32}")
CHILD_DEADLINE_SECONDS = 20.0


@pytest.fixture
def arenas():
    """Makes arenas and always closes (and, for owners, removes) them."""
    made: list[Arena] = []

    def create(size: int = 64 * KB, directory: str | Path | None = None) -> Arena:
        arena = Arena.create(size, None if directory is None else str(directory))
        made.append(arena)
        return arena

    def open_(path: str, size: int) -> Arena:
        arena = Arena.open(path, size)
        made.append(arena)
        return arena

    create.open = open_  # type: ignore[attr-defined]
    yield create
    for arena in reversed(made):
        arena.close()
        if arena.owner:
            arena.unlink()


def lock_is_held(path: str) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def address(view) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


# choose_directory

def test_choose_directory_takes_the_environment_variable_as_given(monkeypatch, caplog):
    monkeypatch.setenv("RAYIPY_STORE_DIR", "/somewhere/else")
    assert shm.choose_directory(10**15) == "/somewhere/else"
    assert not caplog.records


def test_choose_directory_takes_shm_when_it_has_room(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("RAYIPY_STORE_DIR", raising=False)
    monkeypatch.setattr(shm, "SHM_DIRECTORY", str(tmp_path))
    assert shm.choose_directory(KB) == str(tmp_path)
    monkeypatch.setenv("RAYIPY_STORE_DIR", "")   # empty: as if unset
    assert shm.choose_directory(KB) == str(tmp_path)
    assert not caplog.records


def test_choose_directory_falls_back_with_a_warning_when_shm_is_too_small(
        monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("RAYIPY_STORE_DIR", raising=False)
    monkeypatch.setattr(shm, "SHM_DIRECTORY", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="rayipy.node.shm"):
        assert shm.choose_directory(2**62) == tempfile.gettempdir()
    [record] = caplog.records
    message = record.getMessage()
    assert f"{tmp_path} has " in message and f"needs {2**62}" in message, message
    assert "slower" in message and "RAYIPY_STORE_DIR" in message, message


def test_choose_directory_falls_back_with_a_warning_without_shm(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("RAYIPY_STORE_DIR", raising=False)
    monkeypatch.setattr(shm, "SHM_DIRECTORY", str(tmp_path / "missing"))
    with caplog.at_level(logging.WARNING, logger="rayipy.node.shm"):
        assert shm.choose_directory(KB) == tempfile.gettempdir()
    [record] = caplog.records
    assert "missing does not exist" in record.getMessage()
    assert "slower" in record.getMessage()


def test_choose_directory_refuses_a_negative_size():
    with pytest.raises(ValueError, match="negative size"):
        shm.choose_directory(-1)


# create and open

def test_create_makes_a_private_sparse_locked_file(arenas, tmp_path):
    arena = arenas(8 * 2**20, tmp_path)
    assert os.path.dirname(arena.path) == str(tmp_path)
    assert NAME.fullmatch(os.path.basename(arena.path)), arena.path
    status = os.stat(arena.path)
    assert stat.S_IMODE(status.st_mode) == 0o600
    assert status.st_size == arena.size == 8 * 2**20
    assert status.st_blocks * 512 < 2**20        # sparse: no pages yet
    assert arena.owner
    assert lock_is_held(arena.path)
    arena.close()
    assert not lock_is_held(arena.path)


def test_create_uses_the_directory_chosen(arenas, monkeypatch, tmp_path):
    monkeypatch.setenv("RAYIPY_STORE_DIR", str(tmp_path))
    assert os.path.dirname(arenas().path) == str(tmp_path)


def test_create_gives_each_arena_its_own_name(arenas, tmp_path):
    assert arenas(directory=tmp_path).path != arenas(directory=tmp_path).path


def test_create_refuses_a_size_that_is_not_positive(tmp_path):
    with pytest.raises(ValueError, match="positive size"):
        Arena.create(0, str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_open_maps_the_same_bytes_without_the_lock(arenas, tmp_path):
    owner = arenas(64 * KB, tmp_path)
    client = arenas.open(owner.path, owner.size)
    assert not client.owner
    view = owner.writable(100, 5)
    view[:] = b"hello"
    view.release()
    assert bytes(client.pinned(100, 5, lambda: None)) == b"hello"
    client.close()
    assert lock_is_held(owner.path)    # a client's close leaves the owner's lock alone


def test_open_refuses_a_file_of_another_size(arenas, tmp_path):
    owner = arenas(64 * KB, tmp_path)
    with pytest.raises(ValueError, match=f"is {64 * KB} bytes long, not the {32 * KB}"):
        Arena.open(owner.path, 32 * KB)


def test_open_of_a_missing_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError):
        Arena.open(str(tmp_path / "rayipy-arena-gone"), KB)


# commit

def test_commit_makes_the_pages_exist(arenas, tmp_path):
    arena = arenas(16 * 2**20, tmp_path)
    before = os.stat(arena.path).st_blocks * 512
    arena.commit(2**20, 5 * 2**20)
    assert os.stat(arena.path).st_blocks * 512 - before >= 4 * 2**20
    arena.commit(2**20, 5 * 2**20)       # again: nothing to do
    arena.commit(7, 7)                   # empty: nothing to do


def test_commit_refuses_a_range_outside_and_a_client(arenas, tmp_path):
    owner = arenas(64 * KB, tmp_path)
    with pytest.raises(ValueError, match="not inside the arena"):
        owner.commit(0, 64 * KB + 1)
    with pytest.raises(ValueError, match="not inside the arena"):
        owner.commit(10, 5)
    with pytest.raises(PermissionError, match="owner"):
        arenas.open(owner.path, owner.size).commit(0, KB)


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm")
def test_commit_beyond_what_shm_holds_is_a_memory_error(arenas):
    """On the real tmpfs: an arena larger than /dev/shm is fine while sparse, and
    committing all of it is a MemoryError naming the directory, not a SIGBUS later."""
    status = os.statvfs("/dev/shm")
    size = status.f_blocks * status.f_frsize + 2**30
    arena = arenas(size, "/dev/shm")
    with pytest.raises(MemoryError, match=f"could not reserve {size} bytes in /dev/shm"):
        arena.commit(0, size)


# writable and pinned

def test_writable_refuses_a_range_outside(arenas, tmp_path):
    arena = arenas(64 * KB, tmp_path)
    with pytest.raises(ValueError, match="not inside the arena"):
        arena.writable(64 * KB - 4, 5)
    with pytest.raises(ValueError, match="not inside the arena"):
        arena.writable(-1, 1)
    assert arena.writable(64 * KB, 0).nbytes == 0


def test_pinned_is_read_only_and_released_once_when_its_last_view_goes(arenas, tmp_path):
    arena = arenas(64 * KB, tmp_path)
    released: list[str] = []
    view = arena.pinned(4 * KB, 100, lambda: released.append("a"))
    assert view.readonly and view.nbytes == 100 and view.format == "B"
    with pytest.raises(TypeError):
        view[0] = 1
    part = view[10:20]
    del view
    gc.collect()
    assert released == []                # a slice still holds it
    del part
    assert released == ["a"]
    gc.collect()
    assert released == ["a"]


def test_each_pin_of_the_same_bytes_is_released_on_its_own(arenas, tmp_path):
    arena = arenas(64 * KB, tmp_path)
    released: list[int] = []
    first = arena.pinned(0, 100, lambda: released.append(1))
    second = arena.pinned(0, 100, lambda: released.append(2))
    del first
    assert released == [1]
    del second
    assert released == [1, 2]


def test_a_numpy_array_on_a_pin_is_read_only_zero_copy_and_holds_the_pin(arenas, tmp_path):
    arena = arenas(2**20, tmp_path)
    values = np.arange(10_000, dtype=np.float64)
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(values, protocol=5, buffer_callback=buffers.append)
    raw = buffers[0].raw()
    target = arena.writable(64 * KB, raw.nbytes)
    target[:] = raw
    target.release()
    released: list[bool] = []
    array = pickle.loads(data, buffers=[arena.pinned(64 * KB, raw.nbytes,
                                                     lambda: released.append(True))])
    assert np.array_equal(array, values)
    assert not array.flags.writeable
    with pytest.raises(ValueError):
        array[0] = 1.0
    assert arena.contains_address(array.ctypes.data)
    assert arena.contains_address(array.ctypes.data + array.nbytes - 1)
    gc.collect()
    assert released == []
    del array
    assert released == [True]


def test_on_release_runs_in_the_thread_where_the_last_view_dies(arenas, tmp_path):
    arena = arenas(64 * KB, tmp_path)
    threads: list[int] = []
    views = [arena.pinned(0, 10, lambda: threads.append(threading.get_ident()))]

    def drop() -> None:
        views.clear()

    worker = threading.Thread(target=drop)
    worker.start()
    worker.join(CHILD_DEADLINE_SECONDS)
    assert threads == [worker.ident]


def test_contains_address_covers_exactly_the_mapping(arenas, tmp_path):
    arena = arenas(64 * KB, tmp_path)
    with arena.writable(0, arena.size) as whole:
        base = address(whole)
    assert arena.contains_address(base)
    assert arena.contains_address(base + arena.size - 1)
    assert not arena.contains_address(base + arena.size)
    assert not arena.contains_address(base - 1)


# close and unlink

def test_close_with_views_alive_leaves_them_readable_and_frees_the_lock(arenas, tmp_path):
    arena = arenas(64 * KB, tmp_path)
    with arena.writable(0, 3) as target:
        target[:] = b"abc"
    released: list[bool] = []
    view = arena.pinned(0, 3, lambda: released.append(True))
    arena.close()                        # BufferError inside: the mapping outlives it
    arena.close()                        # again: nothing to do
    assert not lock_is_held(arena.path)
    assert bytes(view) == b"abc"
    with pytest.raises(ValueError, match="closed"):
        arena.pinned(0, 3, lambda: None)
    del view
    assert released == [True]


def test_unlink_removes_the_file_and_only_the_owner_may(arenas, tmp_path):
    owner = arenas(64 * KB, tmp_path)
    client = arenas.open(owner.path, owner.size)
    with pytest.raises(PermissionError, match="owner"):
        client.unlink()
    owner.unlink()
    assert not os.path.exists(owner.path)
    owner.unlink()                       # already gone: fine
    with client.writable(0, 2) as target:    # the mappings stay valid
        target[:] = b"ok"


# sweep_stale

CHILD = """
import sys
from rayipy.node.shm import Arena
arena = Arena.create(1 << 20, sys.argv[1])
print(arena.path, flush=True)
sys.stdin.read()
"""


def test_sweep_removes_the_arena_of_a_killed_owner_and_not_a_live_one(arenas, tmp_path):
    live = arenas(64 * KB, tmp_path)
    root = str(Path(__file__).resolve().parents[2])
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": root})
    try:
        path = child.stdout.readline().strip()
        assert NAME.fullmatch(os.path.basename(path)), path
        assert shm.sweep_stale(str(tmp_path)) == []     # both owners alive
        child.send_signal(signal.SIGKILL)
        assert child.wait(CHILD_DEADLINE_SECONDS) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
        child.stdout.close()
    assert os.path.exists(path)          # nobody removed it at death
    assert shm.sweep_stale(str(tmp_path)) == [path]
    assert not os.path.exists(path)
    assert os.path.exists(live.path)
    assert shm.sweep_stale(str(tmp_path)) == []


def test_sweep_removes_a_closed_arena_but_nothing_else(arenas, tmp_path, monkeypatch):
    dead = arenas(64 * KB, tmp_path)
    dead.close()
    other = tmp_path / "not-an-arena"
    other.write_bytes(b"x")
    link = tmp_path / ("rayipy-arena-" + "0" * 32)
    link.symlink_to(other)
    young_empty = tmp_path / ("rayipy-arena-" + "1" * 32)
    young_empty.touch()                  # its owner may be about to lock it
    assert shm.sweep_stale(str(tmp_path)) == [dead.path]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [other.name, link.name, young_empty.name])
    monkeypatch.setattr(shm, "EMPTY_ARENA_GRACE_SECONDS", 0.0)
    assert shm.sweep_stale(str(tmp_path)) == [str(young_empty)]


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a file to another user")
def test_sweep_leaves_the_arenas_of_other_users(tmp_path):
    theirs = tmp_path / ("rayipy-arena-" + "2" * 32)
    theirs.write_bytes(b"x" * 100)       # unlocked: its owner is gone
    os.chown(theirs, 65534, 65534)
    assert shm.sweep_stale(str(tmp_path)) == []
    assert theirs.exists()


def test_sweep_by_default_looks_in_shm_the_temp_dir_and_the_store_dir(monkeypatch, tmp_path):
    found = []
    for name in ("shm", "temp", "store"):
        directory = tmp_path / name
        directory.mkdir()
        arena = Arena.create(KB, str(directory))
        arena.close()
        found.append(arena.path)
    monkeypatch.setattr(shm, "SHM_DIRECTORY", str(tmp_path / "shm"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    monkeypatch.setenv("RAYIPY_STORE_DIR", str(tmp_path / "store"))
    assert shm.sweep_stale() == found


def test_the_stores_own_reads_are_read_only_views_of_the_mapping(tmp_path):
    arena = Arena.create(2 * mmap.PAGESIZE, str(tmp_path))
    try:
        arena.writable(0, 5)[:] = b"hello"
        view = arena.readable(0, 5)
        assert bytes(view) == b"hello" and view.readonly
        with pytest.raises(TypeError):
            view[0] = 0
        del view
    finally:
        arena.close()
        arena.unlink()
