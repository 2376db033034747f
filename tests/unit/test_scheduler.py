"""Unit tests of rayipy.core.scheduler.Scheduler: placement, pipelining, leases, failures."""

from __future__ import annotations


from rayipy.core.scheduler import (
    DEEP_PIPELINE, LONG_TASK_SECONDS, MAX_PIPELINE, SMALL_ARGS_BYTES, UNKNOWN_DURATION_DEPTH,
    CancelRunning, Execute, Fail, Retire, Scheduler, Spawn, Steal)
from rayipy.core.state import WorkerStatus, shown_resources
from rayipy.protocol.messages import CANCELLED, CRASHED, ERROR, Payload, TaskSpec

OWNER = b"O" * 8
NODE, AGENT = b"node-1", b"agent-1"
W1, W2, W3 = b"worker-1", b"worker-2", b"worker-3"
CPU1 = (("CPU", 1.0),)
CODE = {b"f": b"code of f", b"g": b"code of g"}


def spec(n: int, resources: tuple = CPU1, fid: bytes = b"f", owner: bytes = OWNER,
         max_retries: int = 3) -> TaskSpec:
    return TaskSpec(owner + n.to_bytes(8, "big"), fid, f"task{n}", Payload(b"args"), (), 1,
                    resources, max_retries)


def tid(n: int, owner: bytes = OWNER) -> bytes:
    return owner + n.to_bytes(8, "big")


def make(cpu: float = 2.0, workers: tuple = (W1, W2), **extra) -> Scheduler:
    s = Scheduler()
    for fid, code in CODE.items():
        s.add_function(fid, code)
    assert s.add_node(NODE, AGENT, {"CPU": cpu, **extra}, {"host": "h"}) == []
    for i, w in enumerate(workers):
        assert s.add_worker(w, NODE, 100 + i) == []
    return s


def of(out: list, cls: type) -> list:
    return [x for x in out if isinstance(x, cls)]


def placed(out: list) -> dict[bytes, list[int]]:
    """worker -> task numbers of the Execute instructions in ``out``."""
    result: dict[bytes, list[int]] = {}
    for x in of(out, Execute):
        result.setdefault(x.worker, []).extend(int.from_bytes(sp.task_id[8:], "big") for sp in x.specs)
    return result


def queued(s: Scheduler, request: tuple = CPU1) -> list[int]:
    return [int.from_bytes(t[8:], "big") for t in s.ready.get(request, ())]


def cpu_left(s: Scheduler) -> float:
    return s.nodes[NODE].available["CPU"]


def finish_all(s: Scheduler, duration: float = 0.5) -> list:
    out = []
    for w in list(s.workers.values()):
        if w.queue:
            out += s.finished(w.worker_id, list(w.queue), [duration] * len(w.queue))
    return out


# -- placement -----------------------------------------------------------------------
def test_tasks_go_to_idle_workers_with_function_bytes():
    s = make()
    out = s.submit([spec(1), spec(2)])
    assert placed(out) == {W1: [1], W2: [2]}
    for x in out:
        assert x.functions == [(b"f", b"code of f")]
        assert x.specs[0].attempt == 0
    assert cpu_left(s) == 0.0
    assert s.summary()["running"] == 2


def test_function_bytes_only_the_first_time_per_worker():
    s = make()
    s.submit([spec(1), spec(2)])
    finish_all(s)
    out = s.submit([spec(3), spec(4, fid=b"g")])
    assert {x.worker: x.functions for x in out} == {W1: [], W2: [(b"g", b"code of g")]}


def test_one_function_entry_for_several_specs():
    s = make(workers=(W1,))
    out = s.submit([spec(1), spec(2)])
    assert out == [Execute(W1, [spec(1), spec(2)], [(b"f", b"code of f")])]


def test_unknown_duration_pipelines_two_per_worker():
    s = make()
    out = s.submit([spec(i) for i in range(1, 7)])
    assert placed(out) == {W1: [1, 3], W2: [2, 4]}
    assert UNKNOWN_DURATION_DEPTH == 2
    assert queued(s) == [5, 6]
    assert s.summary()["queued"] == 2 and s.summary()["assigned"] == 4
    assert of(out, Spawn) == []               # no CPU left for another worker


def test_short_durations_deepen_the_pipeline():
    s = make()
    s.submit([spec(1), spec(2)])
    s.finished(W1, [tid(1)], [0.001])
    s.finished(W2, [tid(2)], [0.001])
    out = s.submit([spec(i) for i in range(10, 30)])
    got = placed(out)
    assert sum(len(v) for v in got.values()) == 20
    assert queued(s) == []
    assert max(len(v) for v in got.values()) > UNKNOWN_DURATION_DEPTH


def test_tiny_tasks_with_small_arguments_pipeline_deep():
    """A worker batches results for 5 ms: tiny tasks need more than 64 queued, or its
    queue runs low first and every result (and every refill) travels alone."""
    s = make(cpu=1.0, workers=(W1,))
    s.submit([spec(1)])
    s.finished(W1, [tid(1)], [1e-6])
    out = s.submit([spec(i) for i in range(10, 10 + DEEP_PIPELINE + 5)])
    assert len(placed(out)[W1]) == DEEP_PIPELINE and len(queued(s)) == 5


def test_tiny_tasks_with_large_arguments_pipeline_as_before():
    s = make(cpu=1.0, workers=(W1,))
    s.submit([spec(1)])
    s.finished(W1, [tid(1)], [1e-6])
    big = Payload(b"x" * (SMALL_ARGS_BYTES + 1))
    out = s.submit([spec(i)._replace(args=big) for i in range(10, 10 + MAX_PIPELINE + 5)])
    assert len(placed(out)[W1]) == MAX_PIPELINE and len(queued(s)) == 5


def test_long_durations_do_not_pipeline():
    s = make()
    s.submit([spec(1), spec(2)])
    finish_all(s, duration=5.0)
    out = s.submit([spec(i) for i in range(10, 14)])
    assert placed(out) == {W1: [10], W2: [11]}
    assert queued(s) == [12, 13]


def test_finished_dispatches_queued_tasks_to_the_freed_worker():
    s = make()
    s.submit([spec(i) for i in range(1, 6)])   # W1 [1, 3], W2 [2, 4], queued [5]
    # 0.5 s tasks: pipeline depth 1. W1 runs 3; task 4, queued behind 2 while the duration
    # was unknown, goes back to wait for the next free worker.
    assert s.finished(W1, [tid(1)], [0.5]) == [Steal(W2, 1)]
    out = s.finished(W1, [tid(3)], [0.5])
    assert out == [Execute(W1, [spec(5)], [])]


def test_lease_is_released_when_the_queue_empties():
    s = make()
    s.submit([spec(1), spec(2), spec(3)])
    s.finished(W1, [tid(1)], [0.5])
    assert cpu_left(s) == 0.0 and s.workers[W1].allocation == CPU1   # task 3 still queued on W1
    s.finished(W1, [tid(3)], [0.5])
    assert s.workers[W1].allocation is None and cpu_left(s) == 1.0
    s.finished(W2, [tid(2)], [0.5])
    assert s.nodes[NODE].available == s.nodes[NODE].total
    assert s.summary()["finished"] == 3 and s.tasks == {}


def test_impossible_request_fails_at_submit_naming_the_resource():
    s = make()
    out = s.submit([spec(1, resources=(("CPU", 4.0),)), spec(2, resources=(("GPU", 1.0),))])
    assert [type(x) for x in out] == [Fail, Fail]
    (first, second) = out
    assert first.task == spec(1, resources=(("CPU", 4.0),)) and first.status == ERROR
    assert isinstance(first.error, ValueError)
    assert "'task1' asks for CPU=4" in str(first.error)
    assert "CPU=4 (the largest node has 2)" in str(first.error)
    assert "GPU=1 (the largest node has 0)" in str(second.error)
    assert s.tasks == {} and s.summary()["failed"] == 2


def test_without_nodes_tasks_wait_instead_of_failing():
    s = Scheduler()
    assert s.submit([spec(1, resources=(("CPU", 64.0),))]) == []
    assert queued(s, (("CPU", 64.0),)) == [1]


def test_task_waits_for_resources_and_runs_after_finished():
    s = make()
    big = (("CPU", 2.0),)
    out = s.submit([spec(1, resources=big), spec(2)])
    assert placed(out) == {W1: [1]}
    assert queued(s) == [2] and cpu_left(s) == 0.0
    out = s.finished(W1, [tid(1)], [0.5])
    assert sum(placed(out).values(), []) == [2]
    assert cpu_left(s) == 1.0


def test_custom_resources_are_leased_and_returned():
    s = make(TPU=1.0)
    req = (("CPU", 1.0), ("TPU", 1.0))
    out = s.submit([spec(1, resources=req), spec(2, resources=req)])
    assert placed(out) == {W1: [1, 2]}         # pipelined: the second TPU task cannot start
    assert shown_resources(s.nodes[NODE].available) == {"CPU": 1.0, "TPU": 0.0}
    finish_all(s)
    assert shown_resources(s.nodes[NODE].available) == {"CPU": 2.0, "TPU": 1.0}


def test_a_new_nodes_own_workers_count_as_starting():
    s = Scheduler()
    s.add_function(b"f", b"code")
    s.submit([spec(i) for i in range(1, 6)])
    assert s.add_node(NODE, AGENT, {"CPU": 2.0}, {}) == []   # the agent starts 2 by itself
    assert s.nodes[NODE].spawning == 2
    out = s.add_worker(W1, NODE, 1)
    assert placed(out) == {W1: [1, 2]} and of(out, Spawn) == []
    assert s.nodes[NODE].spawning == 1
    out = s.add_worker(W2, NODE, 2)
    assert placed(out) == {W2: [3, 4]} and s.nodes[NODE].spawning == 0
    assert queued(s) == [5]


# -- nested tasks: blocked / unblocked -----------------------------------------------------
def test_blocked_worker_gives_back_cpu_and_queued_tasks_and_a_worker_is_spawned():
    s = make()
    s.submit([spec(i) for i in range(1, 6)])     # W1 [1, 3], W2 [2, 4], queued [5]
    out = s.blocked(W1, [tid(3)])
    assert out == [Spawn(AGENT, 1)]
    assert cpu_left(s) == 1.0
    assert list(s.workers[W1].queue) == [tid(1)]
    assert queued(s) == [3, 5]
    assert s.summary()["blocked_workers"] == 1
    assert s.blocked(W1, []) == []              # already blocked
    assert s.nodes[NODE].spawning == 1
    out = s.add_worker(W3, NODE, 3)
    # f blocked: nothing queues behind task 3, which may block too
    assert out == [Execute(W3, [spec(3)], [(b"f", b"code of f")])]
    assert queued(s) == [5]


def test_no_task_queues_behind_a_task_of_a_function_that_blocked():
    # g(x) waits for f(x), submitted just before it. Queued behind g on the same worker,
    # the next f would wait for g to end: a new worker per blocked g, and a stall while
    # each starts.
    s = make()
    s.submit([spec(1), spec(2, fid=b"g")])
    finish_all(s, duration=0.0001)                # both known quick: deep pipelines
    s.submit([spec(3, fid=b"g")])
    s.blocked(W1, [])                             # g blocks
    assert s.blocking == {b"g"}
    finish_all(s, duration=0.0001)
    s.unblocked(W1)
    out = s.submit([spec(n, fid=b"g" if n % 2 else b"f") for n in range(4, 12)])
    # idle workers first (4, 5), then the shortest open queue; each queue ends at its g
    assert placed(out) == {W1: [4, 6, 7], W2: [5]}
    assert queued(s) == [8, 9, 10, 11]
    out = s.finished(W1, [tid(4), tid(6), tid(7)], [0.0001] * 3)
    assert placed(out) == {W1: [8, 9]}
    assert queued(s) == [10, 11]
    # Tasks of other functions still queue deep behind each other.
    finish_all(s, duration=0.0001)
    finish_all(s, duration=0.0001)
    out = s.submit([spec(n) for n in range(12, 20)])
    assert placed(out) == {W1: [12, 14, 16, 18], W2: [13, 15, 17, 19]}


def test_spawns_match_free_slots_and_are_not_repeated():
    s = make()
    s.submit([spec(i) for i in range(1, 6)])     # W1 [1, 3], W2 [2, 4], queued [5]
    assert s.blocked(W1, [tid(3)]) == [Spawn(AGENT, 1)]
    assert s.blocked(W2, [tid(4)]) == [Spawn(AGENT, 1)]
    assert cpu_left(s) == 2.0 and s.nodes[NODE].spawning == 2
    assert s.submit([spec(6)]) == []             # two workers already starting
    assert sorted(queued(s)) == [3, 4, 5, 6]


def test_blocked_worker_tasks_go_to_an_idle_worker_without_spawning():
    s = make()
    s.submit([spec(1), spec(2)])
    s.finished(W2, [tid(2)], [0.5])              # W2 idle
    out = s.blocked(W1, [tid(2)])                # not on W1's queue: ignored
    assert out == [] and list(s.workers[W1].queue) == [tid(1)]
    out = s.submit([spec(3, fid=b"g"), spec(4, fid=b"g")])
    assert placed(out) == {W2: [3, 4]}
    assert of(out, Spawn) == []


def test_unblocked_takes_the_lease_back():
    s = make()
    s.submit([spec(1), spec(2)])
    s.blocked(W1, [])
    assert cpu_left(s) == 1.0 and s.workers[W1].state is WorkerStatus.BLOCKED
    assert s.unblocked(W1) == []
    assert cpu_left(s) == 0.0 and s.workers[W1].state is not WorkerStatus.BLOCKED
    assert s.unblocked(W1) == []                # not blocked any more
    finish_all(s)
    assert s.nodes[NODE].available == s.nodes[NODE].total


def test_blocked_worker_whose_queue_empties_has_no_lease_after_unblocking():
    s = make()
    s.submit([spec(1)])
    s.blocked(W1, [])
    s.finished(W1, [tid(1)], [0.5])
    assert s.workers[W1].allocation is None and cpu_left(s) == 2.0
    s.unblocked(W1)
    assert cpu_left(s) == 2.0


def test_returned_tasks_are_requeued_in_order_and_dispatched():
    s = make(workers=(W1,))
    s.submit([spec(1), spec(2), spec(3)])        # W1 [1, 2], queued [3]
    out = s.returned(W1, [tid(2)])
    assert queued(s) == [3] and placed(out) == {W1: [2]}
    assert list(s.workers[W1].queue) == [tid(1), tid(2)]


# -- worker deaths ----------------------------------------------------------------------------
def crash(s: Scheduler, worker: bytes) -> list:
    return s.remove_worker(worker, RuntimeError("worker died"), CRASHED, CANCELLED)


def test_dead_worker_task_is_retried_with_the_next_attempt():
    s = make(cpu=1.0, workers=(W1,))
    s.submit([spec(1), spec(2), spec(3)])
    out = crash(s, W1)
    assert of(out, Fail) == [] and of(out, Execute) == []
    assert out == [Spawn(AGENT, 1)]
    assert sorted(queued(s)) == [1, 2, 3]
    assert cpu_left(s) == 1.0 and W1 not in s.workers
    assert s.summary()["retried"] == 1
    out = s.add_worker(W2, NODE, 2)
    specs = {int.from_bytes(sp.task_id[8:], "big"): sp for x in of(out, Execute) for sp in x.specs}
    assert specs[1].attempt == 1
    assert all(specs[n].attempt == 0 for n in specs if n != 1)
    assert of(out, Execute)[0].functions == [(b"f", b"code of f")]


def test_dead_worker_tasks_keep_their_order():
    s = make(cpu=1.0, workers=(W1,))
    s.submit([spec(1), spec(2), spec(3), spec(4)])   # W1 [1, 2], queued [3, 4]
    crash(s, W1)
    assert queued(s) == [1, 2, 3, 4]


def test_retries_run_out_then_crashed():
    s = make(workers=(W1, W2))
    s.submit([spec(1, max_retries=1)])
    out = crash(s, W1)
    assert out == [Execute(W2, [spec(1, max_retries=1)._replace(attempt=1)],
                           [(b"f", b"code of f")])]
    out = crash(s, W2)
    fails = of(out, Fail)
    assert len(fails) == 1
    assert fails[0].status == CRASHED and str(fails[0].error) == "worker died"
    assert fails[0].task.task_id == tid(1) and fails[0].task.attempt == 1
    assert tid(1) not in s.tasks


def test_no_retries_fails_at_once():
    s = make(workers=(W1,))
    s.submit([spec(1, max_retries=0)])
    (fail,) = of(crash(s, W1), Fail)
    assert (fail.task.task_id, fail.status) == (tid(1), CRASHED)


def test_cancelled_running_task_of_a_dead_worker_fails_as_cancelled():
    s = make(workers=(W1,))
    s.submit([spec(1)])
    assert s.cancel(tid(1), True, CANCELLED, RuntimeError("cancelled")) == [
        CancelRunning(W1, tid(1), True)]
    (fail,) = of(crash(s, W1), Fail)
    assert fail.status == CANCELLED


def test_cancelled_queued_task_of_a_dead_worker_is_not_rerun():
    s = make(workers=(W1,))
    s.submit([spec(1), spec(2)])                 # W1 [1, 2]
    s.cancel(tid(2), False, CANCELLED, RuntimeError("cancelled"))
    out = crash(s, W1)
    assert [(f.task.task_id, f.status) for f in of(out, Fail)] == [(tid(2), CANCELLED)]
    assert 2 not in queued(s)


def test_remove_unknown_worker():
    assert crash(make(), b"nobody") == []


def test_removing_a_node_with_a_busy_and_an_idle_worker():
    s = make(workers=(W1, W2))
    s.submit([spec(1)])                          # W1 busy, W2 idle
    assert sorted(s.remove_node(NODE)) == [W1, W2]
    crash(s, W1)                                 # head.remove_node removes them one by one
    crash(s, W2)
    assert s.workers == {} and queued(s) == [1]


# -- cancel ------------------------------------------------------------------------------------
def test_cancel_of_a_queued_task_fails_it():
    s = make(workers=())
    s.submit([spec(1), spec(2)])
    error = RuntimeError("cancelled")
    assert s.cancel(tid(1), False, CANCELLED, error) == [Fail(spec(1), CANCELLED, error)]
    assert queued(s) == [2] and tid(1) not in s.tasks
    assert s.cancel(tid(1), False, CANCELLED, error) == []


def test_cancel_of_an_assigned_task_asks_its_worker():
    s = make()
    s.submit([spec(1), spec(2), spec(3)])
    assert s.cancel(tid(3), False, CANCELLED, RuntimeError()) == [CancelRunning(W1, tid(3), False)]
    assert s.tasks[tid(3)].cancelled


# -- membership and owners ----------------------------------------------------------------
def test_worker_registering_before_its_node_is_attached_later():
    s = Scheduler()
    s.add_function(b"f", b"code")
    assert s.add_worker(W1, NODE, 7) == []
    assert W1 not in s.workers
    assert s.add_node(NODE, AGENT, {"CPU": 1.0}, {}) == []
    assert s.workers[W1].pid == 7 and W1 in s.nodes[NODE].workers
    assert s.early_workers == {}
    assert placed(s.submit([spec(1)])) == {W1: [1]}


def test_early_worker_gets_tasks_queued_before_its_node():
    s = Scheduler()
    s.submit([spec(1)])
    s.add_worker(W1, NODE, 7)
    out = s.add_node(NODE, AGENT, {"CPU": 1.0}, {})
    assert placed(out) == {W1: [1]}


def test_drop_owner_removes_only_that_owners_tasks():
    s = make(workers=(W1,))
    other = b"X" * 8
    s.submit([spec(1), spec(2), spec(3), spec(4, owner=other)])   # W1 [1, 2]
    s.drop_owner(OWNER)
    assert list(s.ready[CPU1]) == [tid(4, other)]
    # Assigned ones too: their results may go straight to the gone owner, and nobody
    # would say they arrived. The worker is free for others' tasks.
    assert not {tid(1), tid(2), tid(3)} & set(s.tasks)
    assert not s.workers[W1].queue and s.workers[W1].allocation is None
    assert placed(s.dispatch()) == {W1: [4]}


def test_an_idle_worker_steals_tasks_queued_behind_a_long_one():
    from rayipy.core.scheduler import Steal
    s = make()
    out = s.submit([spec(1), spec(2), spec(3), spec(4)])
    assert placed(out) == {W1: [1, 3], W2: [2, 4]}
    # W2 finishes both quickly; W1 is still on task 1 with task 3 queued behind it.
    out = s.finished(W2, [tid(2), tid(4)], [0.01, 0.01])
    assert of(out, Steal) == [Steal(W1, 1)]
    assert of(s.finished(W2, [], []), Steal) == []  # one steal at a time per victim
    out = s.returned(W1, [tid(3)])
    assert placed(out) == {W2: [3]}
    assert not s.workers[W1].steal_pending


def test_extra_workers_idle_for_a_while_are_retired():
    from rayipy.core.scheduler import IDLE_RETIRE_SECONDS, Retire
    s = make(workers=(W1, W2, W3))  # 2 CPUs, 3 workers: one extra
    assert s.tick(100.0) == []
    assert s.tick(100.0 + IDLE_RETIRE_SECONDS / 2) == []
    out = s.tick(101.0 + IDLE_RETIRE_SECONDS)
    assert len(of(out, Retire)) == 1 and len(s.workers) == 2
    assert s.tick(200.0) == []  # never below num_cpus


# -- pipelining never holds a task behind an unknown-length or long one (issue 14) --------
def test_tasks_queued_while_the_duration_was_unknown_go_back_once_it_is_known():
    """The issue's program: s(5), then four s(0.1), then s(10) on 2 workers. Queued
    behind the 5 s task while durations were unknown, task 3 goes back to the front of
    the ready queue when the first 0.1 s result says no task should wait behind
    another, so it runs before the 10 s task takes the free worker."""
    s = make()
    out = s.submit([spec(i) for i in range(1, 7)])
    assert placed(out) == {W1: [1, 3], W2: [2, 4]}
    out = s.finished(W2, [tid(2)], [0.1])
    assert of(out, Steal) == [Steal(W1, 1)]
    out = s.returned(W1, [tid(3)])
    assert queued(s) == [3, 5, 6]          # first in line again
    out = s.finished(W2, [tid(4)], [0.1])
    assert placed(out) == {W2: [3]}        # the free worker takes 3 before 5 and 6
    out = s.finished(W2, [tid(3)], [0.1])
    assert placed(out) == {W2: [5]}
    assert list(s.workers[W1].queue) == [tid(1)]


def test_nothing_is_taken_back_when_the_measured_duration_allows_the_queue():
    s = make()
    s.submit([spec(i) for i in range(1, 7)])
    out = s.finished(W2, [tid(2)], [0.001])   # 20 ms of work may wait: the queues stand
    assert of(out, Steal) == []


def test_tasks_behind_a_task_that_runs_long_go_back_and_nothing_queues_there():
    s = make()
    s.submit([spec(1), spec(2)])
    finish_all(s, duration=0.001)             # a quick function: deep pipelines
    out = s.submit([spec(i) for i in range(10, 20)])
    assert len(s.workers[W1].queue) == 5
    assert s.tick(100.0) == []                # first seen running
    assert s.tick(100.0 + LONG_TASK_SECONDS / 2) == []
    out = s.tick(100.0 + LONG_TASK_SECONDS + 0.1)
    assert sorted(of(out, Steal)) == sorted([Steal(W1, 4), Steal(W2, 4)])
    s.returned(W1, list(s.workers[W1].queue)[1:])
    out = s.submit([spec(30)])
    assert placed(out) == {}                  # W2 still queues... but is stolen from too
    s.returned(W2, list(s.workers[W2].queue)[1:])
    assert placed(s.dispatch()) == {}         # neither long-running worker takes more
    assert len(queued(s)) == 9
    out = s.finished(W1, [tid(10)], [2.0])    # the long task ends: W1 takes work again
    assert sum(len(v) for v in placed(out).values()) >= 1


def test_a_task_running_long_with_nothing_behind_it_is_left_alone():
    s = make()
    s.submit([spec(1)])
    s.tick(0.0)
    assert s.tick(LONG_TASK_SECONDS * 3) == []


# -- max_calls ------------------------------------------------------------------------------
def limited(n: int, calls: int) -> TaskSpec:
    return spec(n)._replace(options=(("max_calls", calls),))


def test_max_calls_retires_the_worker_once_its_calls_are_done():
    s = make()
    out = s.submit([limited(1, 1), limited(2, 1), limited(3, 1)])
    assert placed(out) == {W1: [1], W2: [2]}  # nothing queues behind a worker's last call
    assert queued(s) == [3]
    out = s.finished(W1, [tid(1)], [0.01])
    assert of(out, Retire) == [Retire(AGENT, W1)]
    assert W1 not in s.workers and W1 not in s.nodes[NODE].workers
    assert cpu_left(s) == 1.0 and placed(out) == {}   # 3 waits for the replacement
    assert s.worker_died(W1, "retired") == []         # its agent's report finds nothing
    assert s.add_worker(W3, NODE, 300) == [Execute(W3, [limited(3, 1)], [(b"f", b"code of f")])]


def test_max_calls_counts_per_function_and_worker():
    s = make(cpu=1.0, workers=(W1,))
    s.submit([spec(1)])
    s.finished(W1, [tid(1)], [0.001])
    out = s.submit([limited(i, 3) for i in range(10, 15)] + [spec(20)])
    assert placed(out) == {W1: [10, 11, 12]}   # the third call closes its queue
    assert s.workers[W1].retiring
    out = s.finished(W1, [tid(10), tid(11)], [0.001, 0.001])
    assert of(out, Retire) == [] and placed(out) == {}
    out = s.finished(W1, [tid(12)], [0.001])
    assert of(out, Retire) == [Retire(AGENT, W1)]
    assert queued(s) == [13, 14, 20]


def test_max_calls_worker_that_dies_first_has_its_tasks_retried():
    s = make(workers=(W1,))
    s.submit([limited(1, 1)])
    out = s.worker_died(W1, "killed")
    assert of(out, Retire) == [] and queued(s) == [1]
