"""The owner's bookkeeping of a generator task's stream (rayipy/core/generators.py):
items handed out in order whatever order they come in, the end, errors, cancels."""

from rayipy.core.generators import Failed, Stop, StreamState, WaitFor, Yield, item_id


def test_items_are_handed_out_in_order_whatever_order_they_arrive_in():
    s = StreamState()
    assert s.step() == WaitFor(1, False)
    assert s.item(2)
    assert s.step() == WaitFor(1, False)      # 2 is here, but 1 comes first
    assert s.item(1)
    assert [s.step(), s.step()] == [Yield(1), Yield(2)]
    assert s.step() == WaitFor(3, False)


def test_the_end_stops_after_the_last_item_even_when_it_overtakes_items():
    s = StreamState()
    s.item(1)
    s.ended(3)                                 # items 2 and 3 are still on their way
    assert s.step() == Yield(1)
    assert s.step() == WaitFor(2, True)        # only the item can come now
    s.item(3)
    s.item(2)
    assert [s.step(), s.step(), s.step()] == [Yield(2), Yield(3), Stop()]
    assert s.finished()
    assert s.step() == Stop()                  # and again


def test_duplicates_from_a_retry_and_items_past_the_count_are_not_wanted():
    s = StreamState()
    assert s.item(1)
    assert not s.item(1)                       # the retried task sent it again
    assert s.step() == Yield(1)
    assert not s.item(1)                       # handed out already
    s.ended(2)
    assert not s.item(3)
    assert not s.item(0)
    assert s.item(2)


def test_a_task_that_fails_without_a_count_answers_with_its_error_after_what_came():
    s = StreamState()
    s.item(1)
    s.item(3)                                  # 2 never came: the task was cancelled
    s.ended(None)
    assert s.step() == Yield(1)
    assert s.step() == Failed()                # the completion's error (TaskCancelledError)
    assert s.step() == Stop()
    assert not s.item(2)


def test_an_end_is_taken_once():
    s = StreamState()
    s.ended(1)
    s.ended(None)                              # a late failure does not undo the count
    s.item(1)
    assert [s.step(), s.step()] == [Yield(1), Stop()]


def test_closing_lets_go_of_what_was_not_handed_out():
    s = StreamState()
    s.item(2)
    s.item(1)
    assert s.close() == [1, 2]
    assert s.step() == Stop()
    assert not s.item(3)


def test_item_ids_are_the_task_id_and_a_four_byte_index():
    task = bytes(range(16))
    assert item_id(task, 1) == task + b"\x00\x00\x00\x01"
    assert item_id(task, 70_000)[:16] == task   # more than a 2-byte index holds
