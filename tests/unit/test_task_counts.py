"""The cluster-wide task counts: one definition (rayipy.core.task_counts), kept by the
scheduler, read by ``rayipy status``, ``%cluster status``, the dashboard and the sidebar."""

from __future__ import annotations

from rayipy.core.scheduler import Scheduler
from rayipy.core.task_counts import DirectTally, outcome
from rayipy.protocol.messages import (CANCELLED, CRASHED, ERROR, OK, RETURNED, Payload, TaskResult,
                                      TaskSpec)

OWNER = b"O" * 8
NODE, AGENT = b"node-1", b"agent-1"
W1, W2 = b"worker-1", b"worker-2"
CPU1 = (("CPU", 1.0),)


def spec(n: int) -> TaskSpec:
    return TaskSpec(OWNER + n.to_bytes(8, "big"), b"f", f"task{n}", Payload(b""), (), 1, CPU1, 0)


def tid(n: int) -> bytes:
    return OWNER + n.to_bytes(8, "big")


def make() -> Scheduler:
    s = Scheduler()
    s.add_function(b"f", b"code")
    s.add_node(NODE, AGENT, {"CPU": 2.0}, {})
    s.add_worker(W1, NODE, 100)
    s.add_worker(W2, NODE, 101)
    return s


def ended(s: Scheduler) -> tuple[int, int, int]:
    summary = s.summary()
    return summary["finished"], summary["failed"], summary["cancelled"]


def test_each_status_has_one_count():
    assert outcome(OK) == "finished"
    assert outcome(ERROR) == outcome(CRASHED) == "failed"
    assert outcome(CANCELLED) == "cancelled"
    assert outcome(RETURNED) is None     # handed back unrun: it ends elsewhere


def test_tasks_that_raise_are_failed_not_finished():
    s = make()
    s.submit([spec(1), spec(2), spec(3)])
    s.finished(W1, [tid(1)], [0.1], [ERROR])
    s.finished(W2, [tid(2)], [0.1], [ERROR])
    s.finished(W1, [tid(3)], [0.1], [ERROR])
    assert ended(s) == (0, 3, 0)


def test_cancelled_is_its_own_count_whether_queued_or_running():
    s = make()
    s.submit([spec(1), spec(2), spec(3), spec(4), spec(5), spec(6)])
    assert s.summary()["queued"] > 0
    queued = next(iter(s.ready.values()))[-1]
    s.cancel_requested(queued, False, b"", b"")               # failed at the head, as cancelled
    running = s.workers[W1].queue[0]
    s.finished(W1, [running], [0.1], [CANCELLED])             # interrupted on its worker
    assert ended(s) == (0, 0, 2)


def test_only_known_tasks_count_and_a_late_result_is_not_counted_twice():
    s = make()
    s.submit([spec(1)])
    s.finished(W1, [tid(1)], [0.1], [OK])
    s.finished(W1, [tid(1)], [0.1], [OK])                     # the same task again
    s.finished(W1, [tid(99)], [0.1], [ERROR])                 # never seen here
    assert ended(s) == (1, 0, 0)


def test_a_direct_call_cancelled_before_it_ran_counts_once_as_cancelled():
    # The worker answers it through the head (the head never had it) and leaves it out of
    # its own direct counts.
    s = make()
    s.finished(W1, [tid(50)], [0.0], [CANCELLED])
    assert ended(s) == (0, 0, 1)


def test_actor_calls_and_leased_tasks_from_heartbeats_join_the_counts():
    s = make()
    s.submit([spec(1)])
    s.finished(W1, [tid(1)], [0.1], [OK])
    s.direct_reported(W2, {"Counter.inc": (10, 1, 0, 1.0), "g": (2, 0, 0, 0.5)})
    s.direct_reported(W2, {"Counter.inc": (12, 1, 2, 1.2), "g": (2, 0, 0, 0.5)})  # cumulative
    assert ended(s) == (1 + 12 + 2, 1, 2)


def test_a_direct_call_cancelled_while_it_runs_counts_as_cancelled_everywhere():
    """The worker's heartbeat says cancelled apart, so the tiles, the function table and
    the state API's summary agree (the state API, as Ray's, files it under FAILED)."""
    from rayipy.core.state_rows import summarize_tasks
    from rayipy.dashboard.direct_work import DirectWork
    from rayipy.dashboard.history import TaskHistory
    from rayipy.dashboard.snapshot import _functions_view
    work = DirectWork()
    calls = [spec(n)._replace(name="Counter.inc") for n in (1, 2, 3)]
    work.accepted(calls)
    for call, status in zip(calls, (OK, ERROR, CANCELLED)):
        work.finished(TaskResult(call.task_id, status, (), 0.1, "here"))
    beat = work.heartbeat(None, 0.0, 0)
    s = make()
    s.direct_reported(W2, beat[2])
    assert ended(s) == (1, 1, 1)
    history = TaskHistory()
    history.direct(W2, s.workers, beat)
    stats = history.functions[calls[0].name]
    assert (stats.finished, stats.failed, stats.cancelled) == (1, 1, 1)
    assert (history.finished, history.failed, history.cancelled) == (1, 1, 1)
    row, = _functions_view(history)
    assert (row["finished"], row["failed"], row["cancelled"]) == (1, 1, 1)
    summary = summarize_tasks([], history.functions)
    assert summary["cluster"]["summary"][calls[0].name]["state_counts"] == {"FINISHED": 1, "FAILED": 2}


def test_the_summary_always_has_every_count():
    assert ended(Scheduler()) == (0, 0, 0)


def test_the_tally_forgets_gone_workers_but_keeps_their_counts():
    tally = DirectTally()
    for n in range(200):
        assert tally.new(n.to_bytes(4, "big"), {"f": (1, 0, 0, 0.0)}) == (1, 0, 0)
    tally.prune({})
    assert tally.seen == {}


def test_rayipy_status_and_cluster_status_show_the_same_counts():
    from rayipy.cli_status import format_status
    from rayipy.jupyter.reprs import status_html, status_text
    s = make()
    s.submit([spec(1), spec(2), spec(3)])
    s.finished(W1, [tid(1), tid(3)], [0.1, 0.1], [ERROR, ERROR])
    s.finished(W2, [tid(2)], [0.1], [CANCELLED])
    status = {"cluster_id": "c", "address": "tcp://10.0.0.1:6379", "uptime": 1.0, "nodes": [],
              "tasks": s.summary()}
    assert "finished 0, failed 2, cancelled 1" in format_status(status)
    assert "finished 0, failed 2, cancelled 1" in status_text(status, [], {})
    html = status_html(status, [], {}, {}, "")
    assert "<th>failed</th><th>cancelled</th></tr><tr><td>0</td><td>0</td><td>0</td><td>2</td><td>1</td>" in html
