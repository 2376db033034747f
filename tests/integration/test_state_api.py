"""The state API on a real cluster: rayipy.util.state's lists and summaries, the
timeline, and the `rayipy list / summary / timeline` commands against `rayipy start`.

Direct work (actor calls, tasks on a lease) reaches the head in the workers'
heartbeats, once a second: the tests wait for it with a deadline."""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pytest

import rayipy
from helpers import wait_until
from rayipy.util import state
from test_cli import machines, ok  # noqa: F401  (the fixture: `rayipy start` clusters)


@rayipy.remote
def square(x):
    return x * x


@rayipy.remote
def nap(seconds):
    time.sleep(seconds)
    return seconds


@rayipy.remote
def explode():
    raise ZeroDivisionError("no dividing by zero here")


@rayipy.remote
class Counter:
    def __init__(self):
        self.n = 0

    def add(self, k):
        self.n += k
        return self.n


def tasks_named(name, **filters):
    return state.list_tasks(filters=[("name", "=", name)] + [(k, "=", v) for k, v in filters.items()],
                            limit=1000, detail=True)


def test_head_tasks_are_listed_with_rays_fields(cluster):
    rayipy.get([square.remote(i) for i in range(20)])
    rows = wait_until(lambda: len(tasks_named("square", state="FINISHED")) >= 20 and
                      tasks_named("square", state="FINISHED"), timeout=10, interval=0.1)
    row = rows[0]
    assert row.type == "NORMAL_TASK" and row.func_or_class_name == "square"
    assert row.worker_pid > 0 and len(row.node_id) == 16 and row.error_type == ""
    assert row.start_time_ms <= row.end_time_ms and row.duration_s >= 0
    node_ids = {n["node_id"] for n in state.list_nodes()}
    assert row.node_id in node_ids
    assert state.get_task(row.task_id)["task_id"] == row.task_id


def test_running_tasks_show_as_running(cluster):
    refs = [nap.remote(3) for _ in range(2)]
    running = wait_until(lambda: tasks_named("nap", state="RUNNING"), timeout=10, interval=0.1)
    assert running[0].worker_pid > 0 and running[0].duration_s is not None
    rayipy.get(refs)
    wait_until(lambda: len(tasks_named("nap", state="FINISHED")) == 2, timeout=10, interval=0.1)


def test_a_failed_task_has_its_error_type_and_message(cluster):
    with pytest.raises(ZeroDivisionError):
        rayipy.get(explode.remote())
    [row] = wait_until(lambda: tasks_named("explode"), timeout=10, interval=0.1)
    assert row.state == "FAILED" and row.error_type == "TASK_EXECUTION_EXCEPTION"
    assert row.error_message == "ZeroDivisionError: no dividing by zero here"
    failed = state.list_tasks(filters=[("state", "=", "failed")], limit=1000)
    assert row.task_id in {r["task_id"] for r in failed}


@rayipy.remote
def one_at_a_time(i):
    return i


@rayipy.remote
def traced(seconds):
    time.sleep(seconds)
    return seconds


def test_leased_tasks_are_listed_with_their_names(cluster):
    for i in range(6):   # submit, get, submit...: the driver leases a worker
        assert rayipy.get(one_at_a_time.remote(i)) == i
    rows = wait_until(lambda: len(tasks_named("one_at_a_time")) == 6 and
                      tasks_named("one_at_a_time"), timeout=10, interval=0.1)
    assert {r.state for r in rows} == {"FINISHED"}
    assert "direct" in {r.via for r in rows}      # went straight to the leased worker


def test_actor_calls_and_actors_are_listed(cluster):
    counter = Counter.remote()
    assert rayipy.get([counter.add.remote(1) for _ in range(5)])[-1] == 5
    calls = wait_until(lambda: len(tasks_named("Counter.add")) == 5 and tasks_named("Counter.add"),
                       timeout=10, interval=0.1)
    actor_id = calls[0].actor_id
    assert {(r.type, r.via, r.state) for r in calls} == {("ACTOR_TASK", "direct", "FINISHED")}
    [creation] = tasks_named("Counter.__init__")
    assert creation.type == "ACTOR_CREATION_TASK" and creation.actor_id == actor_id
    actor = state.get_actor(actor_id)
    assert actor["class_name"] == "Counter" and actor["state"] == "ALIVE"
    assert actor["pid"] == calls[0].worker_pid
    assert actor_id in {a["actor_id"] for a in state.list_actors(filters=[("state", "=", "ALIVE")])}
    summary = state.summarize_actors()["cluster"]
    assert summary["summary"]["Counter"]["state_counts"]["ALIVE"] >= 1


def test_summarize_tasks_counts_by_name_and_state(cluster):
    rayipy.get([square.remote(i) for i in range(3)])
    summary = wait_until(lambda: state.summarize_tasks()["cluster"]["summary"].get("square"),
                         timeout=10, interval=0.1)
    assert summary["type"] == "NORMAL_TASK" and summary["state_counts"]["FINISHED"] >= 3


def test_objects_in_the_store_and_our_small_ones_are_listed(cluster):
    big = rayipy.put(np.ones(300_000))          # 2.4 MB: in the node's store
    small = rayipy.put("tiny")
    rows = {r["object_id"]: r for r in state.list_objects(limit=10_000, detail=True)}
    stored = rows[big.hex()]
    assert stored["object_size"] >= 2_400_000 and stored["reference_type"] == "PINNED_IN_MEMORY"
    assert stored["type"] == "DRIVER" and "test_state_api.py" in stored["call_site"]
    assert rows[small.hex()]["reference_type"] == "LOCAL_REFERENCE"
    big_only = state.list_objects(filters=[("reference_type", "=", "PINNED_IN_MEMORY"),
                                           ("object_id", "=", big.hex())])
    assert [r["object_id"] for r in big_only] == [big.hex()]


def test_nodes_and_workers(cluster):
    [node] = state.list_nodes()
    assert node["state"] == "ALIVE" and node["is_head_node"] and node["resources_total"]["CPU"] == 2
    workers = state.list_workers(limit=1000)
    kinds = {w["worker_type"] for w in workers}
    assert kinds == {"WORKER", "DRIVER"}
    assert all(w["node_id"] == node["node_id"] for w in workers if w["worker_type"] == "WORKER")


def test_bad_arguments_raise_naming_what_is_valid(cluster):
    with pytest.raises(ValueError, match="cannot filter tasks by 'colour'.*state"):
        state.list_tasks(filters=[("colour", "=", "red")])
    with pytest.raises(ValueError, match="predicate"):
        state.list_actors(filters=[("state", ">", "ALIVE")])
    with pytest.raises(ValueError, match="limit"):
        state.list_nodes(limit=0)
    with pytest.raises(ValueError, match="rayipy.init"):
        state.list_tasks(address="10.0.0.1:6379")


def test_limit_warns_when_more_rows_match(cluster):
    rayipy.get([square.remote(i) for i in range(5)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = state.list_tasks(limit=2)
    assert len(rows) == 2
    assert any("limit=2" in str(w.message) for w in caught)


def test_the_timeline_is_a_chrome_trace_without_overlap_on_a_worker(cluster, tmp_path):
    durations = [0.05, 0.02, 0.03, 0.04, 0.01, 0.06]
    rayipy.get([traced.remote(d) for d in durations])
    wait_until(lambda: len(tasks_named("traced")) == len(durations), timeout=10, interval=0.1)
    path = tmp_path / "trace.json"
    assert rayipy.timeline(str(path)) is None
    events = json.loads(path.read_text())
    mine = [e for e in events if e["ph"] == "X" and e["name"] == "traced"]
    assert len(mine) == len(durations)
    assert sorted(round(e["dur"] / 1e6, 2) for e in mine) == sorted(durations)
    for e in mine:
        assert e["cat"] == "NORMAL_TASK" and e["args"]["state"] == "FINISHED"
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
    # A worker runs one task at a time: its events follow one another (1 µs for rounding).
    by_worker: dict = {}
    for e in (e for e in events if e["ph"] == "X"):
        by_worker.setdefault((e["pid"], e["tid"]), []).append(e)
    for spans in by_worker.values():
        spans.sort(key=lambda e: e["ts"])
        for a, b in zip(spans, spans[1:]):
            if a["args"].get("actor_id") is None:
                assert a["ts"] + a["dur"] <= b["ts"] + 1, (a, b)
    assert isinstance(rayipy.timeline(), list)


# -- the command line -------------------------------------------------------------------------------
DRIVER = """
import rayipy
rayipy.init(address="auto")
@rayipy.remote
def cli_square(x):
    return x * x
@rayipy.remote
def cli_fails():
    raise KeyError("missing")
@rayipy.remote
class Box:
    def get(self):
        return 1
rayipy.get([cli_square.remote(i) for i in range(4)])
try:
    rayipy.get(cli_fails.remote())
except KeyError:
    pass
box = Box.options(name="box", lifetime="detached").remote()
rayipy.get(box.get.remote())
"""


def test_list_summary_and_timeline_commands(machines, tmp_path):  # noqa: F811
    a = machines()
    # Without the dashboard: the head keeps its task history anyway.
    a.start_head("--num-cpus", "2", "--include-dashboard", "false")
    ok(a.python(DRIVER))

    def listed():
        rows = json.loads(ok(a.rayipy("list", "tasks", "--format", "json", "--detail")))
        names = [r["name"] for r in rows]
        return names.count("cli_square") == 4 and "Box.get" in names and rows
    rows = wait_until(listed, timeout=15, interval=0.3)
    [failed] = [r for r in rows if r["name"] == "cli_fails"]
    assert failed["state"] == "FAILED" and failed["error_message"] == "KeyError: 'missing'"

    table = ok(a.rayipy("list", "tasks", "--filter", "state=FAILED"))
    lines = table.splitlines()
    assert lines[0] == "1 tasks" and "cli_fails" in lines[3]
    assert lines[2].index("STATE") == lines[3].index("FAILED")

    actors = ok(a.rayipy("list", "actors", "--filter", "class_name=Box", "--format", "yaml"))
    assert '"class_name": "Box"' in actors and '"state": "ALIVE"' in actors
    nodes = json.loads(ok(a.rayipy("list", "nodes", "--format", "json")))
    assert [n["state"] for n in nodes] == ["ALIVE"]
    workers = json.loads(ok(a.rayipy("list", "workers", "--format", "json")))
    assert workers and {w["worker_type"] for w in workers} == {"WORKER"}
    ok(a.rayipy("list", "objects"))

    summary = ok(a.rayipy("summary", "tasks"))
    assert "cli_square" in summary and "FINISHED: 4" in summary
    assert "Box" in ok(a.rayipy("summary", "actors"))

    trace = tmp_path / "t.json"
    assert "Wrote" in ok(a.rayipy("timeline", "--output", str(trace)))
    assert sum(1 for e in json.loads(trace.read_text()) if e.get("name") == "cli_square") == 4

    bad = a.rayipy("list", "tasks", "--filter", "colour=red")
    assert bad.returncode == 1 and "cannot filter tasks by 'colour'" in bad.stderr
