"""The node's shared-memory arena: one file, mapped whole by every process on the host.

```
 node agent (owner)                       driver / worker (clients)
 Arena.create: file, flock, mmap           Arena.open: mmap of the same file
   commit(start, end): pages for real        writable(offset, size): fill an object
   (allocator: the agent's, not here)        pinned(offset, size, on_release): read it
                 \\                           /
                  /dev/shm/rayipy-arena-<32 hex>   (else the temp dir, slower)
```

This module owns the file and the views on it, nothing else: which bytes belong to which
object is the agent's allocator's business, and how a value is laid out in its bytes is
``rayipy.protocol.store_layout``'s.

The file has an unguessable name and mode 0600, so only this user's processes that were
told its name can map it. The owner holds an exclusive ``flock`` on it for as long as it
lives; the kernel drops that lock when the owner dies, however it dies, which is how
``sweep_stale`` tells an abandoned arena from a live one (the same idea as Ray's plasma
store, which leaves its files to die with the process instead). The file is sparse: its
pages cost nothing until ``commit`` reserves them, and a value is read where it was
written, as read-only views whose release is reported back (``pinned``), so the owner
knows when an object's bytes may be reused.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import mmap
import os
import secrets
import stat
import tempfile
import time
import weakref
from typing import Callable

log = logging.getLogger(__name__)

ARENA_PREFIX = "rayipy-arena-"
STORE_DIR_VARIABLE = "RAYIPY_STORE_DIR"   # a directory for arenas, used as given
SHM_DIRECTORY = "/dev/shm"
# An unlocked, still empty arena may be one whose owner is between creating and locking
# it (microseconds); only one older than this is taken as abandoned.
EMPTY_ARENA_GRACE_SECONDS = 60.0


def choose_directory(nbytes: int) -> str:
    """Where an arena of ``nbytes`` goes: ``$RAYIPY_STORE_DIR`` if set (and not empty),
    else /dev/shm when it has room, else the temp dir (with a warning: reads from a
    disk-backed file are slower, as Ray warns too)."""
    if nbytes < 0:
        raise ValueError(f"an arena cannot have a negative size ({nbytes} bytes)")
    override = os.environ.get(STORE_DIR_VARIABLE)
    if override:
        return override
    if os.path.isdir(SHM_DIRECTORY):
        status = os.statvfs(SHM_DIRECTORY)
        free = status.f_bavail * status.f_frsize
        if free >= nbytes:
            return SHM_DIRECTORY
        why = f"{SHM_DIRECTORY} has {free} bytes free and the object store needs {nbytes}"
    else:
        why = f"{SHM_DIRECTORY} does not exist"
    fallback = tempfile.gettempdir()
    log.warning("%s, so the object store goes in %s instead, where reading objects will be "
                "slower (set %s to choose the directory, or give /dev/shm more room)",
                why, fallback, STORE_DIR_VARIABLE)
    return fallback


class Arena:
    """One mapped arena file. ``create`` makes it (the node's agent, its owner); ``open``
    maps an existing one (drivers and workers on the same host)."""

    path: str
    size: int

    def __init__(self, path: str, size: int, fd: int, owner: bool) -> None:
        """Use ``create`` or ``open``: this takes over an open ``fd`` of ``size`` bytes."""
        self.path = path
        self.size = size
        self._fd = fd
        self._owner = owner
        self._closed = False
        self._mmap = mmap.mmap(fd, size, flags=mmap.MAP_SHARED,
                               prot=mmap.PROT_READ | mmap.PROT_WRITE)
        probe = ctypes.c_char.from_buffer(self._mmap)
        self._base = ctypes.addressof(probe)
        del probe   # it is an export of the mapping: close() would refuse while it lived

    @classmethod
    def create(cls, size: int, directory: str | None = None) -> Arena:
        """A new arena of ``size`` bytes in ``directory`` (default ``choose_directory``),
        locked by this process until ``close`` or its death. (A child forked without
        exec shares the lock: the arena then counts as alive until that child exits.)"""
        if size <= 0:
            raise ValueError(f"an arena needs a positive size, not {size} bytes")
        where = choose_directory(size) if directory is None else directory
        path = os.path.join(where, ARENA_PREFIX + secrets.token_hex(16))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            # Locked before it has a size: sweep_stale leaves young empty files alone,
            # so it never takes this lock first (see EMPTY_ARENA_GRACE_SECONDS).
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, size)
            return cls(path, size, fd, owner=True)
        except BaseException:
            os.close(fd)
            _unlink_quietly(path)
            raise

    @classmethod
    def open(cls, path: str, size: int) -> Arena:
        """Map the existing arena at ``path``, which must be ``size`` bytes long."""
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            actual = os.fstat(fd).st_size
            if actual != size:
                raise ValueError(f"the arena {path} is {actual} bytes long, not the {size} "
                                 f"expected: is it another node's, or a stale one?")
            return cls(path, size, fd, owner=False)
        except BaseException:
            os.close(fd)
            raise

    @property
    def owner(self) -> bool:
        """Whether this process created the arena (and holds its lock)."""
        return self._owner

    def commit(self, start: int, end: int) -> None:
        """Make the pages of [start, end) exist, so that writing them can never fail.

        In a sparse tmpfs file, a write into a hole allocates the page at that moment; if
        /dev/shm is full then, the writer gets SIGBUS and dies. ``posix_fallocate`` takes
        the pages now, where running out is a ``MemoryError`` that says so. Pages that
        already exist are left as they are.

        Measured here (Linux 6.18 VM, 2 cores, 4 KiB tmpfs pages: no huge pages for
        shmem; ``benchmarks/arena_commit.py``), per 100 MiB:
        - commit(): 7 ms the first time (tmpfs takes the pages but zeroes them only at
          first touch), 1.2 ms once they are in use (nothing to do);
        - a writer's first write into a sparse region: 50 ms (allocate, zero and map,
          one fault per 4 KiB page); into a committed one: 36-43 ms; into pages in use
          before but not yet mapped by this process: 35-37 ms; a rewrite of pages it has
          mapped: 13.5-14 ms (the copy alone). The faults are the writer's own page
          tables, so zeroing the pages in the owner at commit time (20 ms more there)
          leaves the writer's first write at 35 ms: not done.
        - ``writable`` therefore maps its pages first with MADV_POPULATE_WRITE: first
          writes take 43 ms (sparse), 33-35 ms (committed), 19 ms (in use before), and
          a rewrite of mapped pages 18 ms (the page-table walk). 128 KiB: 20 us first
          (43 without), 18 again (13). MAP_POPULATE is of no use: on a shared mapping it
          allocates every page it maps (40-260 ms per 100 MiB of a sparse region here),
          so the whole arena at every map.
        """
        self._check_range(start, end - start)
        if not self._owner:
            raise PermissionError(f"only the arena's owner commits its pages ({self.path})")
        if end == start:
            return   # posix_fallocate refuses an empty range
        try:
            os.posix_fallocate(self._fd, start, end - start)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            directory = os.path.dirname(self.path)
            raise MemoryError(
                f"the object store could not reserve {end - start} bytes in {directory}: "
                f"it is full (free space or release objects, or start the node with a "
                f"smaller object store)") from None

    def writable(self, offset: int, size: int) -> memoryview:
        """A writable byte view of [offset, offset + size), for a writer filling it.

        Its pages are mapped into this process first, in one call (MADV_POPULATE_WRITE,
        Linux 5.14+; nothing where the kernel lacks it): a first write then takes half
        as long, a rewrite a quarter longer (figures in ``commit``). Pages not committed
        are allocated here, so a full directory is a ``MemoryError``, not a SIGBUS.
        """
        self._check_range(offset, size)
        self._populate(offset, size)
        return memoryview(self._mmap)[offset:offset + size]

    def readable(self, offset: int, size: int) -> memoryview:
        """A read-only byte view of [offset, offset + size), not pinned: for the store
        itself, which knows the object stays put while it reads (a spill, a transfer)."""
        self._check_range(offset, size)
        return memoryview(self._mmap)[offset:offset + size].toreadonly()

    def _populate(self, offset: int, size: int) -> None:
        global _populate_write_works
        if size == 0 or not _populate_write_works:
            return
        start = offset - offset % mmap.PAGESIZE
        try:
            self._mmap.madvise(MADV_POPULATE_WRITE, start, offset + size - start)
        except OSError as e:
            if e.errno == errno.EINVAL:   # a kernel before 5.14
                _populate_write_works = False
            elif e.errno in (errno.EFAULT, errno.ENOMEM):   # the fault would be a SIGBUS
                raise MemoryError(
                    f"the object store could not back {size} bytes at {offset} of "
                    f"{self.path}: its directory is full") from None
            else:
                raise

    def pinned(self, offset: int, size: int, on_release: Callable[[], None]) -> memoryview:
        """A read-only byte view of [offset, offset + size); ``on_release()`` runs once,
        when that view and everything built on it (slices, numpy arrays) are gone.

        Each call exports the mapping through a fresh ctypes array, so each pin is
        released on its own. ``on_release`` runs wherever the last reference dies: in any
        thread, inside any allocation (the garbage collector), so it must only queue the
        release (a deque append), never lock, send or allocate much. It is not run at
        interpreter exit for views still alive then.
        """
        self._check_range(offset, size)
        holder = (ctypes.c_char * size).from_buffer(self._mmap, offset)
        weakref.finalize(holder, on_release).atexit = False
        return memoryview(holder).cast("B").toreadonly()

    def contains_address(self, address: int) -> bool:
        """Whether ``address`` lies in this mapping (to show that a read copied nothing)."""
        return self._base <= address < self._base + self.size

    def close(self) -> None:
        """Unmap and close; the owner also gives up its lock. Views still in use keep the
        mapping alive until they are gone (it is unmapped then, by the garbage collector)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._owner:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            try:
                self._mmap.close()
            except BufferError:
                pass   # views are still exported: the mapping outlives this Arena
        finally:
            os.close(self._fd)

    def unlink(self) -> None:
        """Remove the file (owner only); the mappings of it stay valid until closed."""
        if not self._owner:
            raise PermissionError(f"only the arena's owner removes it ({self.path})")
        _unlink_quietly(self.path)

    def __enter__(self) -> Arena:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        role = "owner" if self._owner else "client"
        state = ", closed" if self._closed else ""
        return f"<Arena {self.path} {self.size} bytes, {role}{state}>"

    def _check_range(self, offset: int, size: int) -> None:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ValueError(f"the range of {size} bytes at {offset} is not inside the "
                             f"arena of {self.size} bytes")
        if self._closed:
            raise ValueError(f"the arena {self.path} is closed")


MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)   # Linux 5.14
_populate_write_works = hasattr(mmap.mmap, "madvise")   # until the kernel says EINVAL


def sweep_stale(directory: str | None = None) -> list[str]:
    """Remove the arenas whose owner is gone from ``directory`` (default: /dev/shm, the
    temp dir and ``$RAYIPY_STORE_DIR``); returns their paths.

    An arena is ours if it is named like one, is a regular file and belongs to this
    user; its owner is gone if nobody holds its lock. An empty unlocked one is taken only
    when older than ``EMPTY_ARENA_GRACE_SECONDS``, as its owner may be about to lock it.
    """
    if directory is not None:
        directories = [directory]
    else:
        directories = [SHM_DIRECTORY, tempfile.gettempdir()]
        override = os.environ.get(STORE_DIR_VARIABLE)
        if override:
            directories.append(override)
    removed: list[str] = []
    seen: set[str] = set()
    for where in directories:
        real = os.path.realpath(where)
        if real in seen or not os.path.isdir(real):
            continue
        seen.add(real)
        for name in sorted(os.listdir(real)):
            path = os.path.join(where, name)
            if name.startswith(ARENA_PREFIX) and _remove_if_abandoned(path):
                removed.append(path)
    return removed


def _remove_if_abandoned(path: str) -> bool:
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(before.st_mode) or before.st_uid != os.getuid():
        return False
    if before.st_size == 0 and time.time() - before.st_ctime < EMPTY_ARENA_GRACE_SECONDS:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False   # gone, or not ours to open after all
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False   # its owner is alive
        try:
            now = os.lstat(path)
        except FileNotFoundError:
            return False   # another sweeper got there first
        if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
            return False
        os.unlink(path)
        log.info("removed the object store arena %s: its owner is gone", path)
        return True
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
