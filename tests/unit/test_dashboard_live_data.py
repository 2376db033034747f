"""Unit tests of the dashboard's live parts: the task stream, failures kept apart, the
CPU/RSS and log rings, the event stream's increments, the proxy's URL rule. No sockets."""

from __future__ import annotations

import json

import pytest

from rayipy.dashboard.events import EventCursor, first_event, next_event, workers_now
from rayipy.dashboard.live import LiveData, cpu_fraction, worker_key
from rayipy.dashboard.stream import failures_view, records_after, split_error, stream_view
from rayipy.protocol.errors import capture_task_error
from rayipy.protocol.messages import CANCELLED, ERROR
from test_dashboard_state import W1, W2, Cluster, result, spec


def error_result(n: int, kind: type = ValueError, text: str = "bad"):
    """A result that raised ``kind(text)``, with the error payload a worker sends."""
    return result(n, ERROR)._replace(values=(capture_task_error(kind(text), "f", "here"),))


def ran(cluster: Cluster, names: list[str], statuses: dict[int, object] | None = None) -> None:
    """Tasks named ``names`` run on W1 one by one; ``statuses`` replaces some results."""
    statuses = statuses or {}
    for n, name in enumerate(names):
        cluster.submit(spec(n, name))
    for n in range(len(names)):
        cluster.finish(holder(cluster, n), statuses.get(n, result(n)))
        cluster.now += 0.5


def holder(cluster: Cluster, n: int) -> bytes:
    """The worker whose current task is task ``n``."""
    task_id = spec(n).task_id
    [worker] = [w for w in (W1, W2) if list(cluster.scheduler.workers[w].queue)[:1] == [task_id]]
    return worker


# -- the task stream -----------------------------------------------------------------------
def test_stream_has_a_lane_per_worker_a_bar_per_task_and_failures_marked():
    cluster = Cluster()
    ran(cluster, ["f", "g", "f", "h"], {1: error_result(1), 3: result(3, CANCELLED)})
    view = stream_view(cluster.snapshot())
    assert sorted(view["lanes"]) == ["10.0.0.7:100", "10.0.0.7:101"]
    assert view["names"] == ["f", "g", "h"]
    assert [bar[4] for bar in view["bars"]] == [0, 1, 0, 2]    # finished, raised, ..., cancelled
    assert view["outcomes"][1] == "raised" and view["next"] == 4
    for lane, name, start, duration, _ in view["bars"]:
        assert duration == 0.25 and start > 0
    json.dumps(view)


def test_stream_is_incremental_by_cursor_and_bounded():
    cluster = Cluster()
    ran(cluster, ["f"] * 6)
    first = stream_view(cluster.snapshot())
    assert len(first["bars"]) == 6
    assert stream_view(cluster.snapshot(), after=first["next"])["bars"] == []
    ran(cluster, ["g"] * 2)
    later = stream_view(cluster.snapshot(), after=first["next"])
    assert later["names"] == ["g"] and len(later["bars"]) == 2
    limited = stream_view(cluster.snapshot(), limit=3)
    assert len(limited["bars"]) == 3 and limited["not_shown"] == 5
    # "since": only tasks that ended after that time.
    assert len(stream_view(cluster.snapshot(), since=cluster.now - 1.1)["bars"]) == 2


def test_a_cursor_older_than_the_ring_gets_what_is_kept():
    cluster = Cluster(capacity=4)
    ran(cluster, ["f"] * 10)
    snapshot = cluster.snapshot()
    assert snapshot.recent_seq == 10 and len(records_after(snapshot, 0)) == 4
    assert len(records_after(snapshot, 8)) == 2 and records_after(snapshot, 10) == ()


def test_tasks_failed_at_the_head_go_in_its_own_lane():
    cluster = Cluster()
    cluster.history.failed_at_head(b"t" * 16, "never", CANCELLED, cluster.now)
    view = stream_view(cluster.snapshot())
    assert view["lanes"] == ["head"] and view["bars"][0][4] == 2


# -- failures apart ------------------------------------------------------------------------
def test_thirty_successes_do_not_hide_three_failures():
    cluster = Cluster(capacity=30)
    ran(cluster, ["boom"] * 3, {n: error_result(n, RuntimeError, f"k{n}") for n in range(3)})
    for batch in range(3):
        cluster.submit(*[spec(100 + batch * 10 + i, "fine") for i in range(10)])
        for i in range(10):
            cluster.finish(holder(cluster, 100 + batch * 10 + i), result(100 + batch * 10 + i))
    snapshot = cluster.snapshot()
    assert all(item[1] == "fine" for item in snapshot.recent)     # pushed out of recent...
    view = failures_view(snapshot)
    assert [f["message"] for f in view["failures"]] == ["k2", "k1", "k0"]   # ...kept here
    assert view["failures"][0]["error_type"] == "RuntimeError"
    assert view["functions"] == {"boom": 3} and view["counts"] == {"raised": 3}


def test_failures_filter_by_function_and_outcome_and_cursor():
    cluster = Cluster()
    ran(cluster, ["a", "b", "a"], {0: error_result(0), 1: error_result(1), 2: result(2, CANCELLED)})
    snapshot = cluster.snapshot()
    assert [f["name"] for f in failures_view(snapshot, function="a")["failures"]] == ["a", "a"]
    assert [f["failure"] for f in failures_view(snapshot, state="cancelled")["failures"]] == ["cancelled"]
    assert failures_view(snapshot, function="a", state="raised")["failures"][0]["seq"] == 1
    everything = failures_view(snapshot)
    assert failures_view(snapshot, after=everything["next"])["failures"] == []
    with pytest.raises(ValueError, match="state must be one of"):
        failures_view(snapshot, state="exploded")


@pytest.mark.parametrize("text, parts", [("KeyError: 'x'", ("KeyError", "'x'")),
                                         ("no type here: at all", ("", "no type here: at all")),
                                         ("", ("", ""))])
def test_errors_split_into_type_and_message(text, parts):
    assert split_error(text) == parts


# -- the rings -----------------------------------------------------------------------------
def test_cpu_share_from_two_cumulative_samples():
    assert cpu_fraction(None, (10.0, 5.0)) is None
    assert cpu_fraction((10.0, 5.0), (12.0, 6.0)) == 0.5
    assert cpu_fraction((10.0, 5.0), (12.0, 4.0)) is None      # a new process, same pid
    assert cpu_fraction((10.0, 5.0), (10.0, 6.0)) is None


def test_series_per_worker_and_node_are_bounded_and_checked():
    live = LiveData(points=5, max_keys=3)
    for second in range(8):
        live.node_sample("10.0.0.7", 100.0 + second, {"used": second, "capacity": 10},
                         {"used": 1, "total": 2, "workers": {7: 1000 + second},
                          "cpu": {7: second * 0.5}, "cpu_busy": second * 1.5})
    view = live.series_view()
    points = view["workers"][worker_key("10.0.0.7", 7)]
    assert len(points) == 5 and points[-1] == [107.0, 0.5, 1007]
    assert view["nodes"]["10.0.0.7"][-1] == [107.0, 1, 2, 7, 10, 1.5]
    assert len(live.series_view(since=105.5)["workers"]["10.0.0.7:7"]) == 2
    live.node_sample("10.0.0.7", 200.0, "junk", "junk")        # what the network sent: skipped
    for pid in range(10):                                       # more workers than kept
        live.node_sample("n", 300.0, {}, {"workers": {pid: 1}})
    assert len(live.workers) == 3


def test_logs_are_per_worker_bounded_searchable_and_incremental():
    live = LiveData(log_lines=3)
    live.log_lines("a:1", [("stdout", "hello world\n", "f", b"t"), ("stderr", "oops\n", "g", b"t")], 1.0)
    live.log_lines("b:2", [("stdout", "HELLO again\n", "f", b"t"), ("bad",)], 2.0)
    everything = live.logs_view()
    assert [line["text"] for line in everything["lines"]] == ["hello world\n", "oops\n", "HELLO again\n"]
    assert everything["next"] == 3
    assert [line["worker"] for line in live.logs_view(search="hello")["lines"]] == ["a:1", "b:2"]
    assert [line["task"] for line in live.logs_view(worker="a:1", search="G")["lines"]] == ["g"]
    assert live.logs_view(after=3)["lines"] == []
    live.log_lines("a:1", [("stdout", f"{i}\n", "f", b"t") for i in range(5)], 3.0)
    assert [line["text"] for line in live.logs_view(worker="a:1")["lines"]] == ["2\n", "3\n", "4\n"]
    assert live.logs_view(limit=1)["not_shown"] == 3


# -- the event stream ----------------------------------------------------------------------
def test_events_carry_the_window_first_then_only_what_is_new():
    cluster = Cluster()
    live = LiveData()
    ran(cluster, ["f", "g"], {1: error_result(1)})
    live.log_lines("10.0.0.7:100", [("stdout", "x\n", "f", b"t")], cluster.now)
    cursor = EventCursor()
    snapshot = cluster.snapshot()
    first = first_event(snapshot, True, "<p>body</p>", live, cursor)
    assert first["first"] and len(first["stream"]["bars"]) == 2 and first["body"] == "<p>body</p>"
    assert len(first["failures"]["failures"]) == 1 and len(first["logs"]["lines"]) == 1
    assert set(first["workers"]) == {"10.0.0.7:100", "10.0.0.7:101"}
    assert next_event(snapshot, True, "<p>body</p>", live, cursor) is None    # nothing new
    cluster.submit(spec(9, "h"))
    cluster.finish(W1, result(9))
    cluster.now += 1
    later = next_event(cluster.snapshot(), True, "<p>2</p>", live, cursor)
    assert later is not None and later["stream"]["names"] == ["h"] and later["failures"]["failures"] == []
    assert later["logs"]["lines"] == [] and later["body"] == "<p>2</p>"
    json.dumps(later)


def test_workers_now_names_each_workers_current_task():
    cluster = Cluster()
    cluster.submit(spec(1, "busy"))
    now = workers_now(cluster.snapshot())
    assert [w["task"] for w in now.values()].count("busy") == 1


# -- the Jupyter proxy's URL rule (no server needed) -----------------------------------------
def test_the_proxy_forwards_to_loopback_only_and_drops_jupyters_token():
    server_proxy = pytest.importorskip("rayipy.jupyter.server_proxy")
    assert server_proxy.upstream_url("8265", "/api/stream", "after=3&token=J") == \
        "http://127.0.0.1:8265/api/stream?after=3"
    assert server_proxy.upstream_url("8265", "//evil.example/", "").startswith("http://127.0.0.1:8265/")
    for bad in ("0", "70000", "x"):
        with pytest.raises(ValueError, match="port"):
            server_proxy.upstream_url(bad, "/", "")
