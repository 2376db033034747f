"""Unit tests of rayipy.core.objects.ObjectTable: lifetimes, borrowing, values, waiting."""

from __future__ import annotations

import threading
import time

from rayipy.core.objects import FAILED, PENDING, READY, Effect, ObjectTable, owner_of
from rayipy.protocol.messages import Payload

ME = b"A" * 8
OTHER = b"B" * 8
PEER = b"P" * 8
VALUE = Payload(b"value")
ERROR = Payload(b"error")


def oid(owner: bytes, n: int) -> bytes:
    return owner + n.to_bytes(10, "big")


def release(table: ObjectTable, *ids: bytes) -> list[Effect]:
    for i in ids:
        table.queue_release(i)
    return table.process_releases()


def borrow(object_id: bytes, delta: int) -> Effect:
    return Effect("borrow", owner_of(object_id), (object_id, delta))


def test_owner_of_and_owns():
    table = ObjectTable(ME)
    assert owner_of(oid(OTHER, 1)) == OTHER
    assert table.owns(oid(ME, 1)) and not table.owns(oid(OTHER, 1))


# -- owned objects ----------------------------------------------------------------
def test_owned_object_freed_when_its_last_ref_is_released():
    table = ObjectTable(ME)
    a = oid(ME, 1)
    table.add_pending(a, {"task": "f"})
    assert table.state(a) == PENDING and len(table) == 1
    assert table.info(a) == {"task": "f"}
    table.queue_release(a)
    assert len(table) == 1                      # queued, not yet processed
    assert table.process_releases() == []
    assert len(table) == 0 and table.freed == 1
    assert table.state(a) is None
    assert table.value(a) == (FAILED, None)


def test_result_of_a_freed_pending_object_is_dropped():
    table = ObjectTable(ME)
    a = oid(ME, 1)
    table.add_pending(a)
    release(table, a)
    assert table.fulfill(a, True, VALUE) == ([], [], [])
    assert len(table) == 0


def test_process_releases_with_nothing_queued():
    assert ObjectTable(ME).process_releases() == []


def test_release_of_unknown_id_is_ignored():
    table = ObjectTable(ME)
    table.add_pending(oid(ME, 1))
    assert release(table, oid(ME, 2)) == []
    assert len(table) == 1


def test_pins_keep_an_object_alive_until_unpinned():
    table = ObjectTable(ME)
    a = oid(ME, 1)
    table.add_ready(a, VALUE)
    table.pin([a, oid(ME, 99)])                 # unknown ids are ignored
    table.pin([a])
    release(table, a)
    assert table.value(a) == (READY, VALUE)
    assert table.unpin([a]) == []
    assert table.state(a) == READY
    assert table.unpin([a, oid(ME, 99)]) == []
    assert table.state(a) is None and table.freed == 1


def test_borrowers_keep_an_object_alive_until_they_return_their_counts():
    table = ObjectTable(ME)
    a = oid(ME, 1)
    table.add_ready(a, VALUE)
    assert table.add_borrower(a, PEER, 2) == []
    assert table.add_borrower(a, OTHER, 1) == []
    release(table, a)
    assert table.state(a) == READY
    table.add_borrower(a, PEER, -1)
    table.add_borrower(a, OTHER, -1)
    assert table.state(a) == READY              # PEER still holds one
    table.add_borrower(a, PEER, -1)
    assert table.state(a) is None


def test_add_borrower_of_unknown_object_is_ignored():
    table = ObjectTable(ME)
    assert table.add_borrower(oid(ME, 5), PEER, 1) == []
    assert len(table) == 0


def test_dead_borrower_is_forgotten_everywhere():
    table = ObjectTable(ME)
    a, b = oid(ME, 1), oid(ME, 2)
    table.add_ready(a, VALUE)
    table.add_ready(b, VALUE)
    table.add_borrower(a, PEER, 3)
    table.add_borrower(b, PEER, 1)
    table.add_borrower(b, OTHER, 1)
    release(table, a, b)
    assert len(table) == 2
    table.drop_borrower_everywhere(PEER)
    assert table.state(a) is None and table.state(b) == READY


# -- values -------------------------------------------------------------------------
def test_fulfill_returns_callbacks_and_waiting_requesters():
    table = ObjectTable(ME)
    a = oid(ME, 1)
    table.add_pending(a, {"task": "f"})
    ran = []
    assert table.add_callback(a, lambda: ran.append(1))
    assert table.add_callback(a, lambda: ran.append(2))
    assert table.answer_when_ready(a, PEER) == (PENDING, None)
    assert table.answer_when_ready(a, OTHER) == (PENDING, None)
    callbacks, waiting, effects = table.fulfill(a, True, VALUE, info={"where": "n1"})
    assert waiting == [PEER, OTHER] and effects == []
    for fn in callbacks:
        fn()
    assert ran == [1, 2]
    assert table.value(a) == (READY, VALUE)
    assert table.info(a) == {"task": "f", "where": "n1"}
    # once ready: no more callbacks or waiters are stored
    assert not table.add_callback(a, lambda: None)
    assert table.answer_when_ready(a, PEER) == (READY, VALUE)
    assert table.fulfill(a, True, Payload(b"again")) == ([], [], [])
    assert table.value(a) == (READY, VALUE)


def test_fulfill_with_an_error():
    table = ObjectTable(ME)
    a = oid(ME, 1)
    table.add_pending(a)
    table.fulfill(a, False, ERROR)
    assert table.value(a) == (FAILED, ERROR)


def test_answer_and_callback_of_unknown_object():
    table = ObjectTable(ME)
    assert table.answer_when_ready(oid(ME, 7), PEER) == (FAILED, None)
    assert table.add_callback(oid(ME, 7), lambda: None) is False
    assert table.info(oid(ME, 7)) == {}


# -- contained refs -------------------------------------------------------------------
def test_owned_inner_ref_lives_as_long_as_its_container():
    table = ObjectTable(ME)
    inner, outer = oid(ME, 1), oid(ME, 2)
    table.add_ready(inner, VALUE)
    assert table.add_ready(outer, VALUE, contains=[inner]) == []
    release(table, inner)
    assert table.state(inner) == READY          # held by outer
    assert release(table, outer) == []
    assert len(table) == 0 and table.freed == 2


def test_containers_free_recursively():
    table = ObjectTable(ME)
    a, b, c = oid(ME, 1), oid(ME, 2), oid(ME, 3)
    table.add_ready(a, VALUE)
    table.add_ready(b, VALUE, contains=[a])
    table.add_ready(c, VALUE, contains=[b])
    release(table, a, b)
    assert len(table) == 3
    release(table, c)
    assert len(table) == 0


def test_put_of_a_value_holding_a_foreign_ref_registers_and_unregisters():
    table = ObjectTable(ME)
    foreign, outer = oid(OTHER, 1), oid(ME, 1)
    assert table.add_ready(outer, VALUE, contains=[foreign]) == [borrow(foreign, 1)]
    assert table.state(foreign) == PENDING
    assert release(table, outer) == [borrow(foreign, -1)]
    assert len(table) == 0


def test_borrowed_inner_ref_of_a_task_result_is_returned_with_its_container():
    table = ObjectTable(ME)
    foreign, outer = oid(OTHER, 1), oid(ME, 1)
    table.add_pending(outer)
    callbacks, waiting, effects = table.fulfill(outer, True, VALUE, contains=[foreign])
    assert effects == []                        # the worker registered it for us
    assert table.state(foreign) == PENDING
    assert release(table, outer) == [borrow(foreign, -1)]
    assert len(table) == 0


def test_inner_ref_also_held_locally_returns_all_registrations_at_the_end():
    table = ObjectTable(ME)
    foreign, outer = oid(OTHER, 1), oid(ME, 1)
    assert table.on_ref_rebuilt(foreign) == [borrow(foreign, 1)]
    table.add_pending(outer)
    table.fulfill(outer, True, VALUE, contains=[foreign])
    assert release(table, foreign) == []        # still held by outer
    assert release(table, outer) == [borrow(foreign, -2)]


def test_fulfill_of_a_dropped_object_hands_back_counts_registered_for_us():
    table = ObjectTable(ME)
    outer = oid(ME, 1)
    mine, foreign = oid(ME, 2), oid(OTHER, 2)
    assert table.fulfill(outer, True, VALUE, contains=[mine, foreign]) == (
        [], [], [borrow(foreign, -1)])
    assert table.fulfill(outer, True, VALUE, contains=[foreign], registered_for_us=False) == (
        [], [], [])


def test_contained_own_ref_that_was_already_freed_is_failed():
    table = ObjectTable(ME)
    gone, outer = oid(ME, 1), oid(ME, 2)
    table.add_pending(outer)
    table.fulfill(outer, True, VALUE, contains=[gone])
    assert table.value(gone) == (FAILED, None)
    release(table, outer)
    assert len(table) == 0


# -- borrowing ---------------------------------------------------------------------------
def test_rebuilt_foreign_ref_registers_once_and_unregisters_at_the_end():
    table = ObjectTable(ME)
    foreign = oid(OTHER, 1)
    assert table.on_ref_rebuilt(foreign) == [borrow(foreign, 1)]
    assert table.on_ref_rebuilt(foreign) == []
    assert release(table, foreign) == []
    assert release(table, foreign) == [borrow(foreign, -1)]
    assert len(table) == 0


def test_rebuilt_own_ref_after_free_is_failed():
    table = ObjectTable(ME)
    mine = oid(ME, 1)
    assert table.on_ref_rebuilt(mine) == []
    assert table.value(mine) == (FAILED, None)
    assert release(table, mine) == []
    assert len(table) == 0


def test_rebuilt_own_live_ref_just_counts():
    table = ObjectTable(ME)
    mine = oid(ME, 1)
    table.add_ready(mine, VALUE)
    assert table.on_ref_rebuilt(mine) == []
    release(table, mine)
    assert table.state(mine) == READY
    release(table, mine)
    assert table.state(mine) is None


def test_need_fetch_asks_the_owner_only_once():
    table = ObjectTable(ME)
    foreign, mine = oid(OTHER, 1), oid(ME, 1)
    table.on_ref_rebuilt(foreign)
    table.add_pending(mine)
    assert table.need_fetch([foreign, mine, oid(OTHER, 9)]) == [Effect("fetch", OTHER, foreign)]
    assert table.need_fetch([foreign]) == []


def test_need_fetch_not_for_values_already_here():
    table = ObjectTable(ME)
    foreign = oid(OTHER, 1)
    table.on_ref_rebuilt(foreign)
    table.fulfill(foreign, True, VALUE)
    assert table.need_fetch([foreign]) == []


# -- waiting and failing ----------------------------------------------------------------------
def test_wait_with_a_passed_deadline_returns_the_count_at_once():
    table = ObjectTable(ME)
    a, b, c = oid(ME, 1), oid(ME, 2), oid(ME, 3)
    for x in (a, b, c):
        table.add_pending(x)
    table.fulfill(b, True, VALUE)
    assert table.wait([a, b, c], 3, deadline=time.monotonic()) == 1
    assert table.wait([a, b, c], 3, deadline=time.monotonic() - 10) == 1
    assert table.wait([a, b, c], 1, deadline=None) == 1
    assert table.wait([a, oid(ME, 99)], 1, deadline=None) == 1   # unknown counts as done


def test_wait_wakes_when_a_value_arrives():
    table = ObjectTable(ME)
    a = oid(ME, 1)
    table.add_pending(a)
    result = []
    waiter = threading.Thread(
        target=lambda: result.append(table.wait([a], 1, deadline=time.monotonic() + 30)))
    waiter.start()
    table.fulfill(a, True, VALUE)
    waiter.join(timeout=30)
    assert result == [1]


def wait_in_thread(table: ObjectTable, ids: list, need: int) -> tuple[threading.Thread, list]:
    result: list = []
    thread = threading.Thread(
        target=lambda: result.append(table.wait(ids, need, deadline=time.monotonic() + 30)))
    thread.start()
    return thread, result


def test_wait_wakes_once_enough_have_settled_whatever_settles_them():
    table = ObjectTable(ME)
    a, b, c, d = (oid(ME, n) for n in range(1, 5))
    for x in (a, b, c, d):
        table.add_pending(x)
    thread, result = wait_in_thread(table, [a, b, c, d], 3)
    table.fulfill(a, True, VALUE)                    # a value
    table.queue_release(b)                           # b freed while its task runs
    table.process_releases()
    assert not result and thread.is_alive()          # two of three: still waiting
    table.fail_all_pending(ERROR)                    # c and d fail
    thread.join(timeout=30)
    assert result == [4]
    assert table.wait([c], 1, deadline=None) == 1    # no waiter left behind


def test_wait_counts_an_id_given_twice_twice():
    table = ObjectTable(ME)
    a, b = oid(ME, 1), oid(ME, 2)
    table.add_pending(a)
    table.add_pending(b)
    thread, result = wait_in_thread(table, [a, a, b], 2)
    table.fulfill(a, True, VALUE)
    thread.join(timeout=30)
    assert result == [2]


def test_two_threads_wait_for_one_object():
    table = ObjectTable(ME)
    a = oid(ME, 1)
    table.add_pending(a)
    waits = [wait_in_thread(table, [a], 1) for _ in range(2)]
    table.fulfill(a, True, VALUE)
    for thread, result in waits:
        thread.join(timeout=30)
        assert result == [1]


def test_a_wait_that_times_out_leaves_no_countdown_behind():
    table = ObjectTable(ME)
    a = oid(ME, 1)
    table.add_pending(a)
    assert table.wait([a], 1, deadline=time.monotonic() + 0.01) == 0
    table.fulfill(a, True, VALUE)                    # nobody to wake: must not fail
    assert table.wait([a], 1, deadline=None) == 1


def test_fail_all_pending_of_one_owner():
    table = ObjectTable(ME)
    mine, theirs, ready = oid(ME, 1), oid(OTHER, 1), oid(ME, 2)
    table.add_pending(mine)
    table.on_ref_rebuilt(theirs)
    table.add_ready(ready, VALUE)
    ran = []
    table.add_callback(theirs, lambda: ran.append("theirs"))
    table.add_callback(mine, lambda: ran.append("mine"))
    callbacks = table.fail_all_pending(ERROR, owner=OTHER)
    for fn in callbacks:
        fn()
    assert ran == ["theirs"]
    assert table.value(theirs) == (FAILED, ERROR)
    assert table.value(mine) == (PENDING, None)
    assert table.wait([theirs], 1, deadline=time.monotonic()) == 1


def test_fail_all_pending_of_everyone():
    table = ObjectTable(ME)
    mine, theirs, ready = oid(ME, 1), oid(OTHER, 1), oid(ME, 2)
    table.add_pending(mine)
    table.on_ref_rebuilt(theirs)
    table.add_ready(ready, VALUE)
    table.add_callback(mine, lambda: None)
    assert len(table.fail_all_pending(ERROR)) == 1
    assert table.value(mine) == (FAILED, ERROR)
    assert table.value(theirs) == (FAILED, ERROR)
    assert table.value(ready) == (READY, VALUE)
    assert table.add_callback(mine, lambda: None) is False


def test_stats():
    table = ObjectTable(ME)
    table.add_pending(oid(ME, 1))
    table.add_ready(oid(ME, 2), VALUE)
    table.on_ref_rebuilt(oid(ME, 3))
    table.add_ready(oid(ME, 4), VALUE)
    release(table, oid(ME, 4))
    assert table.stats() == {"objects": 3, "pending": 1, "ready": 1, "failed": 1, "freed": 1}


def test_the_owner_names_the_stores_that_pulled_a_copy_of_a_stored_object():
    from rayipy.core.objects import COPIES_KEPT
    from rayipy.protocol.messages import Stored
    t = ObjectTable(b"O" * 8)
    oid = b"O" * 8 + b"\x01" * 10
    t.add_ready(oid, Stored(oid, 100, b"n" * 8, "tcp://a:1"))
    t.add_copy(oid, "tcp://b:1")
    t.add_copy(oid, "tcp://b:1")          # once
    t.add_copy(oid, "tcp://a:1")          # the primary is not a copy
    assert t.value(oid)[1].copies == ("tcp://b:1",)
    for n in range(COPIES_KEPT + 2):
        t.add_copy(oid, f"tcp://c{n}:1")
    copies = t.value(oid)[1].copies
    assert len(copies) == COPIES_KEPT and copies[-1] == f"tcp://c{COPIES_KEPT + 1}:1"
