"""Unit tests of the dashboard's pure parts: task history, snapshots, the page, the hand-off.

The scheduler is driven through its own events (as the head does) and fed to the
history the way the head feeds it, heartbeats included; no sockets, no processes.
"""

from __future__ import annotations

import json
import threading

import pytest

from rayipy.core.scheduler import Execute, Scheduler
from rayipy.dashboard.direct_work import DirectWork
from rayipy.dashboard.history import OTHER_FUNCTIONS, Finished, TaskHistory
from rayipy.dashboard.page import esc, fmt_duration, render_body, render_page
from rayipy.dashboard.server import SnapshotBox, _public_host
from rayipy.dashboard.snapshot import HeadFacts, build_snapshot, tasks_view
from rayipy.protocol.messages import (CANCELLED, CRASHED, ERROR, OK, RETURNED, Payload, TaskResult,
                                      TaskSpec)

OWNER = b"O" * 8
NODE, AGENT = b"node-001", b"agent-01"
W1, W2 = b"worker-1", b"worker-2"
CPU1 = (("CPU", 1.0),)
FACTS = HeadFacts("c0ffee", "tcp://127.0.0.1:6379", "127.0.0.1:8265", 1000.0, "0.1.0",
                  {"driver": 1}, {})
NASTY = "<script>alert('x')</script>&\""


def spec(n: int, name: str = "f", **kw) -> TaskSpec:
    return TaskSpec(OWNER + n.to_bytes(8, "big"), b"fid", name, Payload(b""), (), 1, CPU1, 3, **kw)


def result(n: int, status: int = OK, duration: float = 0.25) -> TaskResult:
    return TaskResult(OWNER + n.to_bytes(8, "big"), status, (), duration, "")


class Cluster:
    """A scheduler and a history, fed the way the head feeds them."""

    def __init__(self, cpus: float = 2.0, workers: tuple = (W1, W2), capacity: int = 1000) -> None:
        self.scheduler = Scheduler()
        self.history = TaskHistory(capacity)
        self.now = 2000.0
        self.scheduler.add_node(NODE, AGENT, {"CPU": cpus}, {"ip": "10.0.0.7", "hostname": "h1"})
        for i, w in enumerate(workers):
            self.carry_out(self.scheduler.add_worker(w, NODE, 100 + i, f"tcp://x:{i}"))

    def carry_out(self, out: list) -> None:
        for ins in out:
            if isinstance(ins, Execute):
                self.history.started(ins.worker, self.scheduler.workers, self.now)

    def submit(self, *specs: TaskSpec) -> None:
        self.carry_out(self.scheduler.submit(list(specs)))

    def finish(self, worker: bytes, *results: TaskResult) -> None:
        self.history.results(self.scheduler.workers.get(worker), results, self.scheduler.tasks, self.now)
        self.carry_out(self.scheduler.finished(worker, [r.task_id for r in results],
                                               [r.duration for r in results],
                                               [r.status for r in results]))
        self.history.started(worker, self.scheduler.workers, self.now)

    def heartbeat(self, worker: bytes, body: tuple) -> None:
        """A worker's heartbeat (its direct work), to the scheduler's counts and the history."""
        self.scheduler.direct_reported(worker, body[2])
        self.history.direct(worker, self.scheduler.workers, body)

    def snapshot(self):
        return build_snapshot(self.scheduler, self.history, FACTS, self.now)


# -- history -------------------------------------------------------------------------------
def test_recent_tasks_stay_bounded_over_100k_tasks():
    history = TaskHistory(capacity=1000)
    worker = type("W", (), {"node_id": NODE, "pid": 7, "worker_id": W1})()
    for n in range(100_000):
        history.results(worker, [result(n)], {}, float(n))
    assert len(history.recent) == 1000
    assert Finished(*history.recent[0]).ended_at == 99_000.0
    assert Finished(*history.recent[-1]).ended_at == 99_999.0
    assert history.finished == 100_000 and history.by_node[NODE] == 100_000


def test_function_table_is_bounded_too():
    history = TaskHistory(max_functions=10)
    for n in range(50):
        history.failed_at_head(bytes(16), f"fn{n}", CANCELLED, 0.0)
    assert len(history.functions) == 11
    assert history.functions[OTHER_FUNCTIONS].cancelled == 40
    assert history.cancelled == 50 and history.failed == 0 and history.finished == 0


def test_counts_by_outcome_and_function():
    c = Cluster()
    c.submit(spec(1, "ok"), spec(2, "bad"))
    c.finish(W1, result(1, OK, 0.5))
    c.finish(W2, result(2, ERROR, 0.1))
    assert (c.history.finished, c.history.failed) == (1, 1)
    rows = {f["name"]: f for f in c.snapshot().status["functions"]}
    assert rows["ok"] == {"name": "ok", "finished": 1, "failed": 0, "cancelled": 0,
                          "mean_s": 0.5}
    assert rows["bad"]["failed"] == 1


def test_a_pipelined_task_starts_when_the_one_before_it_ends():
    c = Cluster(cpus=1.0, workers=(W1,))
    c.submit(spec(1), spec(2))          # unknown duration: both go to W1, 2 waits behind 1
    assert list(c.scheduler.workers[W1].queue) == [spec(1).task_id, spec(2).task_id]
    assert c.history.running_since[W1] == (spec(1).task_id, 2000.0)
    c.now = 2003.0
    c.finish(W1, result(1))
    assert c.history.running_since[W1] == (spec(2).task_id, 2003.0)
    c.now = 2004.0
    c.finish(W1, result(2))
    assert W1 not in c.history.running_since


# -- snapshots -------------------------------------------------------------------------------
def test_snapshot_shows_nodes_workers_running_tasks_and_counts():
    c = Cluster()
    c.submit(spec(1, "train"), spec(2, "train"), spec(3, "train"), spec(4, "train"), spec(5, "train"))
    c.now = 2002.5
    status = c.snapshot().status
    assert status["tasks"] == {"queued": 3, "running": 2, "finished": 0, "failed": 0,
                               "cancelled": 0, "submitted": 5, "retried": 0}
    [node] = status["nodes"]
    assert node["address"] == "10.0.0.7" and node["hostname"] == "h1" and node["alive"]
    assert node["resources"] == {"total": {"CPU": 2.0}, "available": {"CPU": 0.0}}
    assert [w["state"] for w in node["workers"]] == ["RUNNING", "RUNNING"]
    running = status["running"]
    assert [t["name"] for t in running] == ["train", "train"]
    assert {t["worker_pid"] for t in running} == {100, 101}
    assert all(t["started_at"] == 2000.0 and t["running_s"] == 2.5 for t in running)
    assert status["cluster"]["uptime_s"] == 1002.5
    json.dumps(status)   # the API serves it as it is


def test_snapshot_is_not_changed_by_later_events():
    c = Cluster()
    c.submit(spec(1))
    snap = c.snapshot()
    before = json.dumps(snap.status, sort_keys=True)
    c.finish(W1, result(1))
    c.submit(spec(2), spec(3))
    assert json.dumps(snap.status, sort_keys=True) == before
    assert len(snap.recent) == 0 and len(c.snapshot().recent) == 1


def test_recent_tasks_newest_first_with_their_outcome():
    c = Cluster()
    c.submit(spec(1, "a"), spec(2, "b"))
    c.now = 2001.0
    c.finish(W1, result(1, OK, 0.5))
    c.now = 2002.0
    c.finish(W2, result(2, CRASHED, 0.0))
    c.history.failed_at_head(spec(3).task_id, "c", CANCELLED, 2003.0)
    view = tasks_view(c.snapshot())
    assert [(t["name"], t["state"], t["failure"]) for t in view["recent"]] == [
        ("c", "FAILED", "cancelled"), ("b", "FAILED", "worker died"), ("a", "FINISHED", "")]
    assert view["recent"][2]["address"] == "10.0.0.7" and view["recent"][2]["worker_pid"] == 100
    assert [t["name"] for t in tasks_view(c.snapshot(), limit=1)["recent"]] == ["c"]
    assert tasks_view(c.snapshot(), limit=0)["recent"] == []


def test_actors_listed_with_their_state_and_node():
    c = Cluster(workers=(W1, W2))
    creation = spec(9, "Counter.__init__", actor_id=b"A" * 16, method="__init__",
                     options=(("class_name", "Counter"), ("methods", {}), ("name", "ctr")))
    c.submit(creation)
    actors = c.snapshot().status["actors"]
    assert [(a["class_name"], a["name"], a["state"]) for a in actors["list"]] == [
        ("Counter", "ctr", "PENDING_CREATION")]
    worker = c.scheduler.actors[b"A" * 16].worker
    c.finish(worker, result(9))
    [actor] = c.snapshot().status["actors"]["list"]
    assert actor["state"] == "ALIVE" and actor["address"] == "10.0.0.7"
    worker_view = next(w for w in c.snapshot().status["nodes"][0]["workers"]
                       if w["worker_id"] == worker.hex())
    assert worker_view["state"] == "ACTOR" and worker_view["actor"]["class_name"] == "Counter"
    c.scheduler.kill_actor(b"A" * 16, "killed by the test")
    assert c.snapshot().status["actors"]["counts"] == {"DEAD": 1}


# -- the page -----------------------------------------------------------------------------
def test_page_escapes_every_name_from_the_cluster():
    c = Cluster()
    creation = spec(9, NASTY + ".__init__", actor_id=b"A" * 16, method="__init__",
                     options=(("class_name", NASTY), ("methods", {}), ("name", NASTY)))
    c.scheduler.nodes[NODE].info["hostname"] = NASTY
    c.submit(spec(1, NASTY), creation)
    c.finish(W1, result(1, ERROR))
    snap = c.snapshot()
    for html in (render_page(snap), render_body(snap, c.now)):
        assert "<script>alert" not in html
        assert esc(NASTY) in html
        assert html.count("<script") == (1 if html.startswith("<!doctype") else 0)


def test_page_flags_a_stale_snapshot_and_renders_without_one():
    c = Cluster()
    snap = c.snapshot()
    assert "has not answered" not in render_body(snap, c.now + 1)
    assert "has not answered" in render_body(snap, c.now + 60)
    assert "Waiting for the head" in render_page(None)


@pytest.mark.parametrize("seconds, text", [(None, "?"), (2e-6, "2 µs"), (0.0123, "12.3 ms"),
                                           (3.21, "3.2 s"), (125, "2 min 05 s"),
                                           (7300, "2 h 01 min"), (3 * 86400, "3 d 0 h")])
def test_durations_read_well(seconds, text):
    assert fmt_duration(seconds) == text


# -- the hand-off between the head's loop and HTTP threads ---------------------------------
def test_box_asks_the_loop_and_waits_for_a_fresh_snapshot():
    box = SnapshotBox()
    c = Cluster()
    answered = threading.Event()

    def head_loop() -> None:   # what Head.serve does each iteration
        while not answered.is_set():
            if box.wanted:
                box.refresh(c.snapshot)
            answered.wait(0.01)

    loop = threading.Thread(target=head_loop)
    loop.start()
    try:
        snap, fresh = box.get(max_age=0.5, wait=5.0)
        assert fresh and snap is not None and not box.wanted
        assert box.get(max_age=60, wait=0)[0] is snap   # recent enough: no new build
    finally:
        answered.set()
        loop.join()


def test_box_serves_the_last_snapshot_when_the_loop_does_not_answer():
    box = SnapshotBox()
    assert box.get(wait=0.01) == (None, False)
    snap = Cluster().snapshot()
    box.publish(snap)
    assert box.get(max_age=0.0, wait=0.01) == (snap, False)


def test_a_failing_build_is_logged_not_raised(caplog):
    box = SnapshotBox()
    box.wanted = True
    box.refresh(lambda: 1 / 0)
    assert not box.wanted and "snapshot failed" in caplog.text


# -- work that bypasses the head: counted by the worker, reported in heartbeats ------------
def test_direct_work_counts_by_name_and_skips_returned_tasks():
    work = DirectWork()
    calls = [spec(1, "Counter.inc"), spec(2, "Counter.inc"), spec(3, "Counter.read"), spec(4, "f")]
    work.accepted(calls)
    assert work.heartbeat(calls[0], 5.0, 0) == ((calls[0].task_id, "Counter.inc", 5.0), 0, {},
                                                ([], 0))
    work.finished(result(1, OK, 0.5))
    work.finished(result(2, ERROR, 0.25))
    work.finished(result(3, OK, 0.1))
    work.finished(result(4, RETURNED))          # handed back unrun: runs elsewhere, counts there
    running, in_flight, counts, (ended, dropped) = work.heartbeat(None, 0.0, 3)
    assert [e[:3] for e in ended] == [(calls[0].task_id, "Counter.inc", OK),
                                      (calls[1].task_id, "Counter.inc", ERROR),
                                      (calls[2].task_id, "Counter.read", OK)] and dropped == 0
    assert running is None and in_flight == 3
    assert counts == {"Counter.inc": (1, 1, 0, 0.75), "Counter.read": (1, 0, 0, 0.1)}
    assert work.names == {}
    work.accepted([spec(5)])
    work.dropped(spec(5).task_id)               # cancelled: answered through the head
    assert work.names == {}


def test_heartbeats_add_only_what_is_new_and_show_the_running_call():
    c = Cluster()
    workers = c.scheduler.workers
    c.heartbeat(W1, ((spec(7).task_id, "Counter.inc", 1999.0), 0, {"Counter.inc": (2, 0, 0, 1.0)}))
    c.heartbeat(W1, ((spec(8).task_id, "Counter.inc", 1999.5), 0, {"Counter.inc": (3, 1, 0, 1.5)}))
    status = c.snapshot().status
    assert (status["tasks"]["finished"], status["tasks"]["failed"], status["tasks"]["running"]) == (3, 1, 1)
    [task] = status["running"]
    assert (task["name"], task["via"], task["started_at"], task["running_s"]) == (
        "Counter.inc", "direct", 1999.5, 0.5)
    assert status["functions"] == [{"name": "Counter.inc", "finished": 3, "failed": 1,
                                    "cancelled": 0, "mean_s": 0.375}]
    assert status["nodes"][0]["tasks_done"] == 4
    c.heartbeat(W1, (None, 2, {"Counter.inc": (3, 1, 0, 1.5)}))   # 2 calls on actor threads
    status = c.snapshot().status
    assert status["running"] == [] and status["tasks"]["running"] == 2
    assert status["tasks"]["finished"] == 3
    c.heartbeat(W1, (None, 0, {"Counter.inc": (3, 1, 0, 1.5)}))
    assert c.snapshot().status["tasks"]["running"] == 0


def test_a_gone_workers_direct_counts_stay_counted():
    c = Cluster()
    c.heartbeat(W1, (None, 0, {"g": (5, 0, 0, 1.0)}))
    c.scheduler.remove_worker(W1, RuntimeError("gone"), CRASHED, CANCELLED)
    status = c.snapshot().status
    assert status["tasks"]["finished"] == 5 and W1 not in c.history.direct_seen


def test_the_url_names_a_reachable_address_not_a_wildcard():
    assert _public_host("127.0.0.1", "10.0.0.1") == "127.0.0.1"
    assert _public_host("0.0.0.0", "10.0.0.1") == "10.0.0.1"      # the head's own address
    assert _public_host("0.0.0.0", "0.0.0.0") not in ("", "0.0.0.0", "::")


def test_entries_of_gone_workers_are_swept_without_a_viewer():
    history = TaskHistory()
    workers: dict = {}
    for n in range(1000):   # actors created and killed one after another; nobody looks
        worker_id = n.to_bytes(8, "big")
        workers[worker_id] = type("W", (), {"node_id": NODE, "pid": n, "queue": [b"t"]})()
        history.started(worker_id, workers, 0.0)
        history.direct(worker_id, workers, (None, 0, {"A.f": (1, 0, 0, 0.1)}))
        del workers[worker_id]
    assert len(history.running_since) <= 66 and len(history.direct_seen) <= 66
    assert history.finished == 1000
