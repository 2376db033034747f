"""Unit tests of rayipy.core.store_state: the allocator, and one node's store as events
in, commands out (no files, no sockets)."""

from __future__ import annotations

import random

from rayipy.core.store_state import (PAGE, Allocator, Pull, RemoveFile, Reply, Restore, Spill,
                                     State, StoreState)

MB = 2**20
OWNER = b"O" * 8


def oid(n: int, owner: bytes = OWNER) -> bytes:
    return owner + n.to_bytes(8, "big") + b"\0\0"


def put(s: StoreState, n: int, size: int, client: int = 1, now: float = 0.0) -> list:
    """Create and seal, carrying out spills at once (as the store's shell does)."""
    while True:
        out = s.create(client, n, oid(n), size, OWNER, "site", now)
        spills = [c for c in out if isinstance(c, Spill)]
        if not spills:
            break
        for spill in spills:
            s.spilled(spill.object_id, f"/spill/{spill.object_id.hex()}", True, "")
    s.seal(oid(n), now)
    return out


# -- allocator -----------------------------------------------------------------------------
def test_allocator_reuses_the_lowest_pages_and_joins_free_neighbours():
    a = Allocator(10 * PAGE)
    x, y, z = a.allocate(PAGE), a.allocate(2 * PAGE), a.allocate(PAGE)
    assert (x, y, z) == (0, PAGE, 3 * PAGE)
    a.free(x)
    a.free(y)                              # joins x: 3 pages free at 0
    assert a.allocate(3 * PAGE) == 0
    assert a.used == 4 * PAGE and a.high_water == 4 * PAGE
    assert a.allocate(7 * PAGE) is None    # 6 left
    assert a.allocate(6 * PAGE) == 4 * PAGE


def test_allocator_random_allocations_never_overlap_and_all_comes_back():
    rng = random.Random(7)
    a = Allocator(256 * PAGE)
    held: dict[int, int] = {}
    for _ in range(3000):
        if held and rng.random() < 0.45:
            start = rng.choice(list(held))
            del held[start]
            a.free(start)
        else:
            size = rng.randint(1, 20 * PAGE)
            start = a.allocate(size)
            if start is not None:
                held[start] = a.rounded(size)
        spans = sorted(held.items())
        for (s1, n1), (s2, _) in zip(spans, spans[1:]):
            assert s1 + n1 <= s2
        assert all(s + n <= a.capacity for s, n in spans)
        assert a.used == sum(held.values())
    for start in list(held):
        a.free(start)
    assert a.used == 0 and a.largest_free() == a.capacity


# -- writing and reading ---------------------------------------------------------------
def test_create_seal_get_pins_and_a_freed_object_goes_when_its_last_reader_releases():
    s = StoreState(64 * MB)
    [reply] = s.create(1, 10, oid(1), 5 * MB, OWNER, "x.py:3", 0.0)
    assert reply.ok and reply.value == (0, 5 * MB)
    assert s.get(2, 11, oid(1), (), 0, 1.0) == []          # not sealed: waits
    assert s.seal(oid(1), 1.0) == [Reply(2, 11, True, (0, 5 * MB, False), object_id=oid(1))]
    assert s.get(3, 12, oid(1), (), 0, 2.0) == [Reply(3, 12, True, (0, 5 * MB, False), object_id=oid(1))]
    assert s.free([oid(1)]) == []                          # read by 2 and 3: stays
    assert s.alloc.used > 0
    s.release(2, [oid(1)])
    assert oid(1) in s.objects
    s.release(3, [oid(1)])
    assert oid(1) not in s.objects and s.alloc.used == 0
    [gone] = s.get(3, 13, oid(1), (), 0, 3.0)
    assert not gone.ok and gone.lost


def test_creating_an_object_already_there_keeps_the_first():
    s = StoreState(64 * MB)
    put(s, 1, MB)
    [reply] = s.create(2, 5, oid(1), MB, OWNER, "retry", 1.0)
    assert reply.ok and reply.value == (None, MB)


def test_an_object_larger_than_the_store_is_refused_with_the_sizes():
    s = StoreState(10 * MB)
    [reply] = s.create(1, 1, oid(1), 11 * MB, OWNER, "", 0.0)
    assert not reply.ok and "11.0 MiB" in reply.value and "object_store_memory" in reply.value
    assert s.objects == {}


def test_a_writer_that_goes_away_leaves_nothing_and_its_waiters_hear_why():
    s = StoreState(64 * MB)
    s.create(1, 1, oid(1), MB, OWNER, "", 0.0)
    s.get(2, 7, oid(1), (), 0, 0.0)
    [reply] = s.client_gone(1)
    assert reply.client == 2 and not reply.ok and "writer went away" in reply.value
    assert s.objects == {} and s.alloc.used == 0


def test_a_reader_that_dies_leaves_no_pin():
    s = StoreState(64 * MB)
    put(s, 1, MB)
    s.get(2, 1, oid(1), (), 0, 0.0)
    s.free([oid(1)])
    assert oid(1) in s.objects
    s.client_gone(2)
    assert oid(1) not in s.objects


def test_owner_gone_frees_its_objects_only():
    s = StoreState(64 * MB)
    put(s, 1, MB)
    other = b"P" * 8 + b"\0" * 10
    s.create(1, 2, other, MB, b"P" * 8, "", 0.0)
    s.seal(other, 0.0)
    s.owner_gone(OWNER)
    assert list(s.objects) == [other]


# -- pulls from other nodes ------------------------------------------------------------------
def test_concurrent_gets_of_a_remote_object_make_one_pull():
    s = StoreState(64 * MB)
    [pull] = s.get(1, 1, oid(1), ("tcp://10.0.0.2:5000",), 3 * MB, 0.0)
    assert pull == Pull(oid(1), ("tcp://10.0.0.2:5000",), 0, 3 * MB)
    assert s.get(2, 2, oid(1), ("tcp://10.0.0.2:5000",), 3 * MB, 0.0) == []
    assert s.get(3, 3, oid(1), ("tcp://10.0.0.2:5000",), 3 * MB, 0.0) == []
    replies = s.pulled(oid(1), True, "", 1.0)
    assert [(r.client, r.ok, r.value[2]) for r in replies] == [(1, True, True), (2, True, True),
                                                                (3, True, True)]
    assert s.objects[oid(1)].primary is False
    [again] = s.get(4, 4, oid(1), ("tcp://10.0.0.2:5000",), 3 * MB, 2.0)   # no new pull
    assert again.ok and again.value[2] is False


def test_a_failed_pull_tells_every_waiter_and_can_be_tried_again():
    s = StoreState(64 * MB)
    s.get(1, 1, oid(1), ("tcp://h:1",), MB, 0.0)
    s.get(2, 2, oid(1), ("tcp://h:1",), MB, 0.0)
    replies = s.pulled(oid(1), False, "node h is gone", 1.0)
    assert [(r.client, r.ok, r.value, r.lost) for r in replies] == [
        (1, False, "node h is gone", True), (2, False, "node h is gone", True)]
    assert s.alloc.used == 0
    assert isinstance(s.get(1, 3, oid(1), ("tcp://h2:1", "tcp://h3:1"), MB, 2.0)[0], Pull)


# -- the budget ------------------------------------------------------------------------------
def test_secondary_copies_are_evicted_before_anything_spills():
    s = StoreState(10 * MB)
    put(s, 1, 4 * MB)                                     # primary
    [pull] = s.get(1, 1, oid(2), ("tcp://h:1",), 4 * MB, 1.0)
    s.pulled(oid(2), True, "", 1.0)
    s.release(1, [oid(2)])                                # secondary, unread
    out = s.create(1, 3, oid(3), 4 * MB, OWNER, "", 2.0)
    assert out[0].ok and oid(2) not in s.objects and s.objects[oid(1)].state is State.SEALED
    assert s.counts["evicted"] == 1


def test_primaries_nobody_reads_spill_oldest_first_and_come_back_on_get():
    s = StoreState(10 * MB)
    put(s, 1, 4 * MB, now=1.0)
    put(s, 2, 4 * MB, now=2.0)
    s.get(9, 1, oid(2), (), 0, 3.0)                       # 2 is being read
    out = s.create(1, 3, oid(3), 4 * MB, OWNER, "", 4.0)
    assert out == [Spill(oid(1), 0, 4 * MB)]
    s.spilled(oid(1), "/spill/1", True, "")
    [reply] = s.create(1, 3, oid(3), 4 * MB, OWNER, "", 4.0)
    assert reply.ok and s.summary()["spilled_bytes"] == 4 * MB
    s.seal(oid(3), 4.0)
    s.release(9, [oid(2)])
    out = s.get(5, 4, oid(1), (), 0, 5.0)                 # back from disk: 2 spills first
    assert out == [Spill(oid(2), 4 * MB, 4 * MB)]
    s.spilled(oid(2), "/spill/2", True, "")
    [restore] = s.get(5, 4, oid(1), (), 0, 5.0)
    assert isinstance(restore, Restore) and restore.path == "/spill/1"
    [reply] = s.restored(oid(1), True, "", 6.0)
    assert reply.ok and reply.client == 5
    assert s.summary()["spilled_bytes"] == 4 * MB            # 2 is on disk only now
    # 1 keeps its file: room is made from it again without writing it.
    s.release(5, [oid(1)])
    out = s.create(1, 6, oid(6), 4 * MB, OWNER, "", 7.0)
    assert out[0].ok and s.objects[oid(1)].state is State.SPILLED
    assert s.summary()["spilled_bytes"] == 8 * MB
    assert s.free([oid(1)]) == [RemoveFile("/spill/1")]
    assert s.summary()["spilled_bytes"] == 4 * MB


def test_a_full_store_says_what_holds_it():
    s = StoreState(10 * MB)
    put(s, 1, 8 * MB)
    s.get(2, 1, oid(1), (), 0, 0.0)                       # read: cannot spill
    [reply] = s.create(1, 2, oid(2), 4 * MB, OWNER, "", 1.0)
    assert not reply.ok and "being read" in reply.value and "8.0 MiB" in reply.value


def test_a_spilled_object_that_is_freed_removes_its_file():
    s = StoreState(10 * MB)
    put(s, 1, 8 * MB)
    put(s, 2, 8 * MB)                                     # 1 spilled
    assert s.objects[oid(1)].state is State.SPILLED
    assert s.free([oid(1)]) == [RemoveFile("/spill/" + oid(1).hex())]
    assert s.summary()["spilled_bytes"] == 0


def test_a_failed_spill_leaves_the_object_in_memory():
    s = StoreState(10 * MB)
    put(s, 1, 8 * MB)
    [spill] = s.create(1, 2, oid(2), 8 * MB, OWNER, "", 1.0)
    assert s.spilled(spill.object_id, "", False, "disk full") == []
    assert s.objects[oid(1)].state is State.SEALED and s.objects[oid(1)].offset == 0
