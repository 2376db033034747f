#!/usr/bin/env python3
"""arena_commit.py -- what committing arena pages costs, and a writer's first touch.

    python benchmarks/arena_commit.py [--mib 100] [--reps 3]

Per region of --mib MiB, in an arena in /dev/shm (or $RAYIPY_STORE_DIR), with the owner
and a writer as two mappings of the file (each has its own page tables, as two
processes do), milliseconds for:

  commit fresh / again      Arena.commit (posix_fallocate) of new pages, then again
  write: sparse             a writer's first write into pages never committed
  write: committed          ... into pages committed, never touched
  write: used before        ... into pages another mapping has written
  write: mapped             a rewrite of pages this mapping has written
  ... + populate            the same with MADV_POPULATE_WRITE first (what writable() does)
  MAP_POPULATE sparse map   mapping a sparse region with MAP_POPULATE, and what it allocates

The figures in ``rayipy.node.shm.Arena.commit``'s docstring come from this script.
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import time
from typing import Callable

from rayipy.node import shm
from rayipy.node.shm import Arena


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    size = args.mib * 2**20
    source = bytes(bytearray(os.urandom(4096)) * (size // 4096))
    figures: dict[str, list[float]] = {}

    def timed(name: str, action: Callable[[], object]) -> None:
        start = time.perf_counter()
        action()
        figures.setdefault(name, []).append((time.perf_counter() - start) * 1000)

    def write(arena: Arena, offset: int, populate: bool) -> None:
        if populate:
            arena._populate(offset, size)   # what writable() does first
        with memoryview(arena._mmap)[offset:offset + size] as target:
            target[:] = source

    for _ in range(args.reps):
        owner = Arena.create(12 * size, shm.choose_directory(12 * size))
        writer = Arena.open(owner.path, owner.size)
        other = Arena.open(owner.path, owner.size)
        try:
            region = [i * size for i in range(12)]
            timed("commit fresh", lambda: owner.commit(region[0], region[0] + size))
            for populate, suffix in ((False, ""), (True, " + populate")):
                base = 6 if populate else 0
                timed("write: sparse" + suffix, lambda: write(writer, region[base + 1], populate))
                owner.commit(region[base + 2], region[base + 2] + size)
                timed("write: committed" + suffix,
                      lambda: write(writer, region[base + 2], populate))
                write(other, region[base + 3], False)
                timed("write: used before" + suffix,
                      lambda: write(writer, region[base + 3], populate))
                timed("write: mapped" + suffix, lambda: write(writer, region[base + 3], populate))
            timed("commit again", lambda: owner.commit(region[3], region[3] + size))
            fd = os.open(owner.path, os.O_RDWR)
            try:
                before = os.fstat(fd).st_blocks * 512
                timed("MAP_POPULATE sparse map", lambda: mmap.mmap(
                    fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
                    offset=region[4]).close())
                allocated = (os.fstat(fd).st_blocks * 512 - before) / 2**20
                figures.setdefault("  (MiB it allocated)", []).append(allocated)
            finally:
                os.close(fd)
        finally:
            for arena in (other, writer, owner):
                arena.close()
            owner.unlink()
    print(f"per {args.mib} MiB, ms (median of {args.reps}, then each run)")
    for name, values in figures.items():
        runs = " ".join(f"{v:7.1f}" for v in values)
        print(f"{name:30s} {statistics.median(values):7.1f}   [{runs}]")


if __name__ == "__main__":
    main()
