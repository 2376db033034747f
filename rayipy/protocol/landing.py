"""Landing memory for large received buffers, used again once nothing refers to it.
(Also where ``serialization.dumps`` copies the large buffers of a value handed over: the
same memory, with the same reasons to reuse it.)

A large message's pieces are copied into one buffer per out-of-band pickle buffer
(``bulk.Assembler``), and the user's value (a numpy array, say) is built on top of that
memory without a copy. Fresh memory costs: the kernel hands out zeroed pages, one fault per
4 KiB page, and zeroing 100 MB takes about as long here as the copy that fills it
(10-15 ms, a tenth of the whole transfer); in a virtual machine whose free memory goes
back to the host, a first touch costs far more (235 ms per 100 MB measured here). Memory
given back to the kernel is fresh again next time, so a process that receives large
values over and over would pay for it every time.

So large landing buffers come from a pool of anonymous private mappings. Each is lent
as a ``memoryview``; everything built on it (numpy arrays, other views) holds a
reference to the mapping, directly or through the view. A mapping whose only remaining
reference is the pool's is unused, and the next transfer of the same size class takes
it again without touching the kernel. Unused mappings are released after
``KEEP_SECONDS``, and at most ``KEEP_BYTES`` of them are kept, so a process that stops
receiving gives its memory back within seconds.

The check is on CPython's reference count (``sys.getrefcount``): a mapping is reused
only when no object anywhere refers to it, whatever kind of view, array or buffer
export was made of it. One pool per process (``POOL``); any thread may call it.
"""

from __future__ import annotations

import mmap
import sys
import threading
import time
from typing import Callable

POOLED_BYTES = 2**20          # smaller buffers come from the allocator as before
SIZE_CLASS = 2 * 2**20        # sizes round up to this (a huge page): untouched tails cost
                              # address space only, and near sizes share mappings
KEEP_BYTES = 512 * 2**20      # unused mappings kept at most, in all
KEEP_SECONDS = 10.0           # an unused mapping is released after this long


class _Mapping:
    __slots__ = ("memory", "size", "unused_since")

    def __init__(self, size: int) -> None:
        if hasattr(mmap, "MAP_PRIVATE"):
            self.memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
        else:   # Windows: anonymous memory without flags
            self.memory = mmap.mmap(-1, size)
        if hasattr(self.memory, "madvise") and hasattr(mmap, "MADV_HUGEPAGE"):
            # Fewer page faults on first use: 2 MB pages where the kernel allows them.
            self.memory.madvise(mmap.MADV_HUGEPAGE)
        self.size = size
        self.unused_since: float | None = None


def _references(mapping: _Mapping) -> int:
    return sys.getrefcount(mapping.memory)


_UNUSED_REFERENCES = _references(_Mapping(mmap.PAGESIZE))   # the pool's own, and the call's


def size_class(nbytes: int) -> int:
    return -(-nbytes // SIZE_CLASS) * SIZE_CLASS


class LandingPool:
    """Lends writable memory of at least ``nbytes``; takes it back when it is unused."""

    def __init__(self, keep_bytes: int = KEEP_BYTES, keep_seconds: float = KEEP_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.keep_bytes = keep_bytes
        self.keep_seconds = keep_seconds
        self._clock = clock
        self._mappings: dict[int, list[_Mapping]] = {}   # size class -> lent or unused
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> memoryview:
        """A writable buffer of exactly ``nbytes``, its contents undefined."""
        size = size_class(nbytes)
        with self._lock:
            now = self._clock()
            self._sweep(now)
            mapping = next((m for m in self._mappings.get(size, ())
                            if _references(m) == _UNUSED_REFERENCES), None)
            if mapping is None:
                mapping = _Mapping(size)
                self._mappings.setdefault(size, []).append(mapping)
            mapping.unused_since = None
            return memoryview(mapping.memory)[:nbytes]

    def trim(self) -> None:
        """Release what has been unused too long (callers do this now and then)."""
        with self._lock:
            self._sweep(self._clock())

    def _sweep(self, now: float) -> None:
        unused: list[tuple[float, _Mapping]] = []   # (unused since, mapping)
        for mappings in self._mappings.values():
            for mapping in mappings:
                if _references(mapping) != _UNUSED_REFERENCES:
                    mapping.unused_since = None
                    continue
                if mapping.unused_since is None:
                    mapping.unused_since = now
                unused.append((mapping.unused_since, mapping))
        unused.sort(key=lambda pair: pair[0], reverse=True)   # the newest kept first
        kept = 0
        for since, mapping in unused:
            if now - since < self.keep_seconds and kept + mapping.size <= self.keep_bytes:
                kept += mapping.size
            else:
                self._release(mapping)

    def _release(self, mapping: _Mapping) -> None:
        mappings = self._mappings[mapping.size]
        mappings.remove(mapping)
        if not mappings:
            del self._mappings[mapping.size]
        mapping.memory.close()

    def held_bytes(self) -> tuple[int, int]:
        """(bytes lent out, bytes kept unused), for tests and diagnostics."""
        with self._lock:
            lent = unused = 0
            for mappings in self._mappings.values():
                for mapping in mappings:
                    if _references(mapping) == _UNUSED_REFERENCES:
                        unused += mapping.size
                    else:
                        lent += mapping.size
            return lent, unused


POOL = LandingPool()


def buffer(nbytes: int) -> memoryview:
    """A writable buffer of ``nbytes`` bytes (format "B") for received bytes to land in,
    contents undefined: from ``POOL`` when large, else fresh memory that is not zeroed
    first."""
    if nbytes >= POOLED_BYTES:
        return POOL.take(nbytes)
    return _uninitialized(nbytes)


def _uninitialized(nbytes: int) -> memoryview:
    """numpy's ``empty``, which unlike ``bytearray(n)`` does not write n zeros first;
    without numpy (it is there whenever large arrays travel), a bytearray."""
    try:
        import numpy
    except ImportError:
        return memoryview(bytearray(nbytes))
    return numpy.empty(nbytes, dtype=numpy.uint8).data
