"""Unit tests of rayipy.core.worker_state.WorkerState: the worker's queue, deferred calls,
cancels, steals, hand-backs and where results go, without sockets or processes."""

from __future__ import annotations

import pickle

from rayipy.core.worker_state import (CANCELS_KEPT, KILL, PINNED, REFILL_SECONDS,
                                      REPEAT_ARGS_BYTES, WAKE, InterruptRunning, ReplyToCaller,
                                      ReportToHead, ReturnToHead, Run, RunOnHost, WorkerState,
                                      quick_repeat, remember, repeatable)
from rayipy.node import client
from rayipy.protocol.messages import CANCELLED, OK, RETURNED, Payload, TaskResult, TaskSpec

OWNER = b"O" * 8
ACTOR = b"A" * 16
WHERE = "node test, worker pid 1"
CALLER, OTHER = "caller-1", "caller-2"     # opaque tokens: the state never looks into them


def tid(n: int) -> bytes:
    return OWNER + n.to_bytes(8, "big")


def spec(n: int, *, actor: bool = False, method: str = "", pinned: bool = False) -> TaskSpec:
    return TaskSpec(tid(n), b"f", f"task{n}", Payload(b"args"), (), 1, (("CPU", 1.0),), 3, 0,
                    ACTOR if actor else b"", method or ("call" if actor else ""),
                    (PINNED,) if pinned else ())


def constructor(n: int = 0) -> TaskSpec:
    return spec(n, actor=True, method="__init__")


def ok(n: int) -> TaskResult:
    return TaskResult(tid(n), OK, (), 0.001, WHERE, ())


def queued(state: WorkerState) -> list[int]:
    return [int.from_bytes(s.task_id[8:], "big") for s in state.queue]


def ids(*ns: int) -> list[bytes]:
    return [tid(n) for n in ns]


def cancel_error(result: TaskResult) -> str:
    """The text of the TaskCancelledError a cancelled result carries."""
    return pickle.loads(result.values[0].data)[2]


def run_next(state: WorkerState, now: float = 1.0) -> Run:
    command = state.next_task(now)
    assert type(command) is Run
    return command


# -- running, and where results go ------------------------------------------------------
def test_tasks_from_the_head_run_in_order_and_their_results_go_to_the_head():
    s = WorkerState(WHERE)
    assert s.tasks_from_head([spec(1), spec(2)], blocked=False) == [WAKE]
    first = run_next(s, now=5.0)
    assert first == Run(spec(1), None)                     # None: its result to the head
    assert s.current == spec(1) and s.current_since == 5.0
    s.code_done(tid(1))
    assert s.current is None
    assert run_next(s) == Run(spec(2), None)
    s.code_done(tid(2))
    assert s.next_task(3.0) is None


def test_a_direct_calls_result_goes_back_to_its_caller_which_is_then_forgotten():
    s = WorkerState(WHERE)
    assert s.calls_from_caller(CALLER, [spec(1)]) == []
    assert s.calls_from_caller(OTHER, [spec(2)]) == []
    assert run_next(s) == Run(spec(1), CALLER)
    s.code_done(tid(1))
    assert run_next(s) == Run(spec(2), OTHER)
    s.code_done(tid(2))
    assert s.reply_to == {}
    # The same id again (a retry through the head): the head's this time.
    s.tasks_from_head([spec(2)], blocked=False)
    assert run_next(s) == Run(spec(2), None)


def test_code_done_ends_running_before_the_result_is_packed():
    s = WorkerState(WHERE)
    s.tasks_from_head([spec(1)], blocked=False)
    run_next(s)
    s.code_done(tid(7))                   # another task's end changes nothing
    assert s.current == spec(1)
    s.code_done(tid(1))
    assert s.current is None
    # A cancel now is of a task that has finished: remembered, never an interrupt.
    assert s.cancel(tid(1), force=True) == []


# -- cancels --------------------------------------------------------------------------------
def test_cancel_of_a_queued_task_answers_it_through_the_head_and_keeps_the_rest():
    s = WorkerState(WHERE)
    s.tasks_from_head([spec(1), spec(2), spec(3)], blocked=False)
    [command] = s.cancel(tid(2), force=False)
    assert type(command) is ReportToHead
    assert command.result.task_id == tid(2) and command.result.status == CANCELLED
    assert command.result.where == WHERE
    assert "cancelled before it started" in cancel_error(command.result)
    assert queued(s) == [1, 3]


def test_cancel_of_a_queued_direct_call_goes_through_the_head_not_to_its_caller():
    # The cancel comes on the I/O thread, which never writes to a caller's connection.
    s = WorkerState(WHERE)
    s.calls_from_caller(CALLER, [spec(1), spec(2)])
    [command] = s.cancel(tid(2), force=False)
    assert type(command) is ReportToHead and command.result.status == CANCELLED
    assert tid(2) not in s.reply_to
    assert queued(s) == [1]


def test_cancel_of_a_deferred_actor_call():
    s = WorkerState(WHERE)
    s.calls_from_caller(CALLER, [spec(1, actor=True), spec(2, actor=True)])
    [command] = s.cancel(tid(1), force=False)
    assert type(command) is ReportToHead and command.result.status == CANCELLED
    assert [x.task_id for x in s.deferred] == ids(2)
    assert tid(1) not in s.reply_to


def test_cancel_of_the_running_task_interrupts_it_and_force_kills_the_process():
    s = WorkerState(WHERE)
    s.tasks_from_head([spec(1)], blocked=False)
    run_next(s)
    assert s.cancel(tid(1), force=False) == [InterruptRunning(tid(1))]
    assert s.cancel(tid(1), force=True) == [KILL]
    assert s.current == spec(1)          # it stays running until its code returns


def test_cancel_of_a_call_not_here_yet_cancels_it_when_it_comes():
    s = WorkerState(WHERE)
    assert s.cancel(tid(1), force=False) == []
    assert s.cancel(tid(2), force=True) == []   # not running here: nothing to kill
    [reply] = s.calls_from_caller(CALLER, [spec(1), spec(3)])
    assert reply.caller == CALLER and reply.result.task_id == tid(1)
    assert reply.result.status == CANCELLED
    assert queued(s) == [3] and tid(1) not in s.reply_to
    [report] = s.tasks_from_head([spec(2), spec(4)], blocked=False)[:1]
    assert report == ReportToHead(report.result) and report.result.task_id == tid(2)
    assert queued(s) == [3, 4]
    assert s.cancelled == {}             # each cancel used once


def test_cancel_of_a_direct_call_not_here_yet_is_answered_at_once_and_dropped_when_it_comes():
    # Its call may sit unread behind the running task (only the main thread reads callers'
    # connections, between tasks): answered now, not when that task ends.
    s = WorkerState(WHERE)
    s.calls_from_caller(CALLER, [spec(1, actor=True)])
    s.tasks_from_head([constructor()], blocked=False)
    run_next(s)
    s.code_done(tid(0))
    s.constructor_done(concurrent=False)
    run_next(s)                                       # call 1 runs
    [report] = s.cancel(tid(2), force=False, direct=True)
    assert type(report) is ReportToHead
    assert report.result.task_id == tid(2) and report.result.status == CANCELLED
    assert report.result.values == ()                 # its owner names it
    assert s.calls_from_caller(CALLER, [spec(2, actor=True), spec(3, actor=True)]) == []
    assert queued(s) == [3] and tid(2) not in s.reply_to and s.cancelled == {}


def test_a_cancel_that_crosses_a_direct_calls_result_is_not_answered_twice():
    s = WorkerState(WHERE)
    s.calls_from_caller(CALLER, [spec(1)])
    run_next(s)
    s.code_done(tid(1))                               # its result is on its way
    assert s.cancel(tid(1), force=False, direct=True) == []


def test_a_call_running_on_a_concurrent_actors_host_is_not_answered_as_cancelled():
    s = WorkerState(WHERE)
    s.tasks_from_head([constructor()], blocked=False)
    run_next(s)
    s.code_done(tid(0))
    s.constructor_done(concurrent=True)
    s.calls_from_caller(CALLER, [spec(1, actor=True)])
    assert s.next_task(1.0) == RunOnHost(spec(1, actor=True))
    assert s.cancel(tid(1), force=False, direct=True) == []   # its thread runs on
    assert s.host_finished(ok(1)) == ReplyToCaller(CALLER, ok(1))
    assert s.cancel(tid(1), force=False, direct=True) == []   # and it has ended


def test_a_cancelled_task_that_comes_while_blocked_is_cancelled_not_returned():
    s = WorkerState(WHERE)
    s.cancel(tid(1), force=False)
    out = s.tasks_from_head([spec(1), spec(2)], blocked=True)
    assert [type(c) for c in out] == [ReportToHead, ReturnToHead]
    assert out[1] == ReturnToHead(ids(2))


def test_cancels_are_kept_until_there_are_too_many_then_the_oldest_go():
    cancelled: dict = {}
    for n in range(CANCELS_KEPT + 10):
        remember(cancelled, n.to_bytes(16, "big"))
    assert len(cancelled) == CANCELS_KEPT
    assert (0).to_bytes(16, "big") not in cancelled                     # the oldest: gone
    assert (CANCELS_KEPT + 9).to_bytes(16, "big") in cancelled          # the newest: kept
    assert list(cancelled)[0] == (10).to_bytes(16, "big")


def test_a_cancel_remembered_twice_is_one_entry():
    cancelled: dict = {}
    remember(cancelled, b"t" * 16)
    remember(cancelled, b"t" * 16)
    assert list(cancelled) == [b"t" * 16]


def test_the_worker_remembers_at_most_cancels_kept_and_forgets_the_oldest():
    s = WorkerState(WHERE)
    for n in range(CANCELS_KEPT + 1):
        s.cancel(tid(n), force=False)
    assert len(s.cancelled) == CANCELS_KEPT
    # The oldest cancel is forgotten: that call runs; the newest is still cancelled.
    assert s.calls_from_caller(CALLER, [spec(0)]) == []
    [reply] = s.calls_from_caller(CALLER, [spec(CANCELS_KEPT)])
    assert reply.result.status == CANCELLED
    assert queued(s) == [0]


# -- steals ---------------------------------------------------------------------------------
def test_steal_takes_from_the_end_and_pinned_tasks_stay_in_order():
    s = WorkerState(WHERE)
    s.tasks_from_head([spec(1), spec(2)], blocked=False)
    s.calls_from_caller(CALLER, [spec(3, pinned=True)])
    s.tasks_from_head([spec(4), spec(5)], blocked=False)
    assert s.steal(3) == [ReturnToHead(ids(5, 4, 2))]
    assert queued(s) == [1, 3]
    assert s.steal(10) == [ReturnToHead(ids(1))]
    assert queued(s) == [3]
    assert s.steal(1) == [ReturnToHead([])]


def test_steal_never_takes_direct_calls_the_head_never_had():
    s = WorkerState(WHERE)
    s.tasks_from_head([spec(1)], blocked=False)
    s.calls_from_caller(CALLER, [spec(2)])
    assert s.steal(2) == [ReturnToHead(ids(1))]
    assert queued(s) == [2]


# -- blocked tasks --------------------------------------------------------------------------
def test_blocked_hands_back_the_heads_tasks_and_leased_tasks_to_their_callers():
    s = WorkerState(WHERE)
    s.tasks_from_head([spec(1), spec(2)], blocked=False)
    run_next(s)                                            # task 1 runs, then blocks
    s.calls_from_caller(CALLER, [spec(3)])                 # leased
    s.calls_from_caller(OTHER, [spec(4, pinned=True)])     # sent here by name
    s.tasks_from_head([spec(5)], blocked=False)
    out = s.blocked()
    assert out[0] == ReplyToCaller(CALLER, TaskResult(tid(3), RETURNED, (), 0.0, WHERE, ()))
    assert out[-1] == ReturnToHead(ids(5, 2))              # always last
    assert len(out) == 2
    assert queued(s) == [4]                                # the pinned task stays
    assert s.reply_to == {tid(4): OTHER}


def test_leased_tasks_that_come_while_blocked_go_back_to_their_caller():
    s = WorkerState(WHERE)
    s.calls_from_caller(CALLER, [spec(1)])
    run_next(s)
    assert s.blocked() == [ReturnToHead([])]
    s.calls_from_caller(CALLER, [spec(2)])
    s.calls_from_caller(OTHER, [spec(3, pinned=True)])
    assert s.return_direct() == [ReplyToCaller(CALLER, TaskResult(tid(2), RETURNED, (), 0.0,
                                                                  WHERE, ()))]
    assert queued(s) == [3]
    assert s.return_direct() == []
    # The blocked task itself still answers its own caller (Run said so); then it is
    # forgotten.
    s.code_done(tid(1))
    assert s.reply_to == {tid(3): OTHER}


def test_tasks_from_the_head_while_blocked_go_back_at_once():
    s = WorkerState(WHERE)
    assert s.tasks_from_head([spec(1), spec(2)], blocked=True) == [ReturnToHead(ids(1, 2))]
    assert queued(s) == []


def test_an_actors_calls_stay_while_one_blocks():
    s = WorkerState(WHERE)
    s.tasks_from_head([constructor()], blocked=False)
    run_next(s)
    s.code_done(tid(0))
    s.constructor_done(concurrent=False)
    s.calls_from_caller(CALLER, [spec(1, actor=True)])
    run_next(s)                                            # call 1 blocks in get
    s.calls_from_caller(CALLER, [spec(2, actor=True), spec(3, actor=True)])
    assert s.blocked() == [ReturnToHead([])]
    assert s.return_direct() == []
    assert queued(s) == [2, 3]
    # The head's messages to an actor's worker are not returned either.
    assert s.tasks_from_head([spec(4, actor=True, method="__init__")], blocked=True) == [WAKE]


# -- actors ---------------------------------------------------------------------------------
def test_calls_before_the_constructor_wait_and_then_run_first_in_order():
    s = WorkerState(WHERE)
    s.calls_from_caller(CALLER, [spec(1, actor=True), spec(2, actor=True)])
    s.calls_from_caller(OTHER, [spec(3, actor=True)])
    assert queued(s) == [] and s.next_task(1.0) is None
    s.tasks_from_head([constructor()], blocked=False)
    assert run_next(s) == Run(constructor(), None)
    s.code_done(tid(0))
    s.constructor_done(concurrent=False)
    assert queued(s) == [1, 2, 3] and s.deferred == []
    assert run_next(s) == Run(spec(1, actor=True), CALLER)
    s.calls_from_caller(CALLER, [spec(4, actor=True)])     # after the constructor: queued
    assert queued(s) == [2, 3, 4]


def test_a_concurrent_actors_calls_go_to_its_host_and_are_counted():
    s = WorkerState(WHERE)
    s.calls_from_caller(CALLER, [spec(1, actor=True)])
    s.tasks_from_head([constructor()], blocked=False)
    run_next(s)
    s.code_done(tid(0))
    s.constructor_done(concurrent=True)
    s.calls_from_caller(CALLER, [spec(2, actor=True)])
    assert s.next_task(1.0) == RunOnHost(spec(1, actor=True))
    assert s.next_task(1.0) == RunOnHost(spec(2, actor=True))
    assert s.on_host == {tid(1), tid(2)} and s.current is None
    assert s.caller_of(tid(2)) == CALLER
    s.code_done(tid(2))              # its code returned on a host thread: the caller stays
    assert s.caller_of(tid(2)) == CALLER
    assert s.host_finished(ok(2)) == ReplyToCaller(CALLER, ok(2))
    assert s.host_finished(ok(1)) == ReplyToCaller(CALLER, ok(1))
    assert s.on_host == set()


def test_pinned_marker_is_the_one_the_runtime_sets():
    assert PINNED == client.PINNED


# -- when results may wait for the next task (quick_repeat) ------------------------------
def test_a_quick_repeat_is_the_same_call_with_the_same_arguments_that_was_quick():
    quick = REFILL_SECONDS / 10
    assert quick_repeat(spec(2), spec(1), quick)
    assert quick_repeat(spec(2, actor=True), spec(1, actor=True), quick)


def test_anything_else_may_be_long_and_results_do_not_wait_for_it():
    quick = REFILL_SECONDS / 10
    assert not quick_repeat(spec(2), None, quick)                   # nothing kept
    assert not quick_repeat(spec(2), spec(1), REFILL_SECONDS)       # the last was not quick
    assert not quick_repeat(spec(2), spec(1, actor=True), quick)    # another function
    assert not quick_repeat(spec(2, actor=True, method="other"), spec(1, actor=True), quick)
    other_args = spec(2)._replace(args=Payload(b"other args"))      # sleep(5) after sleep(0)
    assert not quick_repeat(other_args, spec(1), quick)
    with_dep = spec(2)._replace(dep_values=(Payload(b"v"),))
    assert not quick_repeat(with_dep, spec(1), quick)


def test_only_specs_with_small_inband_arguments_are_kept_to_compare_with():
    assert repeatable(spec(1))
    assert not repeatable(spec(1)._replace(args=Payload(b"x" * (REPEAT_ARGS_BYTES + 1))))
    assert not repeatable(spec(1)._replace(args=Payload(b"", (b"buffer",))))
    assert not repeatable(spec(1)._replace(dep_values=(Payload(b"v"),)))
