"""Unit tests of the state API's pure parts: filters, limits, rows built from the
scheduler and the task history (heartbeats included), summaries, the Chrome trace and
the command line's text. The scheduler is driven through its own events, as the head
drives it; no sockets, no processes."""

from __future__ import annotations

import json

import pytest

from rayipy.cli_state import format_rows, format_summary, to_yaml
from rayipy.core import state_rows
from rayipy.core.scheduler import Execute, Scheduler
from rayipy.core.state_rows import check_filters, check_limit, parse_filter, select
from rayipy.core.state_timeline import trace_events
from rayipy.dashboard.direct_work import MAX_PER_BEAT, DirectWork
from rayipy.dashboard.history import Finished, TaskHistory
from rayipy.dashboard.snapshot import actor_state
from rayipy.protocol import errors
from rayipy.protocol.messages import CANCELLED, ERROR, OK, Payload, TaskResult, TaskSpec

OWNER = b"O" * 8
NODE, AGENT = b"node-001", b"agent-01"
W1, W2 = b"worker-1", b"worker-2"
CPU1 = (("CPU", 1.0),)


def spec(n: int, name: str = "f", **kw) -> TaskSpec:
    return TaskSpec(OWNER + n.to_bytes(8, "big"), b"fid", name, Payload(b""), (), 1, CPU1, 3, **kw)


def result(n: int, status: int = OK, duration: float = 0.25, values: tuple = ()) -> TaskResult:
    return TaskResult(OWNER + n.to_bytes(8, "big"), status, values, duration, "")


def failure(n: int, error: BaseException, duration: float = 0.1) -> TaskResult:
    return result(n, ERROR, duration, (errors.capture_task_error(error, "bad", "here"),))


class Cluster:
    """A scheduler and a history, fed the way the head feeds them."""

    def __init__(self) -> None:
        self.scheduler = Scheduler()
        self.history = TaskHistory()
        self.now = 2000.0
        self.scheduler.add_node(NODE, AGENT, {"CPU": 2.0}, {"ip": "10.0.0.7"})
        for i, w in enumerate((W1, W2)):
            self.carry_out(self.scheduler.add_worker(w, NODE, 100 + i, f"tcp://x:{i}"))

    def carry_out(self, out: list) -> None:
        for ins in out:
            if isinstance(ins, Execute):
                self.history.started(ins.worker, self.scheduler.workers, self.now)

    def submit(self, *specs: TaskSpec) -> None:
        self.carry_out(self.scheduler.submit(list(specs)))

    def finish(self, worker: bytes, *results: TaskResult) -> None:
        self.history.results(self.scheduler.workers.get(worker), results, self.scheduler.tasks,
                             self.now)
        self.carry_out(self.scheduler.finished(worker, [r.task_id for r in results],
                                               [r.duration for r in results]))
        self.history.started(worker, self.scheduler.workers, self.now)

    def rows(self) -> list[dict]:
        return state_rows.task_rows(self.scheduler, self.history, self.now)


# -- filters and limits ----------------------------------------------------------------------
def test_filters_compare_as_strings_and_states_without_case():
    rows = [{"state": "RUNNING", "worker_pid": 7, "name": "f"},
            {"state": "FINISHED", "worker_pid": 8, "name": "F"}]
    assert select(rows, check_filters("tasks", [("state", "=", "running")]), 10, "tasks",
                  True).rows == [rows[0]]
    assert select(rows, check_filters("tasks", [("worker_pid", "=", 8)]), 10, "tasks",
                  True).rows == [rows[1]]
    assert select(rows, check_filters("tasks", [("name", "=", "f")]), 10, "tasks",
                  True).rows == [rows[0]]          # names keep their case
    both = check_filters("tasks", [("state", "!=", "FINISHED"), ("name", "=", "f")])
    assert select(rows, both, 10, "tasks", True).rows == [rows[0]]


def test_a_bad_filter_names_what_is_valid():
    with pytest.raises(ValueError, match="cannot filter tasks by 'colour'.*task_id.*state"):
        check_filters("tasks", [("colour", "=", "red")])
    with pytest.raises(ValueError, match="unknown predicate '~'.*'=' or '!='"):
        check_filters("tasks", [("state", "~", "RUNNING")])
    with pytest.raises(ValueError, match="a list of"):
        check_filters("tasks", "state=RUNNING")
    with pytest.raises(ValueError, match="unknown resource 'jobs'"):
        check_filters("jobs", None)
    with pytest.raises(ValueError, match="limit"):
        check_limit(0)
    assert parse_filter("state!=FAILED") == ("state", "!=", "FAILED")
    assert parse_filter("name=a=b") == ("name", "=", "a=b")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_filter("state")


def test_limit_caps_rows_and_total_counts_every_match():
    rows = [{"state": "FINISHED", "task_id": str(i)} for i in range(10)]
    listing = select(rows, [], 3, "tasks", False)
    assert len(listing.rows) == 3 and listing.total == 10
    # Ray's default columns unless detail
    assert list(listing.rows[0]) == list(state_rows.COLUMNS["tasks"][:11])
    assert list(listing.rows[0])[-1] == "error_type"


# -- task rows from the scheduler and the history ---------------------------------------------
def test_rows_show_running_queued_pending_and_ended_tasks_with_their_states():
    c = Cluster()
    c.submit(*[spec(n) for n in range(1, 6)])
    states = {row["task_id"][-2:]: row["state"] for row in c.rows()}
    assert sorted(states.values()).count("RUNNING") == 2
    assert set(states.values()) <= {"RUNNING", "SUBMITTED_TO_WORKER", "PENDING_NODE_ASSIGNMENT"}
    assert "SUBMITTED_TO_WORKER" in states.values()   # pipelined behind a running task
    worker = c.scheduler.workers[W1]
    done = [c.scheduler.tasks[t].spec for t in worker.queue]
    c.now = 2001.0
    c.finish(W1, result(int.from_bytes(done[0].task_id[8:], "big")))
    [ended] = [r for r in c.rows() if r["state"] == "FINISHED"]
    assert (ended["name"], ended["type"], ended["worker_pid"], ended["via"]) == (
        "f", "NORMAL_TASK", 100, "head")
    assert ended["end_time_ms"] == 2_001_000 and ended["start_time_ms"] == 2_000_750


def test_failed_tasks_carry_rays_error_type_and_the_exception():
    c = Cluster()
    c.submit(spec(1, "bad"), spec(2, "bad"))
    c.finish(W1, failure(1, ZeroDivisionError("division by zero")))
    c.finish(W2, result(2, CANCELLED, 0.0, (errors.capture_system_error(RuntimeError("x")),)))
    rows = {r["task_id"][-2:]: r for r in c.rows()}
    assert rows["01"]["state"] == "FAILED"
    assert rows["01"]["error_type"] == "TASK_EXECUTION_EXCEPTION"
    assert rows["01"]["error_message"] == "ZeroDivisionError: division by zero"
    assert rows["02"]["error_type"] == "TASK_CANCELLED"
    c.history.failed_at_head(spec(3).task_id, "g", CANCELLED, 2002.0, error="TaskCancelledError: x")
    assert c.rows()[0]["error_type"] == "TASK_CANCELLED" and c.rows()[0]["worker_pid"] == 0


def test_a_batch_of_results_is_laid_back_to_back_without_overlap():
    history = TaskHistory()
    worker = type("W", (), {"node_id": NODE, "pid": 7, "worker_id": W1})()
    history.results(worker, [result(1, duration=0.5), result(2, duration=0.25)], {}, 10.0)
    # Arrives "too early" (its latency was shorter): starts after the last end anyway.
    history.results(worker, [result(3, duration=0.5)], {}, 10.1)
    items = [Finished(*r) for r in history.recent]
    assert [(i.started_at, i.ended_at) for i in items] == [(9.25, 9.75), (9.75, 10.0),
                                                         (10.0, 10.5)]


def test_direct_calls_reported_in_heartbeats_become_rows_with_their_names():
    c = Cluster()
    work = DirectWork()
    calls = [spec(n, "Counter.inc", actor_id=b"A" * 16, method="inc") for n in (1, 2)]
    work.accepted(calls)
    work.finished(result(1, OK, 0.01))
    work.finished(failure(2, KeyError("k")))
    c.history.direct(W2, c.scheduler.workers, work.heartbeat(None, 0.0, 0))
    rows = c.rows()
    assert [(r["name"], r["state"], r["type"], r["via"], r["worker_pid"]) for r in rows] == [
        ("Counter.inc", "FAILED", "ACTOR_TASK", "direct", 101),
        ("Counter.inc", "FINISHED", "ACTOR_TASK", "direct", 101)]
    assert rows[0]["error_message"] == "KeyError: 'k'" and rows[0]["actor_id"] == (b"A" * 16).hex()
    # A second beat with nothing new adds nothing; counts stay complete.
    c.history.direct(W2, c.scheduler.workers, work.heartbeat(None, 0.0, 0))
    assert len(c.rows()) == 2
    assert c.history.functions["Counter.inc"].finished == 1


def test_a_heartbeat_lists_at_most_max_per_beat_calls_and_counts_the_rest():
    work = DirectWork()
    specs = [spec(n, "g") for n in range(MAX_PER_BEAT + 7)]
    work.accepted(specs)
    for n in range(len(specs)):
        work.finished(result(n, OK, 0.0))
    *_, (ended, dropped) = work.heartbeat(None, 0.0, 0)
    assert len(ended) == MAX_PER_BEAT and dropped == 7
    assert ended[-1][0] == specs[-1].task_id      # the newest are kept
    assert work.heartbeat(None, 0.0, 0)[3] == ([], 0)
    assert work.counts["g"][0] == MAX_PER_BEAT + 7


def test_a_running_direct_call_is_listed_as_running():
    c = Cluster()
    c.history.direct(W1, c.scheduler.workers, ((spec(9).task_id, "h", 1999.0), 0, {}))
    [row] = c.rows()
    assert (row["name"], row["state"], row["via"], row["duration_s"]) == ("h", "RUNNING",
                                                                          "direct", 1.0)


def test_summaries_count_every_task_by_name_and_state():
    c = Cluster()
    c.submit(spec(1), spec(2), spec(3, "bad"))
    c.finish(W1, result(1))
    c.finish(W2, failure(3, ValueError("v")))
    summary = state_rows.summarize_tasks(c.rows(), c.history.functions)["cluster"]
    assert summary["summary"]["f"]["state_counts"] == {"RUNNING": 1, "FINISHED": 1}
    assert summary["summary"]["bad"]["state_counts"] == {"FAILED": 1}
    assert summary["total_tasks"] == 3 and summary["summary_by"] == "func_name"


def test_actor_rows_and_their_summary():
    c = Cluster()
    creation = spec(1, "Counter.__init__", actor_id=b"A" * 16, method="__init__",
                    options=(("class_name", "Counter"), ("name", "counter")))
    c.submit(creation)
    rows = state_rows.actor_rows(c.scheduler, actor_state)
    assert [(r["class_name"], r["name"], r["state"]) for r in rows] == [
        ("Counter", "counter", "PENDING_CREATION")]
    assert state_rows.summarize_actors(rows)["cluster"] == {
        "summary": {"Counter": {"class_name": "Counter",
                                "state_counts": {"PENDING_CREATION": 1}}},
        "total_actors": 1, "summary_by": "class"}


# -- the timeline ---------------------------------------------------------------------------------
def test_trace_events_are_complete_events_per_node_and_worker():
    c = Cluster()
    c.submit(spec(1), spec(2, "g"))
    c.now = 2000.5
    c.finish(W1, result(1, duration=0.25))
    c.finish(W2, failure(2, ValueError("v"), duration=0.125))
    c.history.failed_at_head(spec(3).task_id, "never_ran", CANCELLED, 2001.0)
    events = trace_events(c.history.recent, {NODE: "10.0.0.7"})
    complete = [e for e in events if e["ph"] == "X"]
    assert [(e["name"], e["tid"], e["dur"]) for e in complete] == [("f", 100, 250_000.0),
                                                                   ("g", 101, 125_000.0)]
    assert complete[0]["ts"] == 2000.25 * 1e6 and complete[0]["cat"] == "NORMAL_TASK"
    assert complete[1]["args"]["state"] == "FAILED" and "ValueError" in complete[1]["args"]["error"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M"}
    assert names == {"node 10.0.0.7 (6e6f6465)", "worker pid 100", "worker pid 101"}
    json.dumps(events)   # plain JSON


# -- the command line's text ----------------------------------------------------------------------
def test_tables_are_aligned_and_json_and_yaml_are_data():
    rows = [{"task_id": "ab", "state": "RUNNING", "worker_pid": 7},
            {"task_id": "abcdef", "state": "FINISHED", "worker_pid": 12345}]
    text = format_rows(rows, "table", "tasks", 5)
    lines = text.splitlines()
    assert lines[0] == "2 tasks (of 5 matching; raise --limit to see more)"
    header, first, second = lines[2:]
    assert header.index("STATE") == first.index("RUNNING") == second.index("FINISHED")
    assert first.endswith("    7") and second.endswith("12345")      # numbers right-aligned
    assert json.loads(format_rows(rows, "json", "tasks", 2)) == rows
    yaml = format_rows(rows, "yaml", "tasks", 2)
    assert yaml.splitlines()[:3] == ['- "task_id": "ab"', '  "state": "RUNNING"',
                                     '  "worker_pid": 7']
    assert to_yaml({"a": {"b": [1, None, True]}}) == '"a":\n  "b":\n    - 1\n    - null\n    - true'
    with pytest.raises(ValueError, match="unknown format"):
        format_rows(rows, "xml", "tasks", 2)


def test_summary_table_lists_each_name_with_its_counts():
    summary = {"cluster": {"summary": {"f": {"func_or_class_name": "f", "type": "NORMAL_TASK",
                                             "state_counts": {"FINISHED": 3, "FAILED": 1}}},
                           "total_tasks": 4, "total_actor_tasks": 0, "total_actor_scheduled": 0,
                           "summary_by": "func_name"}}
    text = format_summary(summary, "tasks", "table")
    assert text.splitlines()[0].startswith("4 task(s)")
    assert "FINISHED: 3, FAILED: 1" in text
