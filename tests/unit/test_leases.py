"""LeaseBook and the scheduler's leases: tasks one at a time go straight to a leased worker."""

from __future__ import annotations

from types import SimpleNamespace

from rayipy.core.leases import IDLE_SECONDS, LeaseBook
from rayipy.core.scheduler import LeaseAnswer, LeaseEnded, Scheduler

CPU1 = (("CPU", 1.0),)
OWNER = b"D" * 8


def spec(n: int, attempt: int = 0):
    return SimpleNamespace(task_id=bytes([n]) * 16, resources=CPU1, attempt=attempt, max_retries=3)


def test_first_task_asks_then_tasks_one_at_a_time_go_direct():
    book = LeaseBook()
    assert book.route(spec(1), head_busy=False).ask
    assert not book.route(spec(2), head_busy=False).ask   # one request at a time
    assert book.granted(CPU1, b"w1", "tcp://w1", now=0.0)
    assert book.route(spec(3), head_busy=False).direct == "tcp://w1"
    assert book.route(spec(4), head_busy=False).direct == ""  # one in flight: not behind it
    book.finished(spec(3).task_id, now=1.0)
    assert book.route(spec(5), head_busy=False).direct == "tcp://w1"


def test_a_burst_through_the_head_gives_the_lease_back():
    book = LeaseBook()
    book.granted(CPU1, b"w1", "tcp://w1", now=0.0)
    assert book.route(spec(1), head_busy=True).direct == ""
    assert book.to_return(now=0.0) == [b"w1"]
    assert book.route(spec(2), head_busy=False).ask   # may ask again later


def test_idle_leases_are_returned_and_busy_ones_kept():
    book = LeaseBook()
    book.granted(CPU1, b"w1", "tcp://w1", now=0.0)
    book.route(spec(1), head_busy=False)
    assert book.to_return(now=100.0) == []            # something in flight
    book.finished(spec(1).task_id, now=100.0)
    assert book.to_return(now=100.0 + IDLE_SECONDS / 2) == []
    assert book.to_return(now=101.0 + IDLE_SECONDS) == [b"w1"]


def test_a_dead_leased_worker_gives_its_tasks_back_for_retry():
    book = LeaseBook()
    book.granted(CPU1, b"w1", "tcp://w1", now=0.0)
    book.route(spec(1), head_busy=False)
    assert [s.task_id for s in book.lost(b"w1")] == [spec(1).task_id]
    assert book.worker_of(spec(1).task_id) is None


def test_a_second_grant_is_refused():
    book = LeaseBook()
    assert book.granted(CPU1, b"w1", "tcp://w1", now=0.0)
    assert not book.granted(CPU1, b"w2", "tcp://w2", now=0.0)


def make_scheduler() -> Scheduler:
    s = Scheduler()
    s.add_node(b"n", b"agent", {"CPU": 2.0}, {})
    s.add_worker(b"w1", b"n", 1, "tcp://w1")
    s.add_worker(b"w2", b"n", 2, "tcp://w2")
    return s


def test_scheduler_leases_an_idle_worker_and_takes_it_back():
    s = make_scheduler()
    [answer] = s.lease(OWNER, CPU1)
    assert isinstance(answer, LeaseAnswer) and answer.address.startswith("tcp://")
    assert s.nodes[b"n"].available["CPU"] == 1.0
    assert s.summary()["leased_workers"] == 1
    s.return_lease(OWNER, answer.worker)
    assert s.nodes[b"n"].available["CPU"] == 2.0 and s.summary()["leased_workers"] == 0


def test_scheduler_refuses_a_lease_when_no_worker_is_idle():
    s = make_scheduler()
    s.lease(OWNER, CPU1)
    s.lease(OWNER, CPU1)
    assert s.lease(OWNER, CPU1)[0].worker == b""


def test_a_dead_leased_worker_is_reported_to_its_holder():
    s = make_scheduler()
    [answer] = s.lease(OWNER, CPU1)
    out = s.remove_worker(answer.worker, RuntimeError("killed by SIGKILL"), 3, 2)
    assert LeaseEnded(OWNER, answer.worker, "killed by SIGKILL") in out


def test_the_holder_leaving_frees_its_lease():
    s = make_scheduler()
    s.lease(OWNER, CPU1)
    s.drop_owner(OWNER)
    assert s.nodes[b"n"].available["CPU"] == 2.0
