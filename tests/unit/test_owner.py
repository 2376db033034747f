"""OwnerState: where a process's tasks go, and what a cancel, a retry, a lost lease or a
dead actor means for them. Events in, commands out; no sockets."""

from __future__ import annotations

from rayipy.core.owner import (PINNED, AskLease, CancelRemote, Complete, LocateActor,
                               OwnerState, ReturnLease, Route, SendToHead, SendToWorker)
from rayipy.protocol import errors
from rayipy.protocol.messages import (CANCELLED, CRASHED, ERROR, OK, RETURNED, Payload,
                                      TaskResult, TaskSpec)

CPU1 = (("CPU", 1.0),)
ACTOR = b"D" * 8 + b"a" * 8


def spec(n: int, *, actor: bytes = b"", method: str = "", options: tuple = (),
         resources: tuple = CPU1, max_retries: int = 3) -> TaskSpec:
    return TaskSpec(b"D" * 8 + n.to_bytes(8, "big"), b"f", f"t{n}", Payload(b""), (), 1,
                    resources, max_retries, 0, actor, method, options)


def call(n: int, retries: int = 0) -> TaskSpec:
    """Actor call n; ``retries``: its max_task_retries (the actor's default: 0)."""
    return spec(n, actor=ACTOR, method="m", resources=(), max_retries=retries)


def ok(s: TaskSpec) -> TaskResult:
    return TaskResult(s.task_id, OK, (Payload(b"v"),), 0.0, "", ())


def submit(owner: OwnerState, s: TaskSpec, ready: bool = True, **kw) -> list:
    return owner.submit(s, (s.task_id + b"\0\0",), (b"pin",), ready, **kw)


def completed(commands: list) -> list[tuple[bytes, int]]:
    return [(c.result.task_id, c.result.status) for c in commands if type(c) is Complete]


def error_text(command: Complete) -> str:
    return str(errors.rebuild_error(command.result.values[0]))


# -- routes ----------------------------------------------------------------------------
def test_the_first_task_goes_through_the_head_and_asks_for_a_lease():
    owner = OwnerState()
    assert submit(owner, spec(1)) == [AskLease(CPU1), SendToHead(spec(1))]
    assert submit(owner, spec(2)) == [SendToHead(spec(2))]   # the head is busy: no lease
    assert owner.route_of(spec(1).task_id) is Route.HEAD


def test_tasks_one_at_a_time_go_to_the_leased_worker():
    owner = OwnerState()
    submit(owner, spec(1))
    owner.lease_granted(CPU1, b"w1", "tcp://w1", now=0.0)
    owner.finished(ok(spec(1)), now=0.0)
    assert submit(owner, spec(2)) == [SendToWorker("tcp://w1", spec(2))]
    assert owner.on_lease(spec(2).task_id) and owner.counts()["on_lease"] == 1
    assert submit(owner, spec(3)) == [SendToHead(spec(3))]   # never behind another
    [done] = owner.finished(ok(spec(2)), now=1.0)
    assert done == Complete(ok(spec(2)), (spec(2).task_id + b"\0\0",), (b"pin",), spec(2))


def test_a_second_lease_for_the_same_request_is_given_back():
    owner = OwnerState()
    assert owner.lease_granted(CPU1, b"w1", "tcp://w1", now=0.0) == []
    assert owner.lease_granted(CPU1, b"w2", "tcp://w2", now=0.0) == [ReturnLease(b"w2")]


def test_a_denied_lease_may_be_asked_for_again():
    owner = OwnerState()
    submit(owner, spec(1))
    assert owner.lease_granted(CPU1, b"", "", now=0.0) == []
    owner.finished(ok(spec(1)), now=0.0)
    assert submit(owner, spec(2))[0] == AskLease(CPU1)


def test_an_idle_lease_goes_back():
    owner = OwnerState()
    owner.lease_granted(CPU1, b"w1", "tcp://w1", now=0.0)
    assert owner.tick(now=0.1) == []
    assert owner.tick(now=10.0) == [ReturnLease(b"w1")]


def test_spread_and_gpu_tasks_always_go_through_the_head():
    owner = OwnerState()
    owner.lease_granted(CPU1, b"w1", "tcp://w1", now=0.0)
    spread = spec(1, options=(("scheduling_strategy", "SPREAD"),))
    assert submit(owner, spread) == [SendToHead(spread)]
    owner.finished(ok(spread), now=0.0)
    gpu = spec(2, resources=(("CPU", 1.0), ("GPU", 1.0)))
    assert submit(owner, gpu) == [SendToHead(gpu)]


def test_actor_creation_goes_through_the_head_and_the_creator_is_not_told_to_ask():
    owner = OwnerState()
    creation = spec(1, actor=ACTOR, method="__init__", resources=())
    assert submit(owner, creation) == [SendToHead(creation)]
    assert submit(owner, call(2)) == []               # waits for ACTOR_LOCATION, unasked
    assert owner.actor_located(ACTOR, "tcp://a") == [SendToWorker("tcp://a", call(2))]


def test_a_task_for_a_named_worker_goes_there_pinned():
    owner = OwnerState()
    [command] = submit(owner, spec(1), worker=(b"w9", "tcp://w9"))
    assert type(command) is SendToWorker and command.address == "tcp://w9"
    assert PINNED in command.spec.options
    assert owner.cancel(spec(1).task_id, False) == [CancelRemote(spec(1).task_id, False, b"", b"w9")]


# -- arguments ---------------------------------------------------------------------------
def test_a_task_waits_for_its_arguments_then_leaves_with_them():
    owner = OwnerState()
    assert submit(owner, spec(1), ready=False) == []
    assert owner.counts()["pending"] == 1
    [_, sent] = owner.arguments_ready(spec(1).task_id, (Payload(b"x"),))
    assert sent.spec.dep_values == (Payload(b"x"),)


def test_a_failed_argument_fails_the_task_and_frees_the_calls_behind_it():
    owner = OwnerState()
    owner.actor_located(ACTOR, "tcp://a")
    assert submit(owner, call(1), ready=False) == [LocateActor(ACTOR)]
    assert submit(owner, call(2)) == []                # behind call 1
    out = owner.arguments_failed(call(1).task_id, Payload(b"err"))
    assert out[0] == SendToWorker("tcp://a", call(2))
    assert completed(out) == [(call(1).task_id, ERROR)]


# -- cancels -----------------------------------------------------------------------------
def test_cancel_before_it_leaves_ends_it_here():
    owner = OwnerState()
    submit(owner, spec(1), ready=False)
    out = owner.cancel(spec(1).task_id, False)
    assert completed(out) == [(spec(1).task_id, CANCELLED)]
    assert "before it was sent" in error_text(out[0])
    assert owner.arguments_ready(spec(1).task_id, ()) == []    # and it never leaves
    assert owner.counts() == {"pending": 0, "on_lease": 0, "done": 0, "failed": 0, "cancelled": 1}


def test_cancel_goes_where_the_task_went():
    owner = OwnerState()
    submit(owner, spec(1))
    assert owner.cancel(spec(1).task_id, True) == [CancelRemote(spec(1).task_id, True, b"", b"")]
    owner.actor_located(ACTOR, "tcp://a")
    submit(owner, call(2))
    assert owner.cancel(call(2).task_id, False) == [CancelRemote(call(2).task_id, False, ACTOR, b"")]
    assert owner.route_of(call(2).task_id) is Route.ACTOR


def test_cancel_of_a_task_on_a_lease_names_the_worker():
    owner = OwnerState()
    owner.lease_granted(CPU1, b"w1", "tcp://w1", now=0.0)
    submit(owner, spec(1))
    assert owner.cancel(spec(1).task_id, False) == [CancelRemote(spec(1).task_id, False, b"", b"w1")]


def test_cancel_of_a_task_that_ended_does_nothing():
    owner = OwnerState()
    submit(owner, spec(1))
    owner.finished(ok(spec(1)), now=0.0)
    assert owner.cancel(spec(1).task_id, False) == []
    assert owner.finished(ok(spec(1)), now=0.0) == []          # a duplicate result: ignored


def test_a_cancel_answered_by_the_worker_before_the_call_came_names_the_task():
    owner = OwnerState()
    owner.actor_located(ACTOR, "tcp://a")
    submit(owner, call(2))
    owner.cancel(call(2).task_id, False)
    [done] = owner.finished(TaskResult(call(2).task_id, CANCELLED, (), 0.0, "w", ()), now=0.0)
    assert "'t2' was cancelled: cancelled before it started" in error_text(done)
    assert owner.finished(ok(call(2)), now=0.0) == []       # a result crossing it: ignored


# -- leases lost and handed back ------------------------------------------------------------
def test_a_dead_leased_worker_has_its_task_retried_through_the_head():
    owner = OwnerState()
    owner.lease_granted(CPU1, b"w1", "tcp://w1", now=0.0)
    submit(owner, spec(1))
    [retry] = owner.lease_lost(b"w1", "killed by SIGKILL")
    assert retry == SendToHead(spec(1)._replace(attempt=1))
    assert not owner.on_lease(spec(1).task_id) and owner.route_of(spec(1).task_id) is Route.HEAD


def test_a_dead_leased_worker_fails_a_task_out_of_retries_or_cancelled():
    owner = OwnerState()
    owner.lease_granted(CPU1, b"w1", "tcp://w1", now=0.0)
    submit(owner, spec(1, max_retries=0))
    [crashed] = owner.lease_lost(b"w1", "killed by SIGKILL")
    assert completed([crashed]) == [(spec(1).task_id, CRASHED)]
    assert "killed by SIGKILL" in error_text(crashed)

    owner.lease_granted(CPU1, b"w2", "tcp://w2", now=0.0)
    submit(owner, spec(2))
    owner.cancel(spec(2).task_id, True)
    [cancelled] = owner.lease_lost(b"w2", "killed by SIGKILL")
    assert completed([cancelled]) == [(spec(2).task_id, CANCELLED)]


def test_a_task_handed_back_by_a_blocked_leased_worker_goes_through_the_head():
    owner = OwnerState()
    owner.lease_granted(CPU1, b"w1", "tcp://w1", now=0.0)
    submit(owner, spec(1))
    back = TaskResult(spec(1).task_id, RETURNED, (), 0.0, "", ())
    assert owner.finished(back, now=0.0) == [SendToHead(spec(1))]
    assert owner.counts()["pending"] == 1          # not ended: it runs elsewhere now
    assert owner.tick(now=0.0) == [ReturnLease(b"w1")]   # the blocked worker goes back


def test_the_head_asking_for_a_lease_back_gets_it_once_idle():
    owner = OwnerState()
    owner.lease_granted(CPU1, b"w1", "tcp://w1", now=0.0)
    submit(owner, spec(1))
    owner.lease_revoked(b"w1")
    assert owner.tick(now=0.0) == []                # its task still runs
    owner.finished(ok(spec(1)), now=0.0)
    assert owner.tick(now=0.0) == [ReturnLease(b"w1")]


# -- actors ------------------------------------------------------------------------------
def test_actor_calls_ask_once_and_leave_in_call_order():
    owner = OwnerState()
    assert submit(owner, call(1)) == [LocateActor(ACTOR)]
    assert submit(owner, call(2), ready=False) == []
    assert submit(owner, call(3)) == []
    assert owner.actor_located(ACTOR, "tcp://a") == [SendToWorker("tcp://a", call(1))]
    [sent2, sent3] = owner.arguments_ready(call(2).task_id, ())   # call 3 waited behind it
    assert (sent2.spec.task_id, sent3.spec.task_id) == (call(2).task_id, call(3).task_id)


def test_a_dead_actor_fails_calls_in_flight_and_later_ones():
    owner = OwnerState()
    owner.actor_located(ACTOR, "tcp://a")
    submit(owner, call(1))
    out = owner.actor_gone(ACTOR, "it was killed", restarting=False)
    assert completed(out) == [(call(1).task_id, CRASHED)]
    later = submit(owner, call(2))
    assert completed(later) == [(call(2).task_id, CRASHED)]
    assert "it was killed" in error_text(later[0]) and "t2" in error_text(later[0])


def test_a_restarting_actor_fails_calls_in_flight_and_later_ones_wait_for_it():
    owner = OwnerState()
    owner.actor_located(ACTOR, "tcp://old")
    submit(owner, call(1))
    assert completed(owner.actor_gone(ACTOR, "crashed", restarting=True)) == [(call(1).task_id, CRASHED)]
    assert submit(owner, call(2)) == []
    assert owner.actor_located(ACTOR, "tcp://new") == [SendToWorker("tcp://new", call(2))]


def test_a_restarting_actor_gets_again_the_calls_in_flight_with_retries_left():
    owner = OwnerState()
    owner.actor_located(ACTOR, "tcp://old")
    submit(owner, call(1, retries=1))
    assert owner.actor_gone(ACTOR, "crashed", restarting=True) == []   # no failure
    again = call(1, retries=1)._replace(attempt=1)
    assert owner.actor_located(ACTOR, "tcp://new") == [SendToWorker("tcp://new", again)]
    out = owner.actor_gone(ACTOR, "crashed again", restarting=True)    # no retries left
    assert completed(out) == [(call(1).task_id, CRASHED)]
    assert "crashed again" in error_text(out[0])


def test_a_call_waiting_for_the_restarted_actor_is_cancelled_here():
    owner = OwnerState()
    owner.actor_located(ACTOR, "tcp://old")
    submit(owner, call(1, retries=-1))
    owner.actor_gone(ACTOR, "crashed", restarting=True)
    assert completed(owner.cancel(call(1).task_id, False)) == [(call(1).task_id, CANCELLED)]
    assert owner.actor_located(ACTOR, "tcp://new") == []


def test_a_late_answer_of_a_requeued_call_ends_it_and_it_is_not_sent_again():
    owner = OwnerState()
    owner.actor_located(ACTOR, "tcp://old")
    submit(owner, call(1, retries=1))
    submit(owner, call(2))
    owner.actor_gone(ACTOR, "crashed", restarting=True)   # call 1 waits, call 2 failed
    assert completed(owner.finished(ok(call(1)), now=0.0)) == [(call(1).task_id, OK)]
    assert owner.actor_located(ACTOR, "tcp://new") == []
    assert owner.counts()["pending"] == 0


def test_cancel_of_a_call_waiting_in_the_fifo_lets_the_next_go():
    owner = OwnerState()
    owner.actor_located(ACTOR, "tcp://a")
    submit(owner, call(1), ready=False)
    submit(owner, call(2))
    out = owner.cancel(call(1).task_id, False)
    assert out[0] == SendToWorker("tcp://a", call(2))
    assert completed(out) == [(call(1).task_id, CANCELLED)]


def test_counts_follow_outcomes():
    owner = OwnerState()
    submit(owner, spec(1))
    submit(owner, spec(2))
    owner.finished(ok(spec(1)), now=0.0)
    owner.finished(TaskResult(spec(2).task_id, ERROR, (Payload(b""),), 0.0, "", ()), now=0.0)
    assert owner.counts() == {"pending": 0, "on_lease": 0, "done": 1, "failed": 1, "cancelled": 0}


def test_cancel_says_whether_the_worker_cancels_the_tasks_it_submitted():
    owner = OwnerState()
    submit(owner, spec(1))
    assert owner.cancel(spec(1).task_id, False, recursive=False) == [
        CancelRemote(spec(1).task_id, False, b"", b"", False)]
    assert owner.cancel(spec(1).task_id, False)[0].recursive   # Ray's default


def test_a_cancelled_parents_children_are_cancelled_not_the_others():
    """In a worker: the tasks its running task submitted are cancelled with it."""
    parent, other = b"P" * 16, b"Q" * 16
    owner = OwnerState()
    submit(owner, spec(1), parent=parent)
    submit(owner, spec(2), parent=other)
    submit(owner, spec(3), ready=False, parent=parent)   # not sent yet: ends here
    out = owner.cancel_children(parent, force=True)
    assert CancelRemote(spec(1).task_id, True, b"", b"", True) in out
    assert completed(out) == [(spec(3).task_id, CANCELLED)]
    assert not any(type(c) is CancelRemote and c.task_id == spec(2).task_id for c in out)
    assert owner.cancel_children(b"R" * 16, force=False) == []


def test_a_task_whose_options_hold_an_unhashable_value_is_routed():
    # A runtime_env travels as a dict in the options: routing must not need to hash them.
    owner = OwnerState()
    env = spec(1, options=(("runtime_env", {"env_vars": {"A": "1"}}),))
    assert submit(owner, env)[-1] == SendToHead(env)
    spread = spec(2, options=(("runtime_env", {}), ("scheduling_strategy", "SPREAD")))
    assert submit(owner, spread) == [SendToHead(spread)]


# -- the head restarted --------------------------------------------------------------------
def test_a_restarted_head_gets_again_the_tasks_with_retries_left_counted_as_retries():
    owner = OwnerState()
    submit(owner, spec(1))
    submit(owner, spec(2, max_retries=0))
    submit(owner, spec(3, max_retries=1))
    lost = RuntimeError("the head restarted")
    out = owner.head_restarted(lost)
    again = [c.spec for c in out if type(c) is SendToHead]
    assert [(s.task_id, s.attempt) for s in again] == [(spec(1).task_id, 1),
                                                       (spec(3).task_id, 1)]
    [failed] = [c for c in out if type(c) is Complete]
    assert failed.result.task_id == spec(2).task_id and failed.result.status == CRASHED
    assert "the head restarted" in error_text(failed)
    assert owner.pending(spec(1).task_id) and not owner.pending(spec(2).task_id)
    # A second restart: task 3 has used its one retry, task 1 goes again.
    out = owner.head_restarted(lost)
    assert [c.spec.attempt for c in out if type(c) is SendToHead] == [2]
    assert completed(out) == [(spec(3).task_id, CRASHED)]


def test_after_a_restart_a_result_is_taken_once():
    owner = OwnerState()
    submit(owner, spec(1))
    owner.head_restarted(RuntimeError("restarted"))
    # Its worker lived on and finished it, and the copy sent again ran too: one Complete.
    assert completed(owner.finished(ok(spec(1)), now=0.0)) == [(spec(1).task_id, OK)]
    assert owner.finished(ok(spec(1)), now=0.0) == []
    assert owner.counts()["done"] == 1 and owner.counts()["pending"] == 0


def test_a_restart_leaves_leased_tasks_actor_calls_and_unsent_tasks_alone():
    owner = OwnerState()
    submit(owner, spec(1))
    owner.lease_granted(CPU1, b"w1", "tcp://w1", now=0.0)
    owner.finished(ok(spec(1)), now=0.0)
    submit(owner, spec(2))                       # on the lease
    submit(owner, call(3))                       # an actor call (waits for its actor's place)
    submit(owner, spec(4), ready=False)          # waits for its arguments
    assert owner.head_restarted(RuntimeError("restarted")) == []
    assert owner.on_lease(spec(2).task_id)
    assert owner.leases_held() == [(b"w1", CPU1)]   # declared to the new head


def test_a_restart_fails_cancelled_tasks_and_actor_creations():
    owner = OwnerState()
    submit(owner, spec(1))
    owner.cancel(spec(1).task_id, force=False)
    creation = spec(2, actor=ACTOR, method="__init__", resources=())
    submit(owner, creation)
    out = owner.head_restarted(RuntimeError("restarted"))
    assert completed(out) == [(spec(1).task_id, CANCELLED), (creation.task_id, CRASHED)]
    assert not [c for c in out if type(c) is SendToHead]


def test_a_restart_forgets_lease_requests_the_old_head_never_answered():
    owner = OwnerState()
    assert AskLease(CPU1) in submit(owner, spec(1))
    owner.head_restarted(RuntimeError("restarted"))
    owner.finished(ok(spec(1)), now=0.0)
    # Asked again: the old head's answer will never come.
    assert AskLease(CPU1) in submit(owner, spec(2))
