"""Unit tests of work no live node could ever run: ``core/unschedulable.py`` and
``Scheduler.tick`` warning about it, then failing it (issue 13, point 7)."""

from __future__ import annotations

import math

import pytest

from rayipy.core.instructions import ActorLocation, Fail, Warn
from rayipy.core.scheduler import Execute, Scheduler
from rayipy.core.unschedulable import (WARN_AFTER_S, UnschedulableWatch, missing_resources,
                                       parse_timeout)
from rayipy.exceptions import TaskUnschedulableError
from rayipy.protocol.messages import CRASHED, Payload, TaskSpec

OWNER, OTHER = b"O" * 8, b"P" * 8
NODE, AGENT = b"node-1", b"agent-1"
GPU_NODE, GPU_AGENT = b"node-g", b"agent-g"
CPU1 = (("CPU", 1.0),)
GPU1 = (("CPU", 1.0), ("GPU", 1.0))


def spec(n: int, resources: tuple = CPU1, owner: bytes = OWNER) -> TaskSpec:
    return TaskSpec(owner + n.to_bytes(8, "big"), b"f", f"task{n}", Payload(b"args"), (), 1,
                    resources, 3)


def actor_spec(n: int, resources: tuple = GPU1) -> TaskSpec:
    return TaskSpec(OWNER + (100 + n).to_bytes(8, "big"), b"A", "Model.__init__", Payload(b""),
                    (), 1, resources, 0, actor_id=b"actor-%d" % n, method="__init__")


def of(out: list, cls: type) -> list:
    return [x for x in out if isinstance(x, cls)]


def two_nodes() -> Scheduler:
    """A CPU node with one busy worker and a GPU node with one worker."""
    s = Scheduler()
    s.add_function(b"f", b"code")
    s.add_node(NODE, AGENT, {"CPU": 1.0}, {})
    s.add_worker(b"w-cpu", NODE, 100)
    s.add_node(GPU_NODE, GPU_AGENT, {"CPU": 1.0, "GPU": 1.0}, {})
    s.add_worker(b"w-gpu", GPU_NODE, 101)
    return s


# -- the watch, alone -----------------------------------------------------------------------------
def test_watch_warns_once_then_fails_after_the_timeout():
    watch = UnschedulableWatch(timeout=20.0)
    never = lambda request: False   # noqa: E731
    assert watch.check(0.0, [CPU1], never) == ([], [], {})
    assert watch.check(WARN_AFTER_S - 0.1, [CPU1], never).warn == []
    verdict = watch.check(WARN_AFTER_S, [CPU1], never)
    assert verdict.warn == [CPU1] and verdict.fail == [] and verdict.waited[CPU1] == 0.0
    assert watch.check(WARN_AFTER_S + 1, [CPU1], never).warn == []      # once only
    verdict = watch.check(20.0, [CPU1], never)
    assert verdict.fail == [CPU1] and verdict.warn == []
    assert watch.since == {} and watch.warned == set()


def test_watch_forgets_a_request_a_node_can_run_again_or_that_no_longer_waits():
    watch = UnschedulableWatch(timeout=10.0)
    watch.check(0.0, [CPU1, GPU1], lambda r: False)
    watch.check(5.0, [CPU1, GPU1], lambda r: False)                     # warned
    assert watch.warned == {CPU1, GPU1}
    # A node that has CPUs joins; the GPU work is done (cancelled) meanwhile.
    assert watch.check(6.0, [CPU1], lambda r: r == CPU1) == ([], [], {})
    assert watch.since == {} and watch.warned == set()
    # The node leaves again: the clock starts over, and the warning comes again.
    watch.check(7.0, [CPU1], lambda r: False)
    assert watch.check(16.9, [CPU1], lambda r: False).fail == []
    assert watch.check(17.0, [CPU1], lambda r: False).fail == [CPU1]


def test_watch_with_an_infinite_timeout_warns_and_never_fails():
    watch = UnschedulableWatch(timeout=math.inf)
    assert watch.check(0.0, [CPU1], lambda r: False) == ([], [], {})
    assert watch.check(WARN_AFTER_S, [CPU1], lambda r: False).warn == [CPU1]
    assert watch.check(1e9, [CPU1], lambda r: False).fail == []


@pytest.mark.parametrize("bad", [0, -1, "soon", None, True, float("nan")])
def test_a_bad_timeout_setting_is_refused(bad):
    with pytest.raises(ValueError, match="unschedulable_task_timeout_s must be"):
        parse_timeout(bad)


def test_timeout_settings_parse():
    assert parse_timeout("2.5") == 2.5 and parse_timeout(60) == 60.0
    assert parse_timeout("inf") == math.inf


def test_missing_resources_names_what_no_live_node_has():
    s = two_nodes()
    assert missing_resources((("CPU", 1.0), ("GPU", 2.0)), s.nodes) == \
        "GPU=2 (the largest live node has 1)"
    s.remove_node(GPU_NODE)
    assert missing_resources(GPU1, s.nodes) == "GPU=1 (the largest live node has 0)"
    s.remove_node(NODE)
    assert missing_resources(GPU1, s.nodes) == "CPU=1, GPU=1 (the cluster has no live node)"


# -- the scheduler's tick -----------------------------------------------------------------------
def test_tasks_submitted_without_any_node_fail_after_the_timeout_with_a_warning_first():
    s = Scheduler()
    s.unschedulable.timeout = 30.0
    assert s.submit([spec(1), spec(2), spec(3, owner=OTHER)]) == []     # no node: they wait
    assert s.tick(100.0) == []
    warned = s.tick(100.0 + WARN_AFTER_S)
    assert sorted((w.task.name, w.text.count("and 1 more")) for w in warned) == \
        [("task1", 1), ("task3", 0)]                                    # once per owner
    assert all(isinstance(w, Warn) for w in warned)
    assert "CPU=1 (the cluster has no live node)" in warned[0].text
    assert "fails in 25 s" in warned[0].text
    assert s.tick(101.0 + WARN_AFTER_S) == []                           # not again
    failed = of(s.tick(130.0), Fail)
    assert sorted(f.task.name for f in failed) == ["task1", "task2", "task3"]
    assert all(f.status == CRASHED and isinstance(f.error, TaskUnschedulableError)
               for f in failed)
    assert "for 30 s no live node has had CPU=1" in str(failed[0].error)
    assert s.tasks == {} and s.ready.get(CPU1, ()) == ()
    assert s.counts["failed"] == 3


def test_a_node_joining_in_time_runs_the_waiting_tasks():
    s = Scheduler()
    s.add_function(b"f", b"code")
    s.unschedulable.timeout = 30.0
    s.submit([spec(1)])
    s.tick(0.0)
    assert of(s.tick(10.0), Warn)
    s.add_node(NODE, AGENT, {"CPU": 1.0}, {})
    out = s.add_worker(b"w", NODE, 100)
    assert [x.specs[0].name for x in of(out, Execute)] == ["task1"]
    assert s.tick(40.0) == [] and s.unschedulable.since == {}


def test_queued_tasks_fail_when_the_only_node_that_could_run_them_is_lost():
    s = two_nodes()
    s.unschedulable.timeout = 10.0
    out = s.submit([spec(1, GPU1), spec(2, GPU1)])
    assert [x.worker for x in of(out, Execute)] == [b"w-gpu"]          # task 1 runs
    s.node_lost(GPU_NODE, "its agent was killed")                       # task 1 requeued
    assert list(s.ready[GPU1]) and s.counts["retried"] == 1
    # Plain CPU work still runs on the CPU node; only the GPU request is stuck.
    assert of(s.submit([spec(3)]), Execute)
    s.tick(0.0)
    warned = s.tick(5.0)
    assert [w.task.name for w in warned] == ["task1"]
    assert "and 1 more of yours" in warned[0].text
    assert "no live node has GPU=1 (the largest live node has 0)" in warned[0].text
    failed = of(s.tick(10.0), Fail)
    assert sorted(f.task.name for f in failed) == ["task1", "task2"]
    assert "GPU=1 (the largest live node has 0)" in str(failed[0].error)
    assert s.ready.get(GPU1, ()) == ()


def test_an_actor_that_no_live_node_can_host_fails_and_its_callers_hear_it():
    s = two_nodes()
    s.unschedulable.timeout = 10.0
    s.node_lost(GPU_NODE, "its host went away")
    s.locate_actor(b"actor-1", b"caller")            # a caller asks before the creation
    creation = actor_spec(1)
    # The node with GPUs left before the creation came: refused at once (there are nodes).
    out = s.submit([creation])
    assert of(out, Fail) and "GPU" in str(of(out, Fail)[0].error)
    # One that came while the GPU node was there, and waits for it, fails at the timeout.
    s2 = two_nodes()
    s2.unschedulable.timeout = 10.0
    s2.submit([spec(1, GPU1)])                                  # the GPU worker takes a task
    s2.submit([actor_spec(2)])                                  # so the actor waits
    s2.locate_actor(b"actor-2", b"caller")
    assert list(s2.creating) == [b"actor-2"]
    s2.node_lost(GPU_NODE, "its host went away")
    s2.tick(0.0)
    warned = s2.tick(5.0)
    # One warning per owner and request: the task and the actor creation share it.
    assert [w.task.name for w in warned] == ["task1"]
    assert "task 'task1' (and 1 more of yours" in warned[0].text
    out = s2.tick(10.0)
    assert sorted(f.task.name for f in of(out, Fail)) == ["Model.__init__", "task1"]
    located = of(out, ActorLocation)
    assert located and b"caller" in located[0].to and "cannot be created" in located[0].why
    assert s2.actors[b"actor-2"].dead and list(s2.creating) == []


def test_placement_group_requests_are_left_waiting():
    s = Scheduler()
    s.unschedulable.timeout = 1.0
    group_request = (("CPU_group_0123abcd", 1.0),)
    s.submit([spec(1, group_request)])
    assert s.tick(0.0) == [] and s.tick(100.0) == []
    assert list(s.ready[group_request])


def test_a_retry_its_owner_sends_counts_as_retried():
    s = two_nodes()
    s.submit([spec(1)._replace(attempt=1), spec(2)])
    assert s.counts["retried"] == 1 and s.counts["submitted"] == 2
