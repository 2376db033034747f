"""A restarted head's duplicate window (pure): a task sent again by its owner while its
result also comes from the worker that lived on gives one result and, where it can, one
run."""

from __future__ import annotations

from rayipy.core.head_recovery import DuplicateWindow, drop_queued
from rayipy.core.scheduler import Execute, Scheduler
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
