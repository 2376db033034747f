"""A restarted head's duplicate window and claims (pure): a task sent again by its owner
while its result also comes from the worker that lived on, or while that worker still
holds it, gives one result and, where it can, one run."""

from __future__ import annotations

from rayipy.core.head_recovery import DuplicateWindow, KeptResults, TaskClaims, drop_queued
from rayipy.core.scheduler import Execute, Scheduler
from rayipy.core.worker_state import WorkerState
from rayipy.protocol.messages import Payload, TaskSpec

OWNER = b"D" * 8
CPU1 = (("CPU", 1.0),)


def spec(n: int, attempt: int = 1) -> TaskSpec:
    return TaskSpec(OWNER + n.to_bytes(8, "big"), b"f", f"t{n}", Payload(b""), (), 1, CPU1, 3,
                    attempt, b"", "", ())


def one_worker() -> Scheduler:
    s = Scheduler()
    s.add_function(b"f", b"code")
    s.add_node(b"n", b"agent", {"CPU": 1.0}, {})
    s.add_worker(b"w1", b"n", 1, "tcp://w1")
    return s


def test_a_task_the_head_has_already_is_not_queued_twice():
    s, window = one_worker(), DuplicateWindow()
    s.submit(window.fresh([spec(1, attempt=0)], s.tasks))   # held while the head was away
    assert window.fresh([spec(1), spec(2)], s.tasks) == [spec(2)]


def test_a_result_delivered_before_the_copy_comes_drops_the_copy():
    s, window = one_worker(), DuplicateWindow()
    window.results(s, [spec(1).task_id], [True])            # from the worker that lived on
    assert window.fresh([spec(1)], s.tasks) == []
    # Once: a later submission (its value lost, made again from its lineage) runs.
    assert window.fresh([spec(1, attempt=2)], s.tasks) == [spec(1, attempt=2)]
    # Its owner was not registered yet: the result did not reach it, the copy must run.
    window.results(s, [spec(2).task_id], [False])
    assert window.fresh([spec(2)], s.tasks) == [spec(2)]


def test_a_result_takes_a_waiting_copy_out_of_the_queue():
    s, window = one_worker(), DuplicateWindow()
    specs = [spec(n) for n in range(1, 6)]
    out = s.submit(specs)
    # One worker: whatever is not on it (running or queued behind) waits in the ready queue.
    sent = {sp.task_id for x in out if isinstance(x, Execute) for sp in x.specs}
    waiting = [sp.task_id for sp in specs if sp.task_id not in sent]
    assert waiting and sent
    for task_id in waiting:
        window.results(s, [task_id], [True])
        assert task_id not in s.tasks and all(task_id not in q for q in s.ready.values())
    # A copy given to a worker already is left alone (it runs; its owner drops the result).
    for task_id in sent:
        assert not drop_queued(s, task_id) and task_id in s.tasks


# -- claims: a task a worker that lived on holds is given back to it, not run twice ------
def two_workers() -> Scheduler:
    s = one_worker()
    s.add_worker(b"w2", b"n", 2, "tcp://w2")
    return s


def executed(out) -> dict[bytes, list[bytes]]:
    return {x.worker: [sp.task_id for sp in x.specs] for x in out if isinstance(x, Execute)}


def test_a_claim_then_its_copy_goes_to_the_claiming_worker():
    s, claims = two_workers(), TaskClaims(hold_until=10.0)
    assert claims.declared(b"w2", [spec(1).task_id, spec(2).task_id], s, s.workers) == []
    given, rest = claims.submitted([spec(1), spec(2), spec(3)], s.workers, set(), now=0.0)
    assert given == {b"w2": [spec(1), spec(2)]}
    assert rest == []                    # spec 3 is sent again, no claim yet: held
    assert list(claims.held) == [spec(3).task_id]
    out = s.adopt_tasks(b"w2", given[b"w2"])
    # Recorded as given to it (its queue, its allocation, the records), and not sent: it
    # has them.
    assert executed(out) == {}
    assert list(s.workers[b"w2"].queue) == [spec(1).task_id, spec(2).task_id]
    assert s.tasks[spec(1).task_id].worker == b"w2"
    assert s.nodes[b"n"].available["CPU"] == 0.0
    # Their results end them as any task's, and free the worker.
    s.finished(b"w2", [spec(1).task_id, spec(2).task_id], [0.1, 0.1])
    assert not s.tasks and s.nodes[b"n"].available["CPU"] == 1.0


def test_the_death_of_a_worker_that_adopted_tasks_retries_them():
    s, claims = two_workers(), TaskClaims(hold_until=0.0)
    claims.declared(b"w2", [spec(1).task_id, spec(2).task_id], s, s.workers)
    given, _ = claims.submitted([spec(1), spec(2)], s.workers, set(), now=1.0)
    s.adopt_tasks(b"w2", given[b"w2"])
    out = s.worker_died(b"w2", "killed")
    assert s.tasks[spec(1).task_id].spec.attempt == 2          # the running one: a retry
    assert s.tasks[spec(2).task_id].spec.attempt == 1          # queued behind: requeued
    assert executed(out) == {b"w1": [spec(1).task_id, spec(2).task_id]}


def test_a_task_given_back_unrun_is_claimed_no_more():
    s, claims = two_workers(), TaskClaims(hold_until=0.0)
    claims.declared(b"w2", [spec(1).task_id], s, s.workers)
    claims.returned([spec(1).task_id])                           # its task blocked in get
    assert claims.submitted([spec(1)], s.workers, set(), now=1.0) == ({}, [spec(1)])


def test_a_copy_first_is_held_then_taken_by_the_claim():
    s, claims = two_workers(), TaskClaims(hold_until=10.0)
    given, rest = claims.submitted([spec(1), spec(2, attempt=0)], s.workers, set(), now=0.0)
    # Sent again (attempt > 0): held; a first submission is scheduled at once.
    assert given == {} and rest == [spec(2, attempt=0)]
    assert claims.declared(b"w2", [spec(1).task_id], s, s.workers) == [spec(1)]
    assert claims.held == {} and claims.claims == {}


def test_a_claim_takes_its_copy_out_of_the_ready_queue():
    s, claims = Scheduler(), TaskClaims(hold_until=0.0)
    s.add_function(b"f", b"code")
    s.add_node(b"n", b"agent", {"CPU": 1.0}, {})   # no worker yet: the copy waits queued
    given, rest = claims.submitted([spec(1)], s.workers, set(), now=1.0)
    assert given == {} and rest == [spec(1)]        # the hold is over: scheduled
    s.submit(rest)
    assert claims.declared(b"w9", [spec(1).task_id], s, {b"w9"}) == [spec(1)]
    assert spec(1).task_id not in s.tasks and not any(s.ready.values())


def test_a_copy_given_to_another_worker_already_is_left_there():
    s, claims = one_worker(), TaskClaims(hold_until=0.0)
    s.submit([spec(1)])
    assert s.tasks[spec(1).task_id].worker == b"w1"
    assert claims.declared(b"w2", [spec(1).task_id], s, {b"w2"}) == []
    assert claims.claims == {}


def test_held_copies_go_when_the_hold_ends_and_claims_when_the_wait_ends():
    s, claims = two_workers(), TaskClaims(hold_until=5.0)
    claims.declared(b"w7", [spec(1).task_id], s, set())   # its node not registered yet
    given, rest = claims.submitted([spec(1), spec(2)], s.workers, {b"w7"}, now=1.0)
    assert (given, rest) == ({}, []) and list(claims.held) == [spec(1).task_id, spec(2).task_id]
    assert claims.release(s.workers, {b"w7"}, now=2.0) == ({}, [])
    # The hold is over: the unclaimed copy is scheduled; the claimed one waits for its worker.
    assert claims.release(s.workers, {b"w7"}, now=6.0) == ({}, [spec(2)])
    assert claims.release({b"w7": None}, set(), now=7.0) == ({b"w7": [spec(1)]}, [])
    # A claim whose worker died (neither attached nor waiting): its copy runs elsewhere.
    claims.declared(b"w8", [spec(3).task_id], s, set())
    assert claims.submitted([spec(3)], s.workers, set(), now=8.0) == ({}, [spec(3)])
    # The end of the wait: claims dropped, held copies to schedule.
    claims.declared(b"w7", [spec(4).task_id], s, set())
    claims.submitted([spec(4)], s.workers, {b"w7"}, now=9.0)
    assert claims.over() == [spec(4)] and claims.claims == {} and claims.held == {}


def test_a_result_ends_a_claim_and_drops_a_held_copy():
    s, claims = two_workers(), TaskClaims(hold_until=5.0)
    claims.declared(b"w2", [spec(1).task_id], s, s.workers)
    claims.submitted([spec(2)], s.workers, set(), now=0.0)
    claims.finished([spec(1).task_id, spec(2).task_id], [True, True])
    assert claims.claims == {} and claims.held == {}
    # Its owner not registered: the result did not reach it, the copy must run.
    claims.submitted([spec(3)], s.workers, set(), now=0.0)
    claims.finished([spec(3).task_id], [False])
    assert list(claims.held) == [spec(3).task_id]


def test_an_actor_or_leased_worker_does_not_adopt_tasks():
    s = two_workers()
    s.workers[b"w2"].leased_to = b"D" * 8
    out = s.adopt_tasks(b"w2", [spec(1)])
    assert executed(out) == {b"w1": [spec(1).task_id]}   # scheduled as any task


def test_a_worker_names_the_head_tasks_it_holds():
    state = WorkerState("here")
    state.tasks_from_head([spec(1, attempt=0), spec(2, attempt=0)], blocked=False)
    state.calls_from_caller("caller", [spec(3, attempt=0)])   # a direct call: not the head's
    assert state.held_from_head() == [spec(1).task_id, spec(2).task_id]
    run = state.next_task(0.0)
    assert run is not None and run.spec == spec(1, attempt=0)
    assert state.held_from_head() == [spec(1).task_id, spec(2).task_id]   # running, first
    state.code_done(spec(1).task_id)                          # its result leaves: not held
    assert state.held_from_head() == [spec(2).task_id]


def test_results_for_an_owner_not_back_yet_are_kept_in_order_until_it_registers():
    kept = KeptResults()
    kept.keep(b"D" * 8, "TASK_DONE", ("first",), None)
    kept.keep(b"E" * 8, "TASK_DONE", ("other",), None)
    kept.keep(b"D" * 8, "TASK_DONE", ("second",), ["frames"])
    assert kept.take(b"D" * 8) == [("TASK_DONE", ("first",), None),
                                   ("TASK_DONE", ("second",), ["frames"])]
    assert kept.take(b"D" * 8) == []                 # given once
    assert list(kept.by_owner) == [b"E" * 8]


def test_a_worker_registration_carries_the_tasks_held_as_it_is_sent():
    import pickle
    import threading
    from types import SimpleNamespace

    from rayipy.node.worker import HeldTasks

    worker = SimpleNamespace(lock=threading.Lock(), state=WorkerState("here"))
    info = {"held_tasks": HeldTasks(worker)}          # put there once, at the start
    assert pickle.loads(pickle.dumps(dict(info)))["held_tasks"] == []
    worker.state.tasks_from_head([spec(1, attempt=0)], blocked=False)
    assert pickle.loads(pickle.dumps(dict(info)))["held_tasks"] == [spec(1).task_id]
