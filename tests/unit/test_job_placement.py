"""Where a job's driver runs and what it holds (core/job_placement.py), on the scheduler's
own nodes: pure, no sockets."""

from __future__ import annotations

import pytest

from rayipy.core import job_placement
from rayipy.core.job_placement import JobPlacement, choose_node, entrypoint_amounts, request_of
from rayipy.core.instructions import Execute
from rayipy.core.jobs import FAILED, PENDING, STOPPED, JobTable
from rayipy.core.scheduler import Scheduler
from rayipy.protocol.messages import Payload, TaskSpec

HEAD, OTHER = b"h" * 8, b"o" * 8


def two_nodes() -> Scheduler:
    """A head node (1 CPU) and another (1 CPU, special=2), with a worker each."""
    scheduler = Scheduler()
    scheduler.add_node(HEAD, b"agent-h", {"CPU": 1.0}, {"ip": "10.0.0.1"})
    scheduler.add_node(OTHER, b"agent-o", {"CPU": 1.0, "special": 2.0, "GPU": 2.0},
                       {"ip": "10.0.0.2", "gpu_ids": ["0", "1"]})
    scheduler.add_worker(b"w-head", HEAD, 1)
    scheduler.add_worker(b"w-other", OTHER, 2)
    return scheduler


def spec(task_id: bytes, resources: tuple) -> TaskSpec:
    return TaskSpec(task_id, b"f", "f", Payload(b"args"), (), 1, resources, 0)


def test_ray_arguments_become_one_checked_request():
    assert entrypoint_amounts() == {}
    assert entrypoint_amounts(1, 0, 2**20, {"special": 1, "zero": 0}) == {
        "CPU": 1.0, "memory": float(2**20), "special": 1.0}
    assert request_of({"special": 1, "CPU": 2}) == (("CPU", 2.0), ("special", 1.0))
    for bad, message in (((-1,), "entrypoint_num_cpus must be a number >= 0"),
                         ((None, True), "entrypoint_num_gpus"),
                         ((None, None, "1G"), "entrypoint_memory must be a number of bytes"),
                         ((None, None, None, {"CPU": 1}), "use entrypoint_num_cpus="),
                         ((None, None, None, {"x": -2}), r"entrypoint_resources\['x'\]"),
                         ((None, None, None, ["x"]), "must be a dict")):
        with pytest.raises(ValueError, match=message):
            entrypoint_amounts(*bad)


def test_a_job_goes_to_the_node_with_its_resources_and_tasks_cannot_take_them():
    scheduler = two_nodes()
    placement = JobPlacement()
    request = request_of({"CPU": 1, "special": 1})
    node = choose_node(request, scheduler.nodes, "10.0.0.1")
    assert node is not None and node.node_id == OTHER
    held = placement.hold("job", node, request)
    assert held.node_id == OTHER and scheduler.nodes[OTHER].available["CPU"] == 0.0
    # A task needing that node's CPU waits; one that fits the head's node runs there.
    out = scheduler.submit([spec(b"t" * 16, (("CPU", 1.0), ("special", 1.0)))])
    assert not [i for i in out if isinstance(i, Execute)]
    assert scheduler.summary()["queued"] == 1
    # The job ends: its CPU goes back, and the waiting task runs on that node.
    assert placement.release("job", scheduler.nodes) is True
    (execute,) = [i for i in scheduler.dispatch() if isinstance(i, Execute)]
    assert execute.worker == b"w-other"
    assert placement.release("job", scheduler.nodes) is False   # once only


def test_without_a_request_the_head_node_and_with_one_the_head_first_if_it_fits():
    scheduler = two_nodes()
    assert choose_node((), scheduler.nodes, "10.0.0.2").node_id == OTHER   # "the head's"
    assert choose_node((("CPU", 1.0),), scheduler.nodes, "10.0.0.1").node_id == HEAD
    scheduler.nodes[HEAD].take((("CPU", 1.0),))                             # head busy
    assert choose_node((("CPU", 1.0),), scheduler.nodes, "10.0.0.1").node_id == OTHER
    scheduler.nodes[OTHER].take((("CPU", 1.0),))
    assert choose_node((("CPU", 1.0),), scheduler.nodes, "10.0.0.1") is None


def test_gpus_are_held_by_device_and_named_for_the_job():
    scheduler = two_nodes()
    placement = JobPlacement()
    request = request_of({"GPU": 1})
    held = placement.hold("g", choose_node(request, scheduler.nodes, ""), request)
    assert held.gpu_ids == ("0",) and JobPlacement.env_vars(held) == {"CUDA_VISIBLE_DEVICES": "0"}
    assert scheduler.nodes[OTHER].gpu_free == {"0": 0.0, "1": 1.0}
    placement.release("g", scheduler.nodes)
    assert scheduler.nodes[OTHER].gpu_free == {"0": 1.0, "1": 1.0}
    assert scheduler.nodes[OTHER].available["GPU"] == 2.0


def test_waiting_jobs_are_placed_oldest_first_once_resources_free_up():
    scheduler = two_nodes()
    placement = JobPlacement()
    request = request_of({"special": 2})
    placement.hold("first", scheduler.nodes[OTHER], request)
    waiting = [("second", request), ("third", request)]
    assert placement.place_waiting(waiting, scheduler.nodes, "") == []
    assert placement.check(0.0, waiting, scheduler.nodes) == {}   # busy, not impossible
    message = placement.waiting_message(request, scheduler.nodes)
    assert "waiting for a node with special=2 free" in message
    placement.release("first", scheduler.nodes)
    placed = placement.place_waiting(waiting, scheduler.nodes, "")
    assert [job for job, _ in placed] == ["second"]
    assert placed[0][1].node_id == OTHER and scheduler.nodes[OTHER].available["special"] == 0.0


def test_a_job_no_live_node_could_hold_fails_after_the_timeout_naming_what_is_missing():
    scheduler = two_nodes()
    placement = JobPlacement(timeout=10.0)
    request = request_of({"special": 5})
    waiting = [("big", request)]
    message = placement.waiting_message(request, scheduler.nodes)
    assert "no live node has special=5 (the largest live node has 2)" in message
    assert "fails after 10 s" in message
    assert placement.check(100.0, waiting, scheduler.nodes) == {}
    assert placement.check(109.0, waiting, scheduler.nodes) == {}
    failed = placement.check(110.0, waiting, scheduler.nodes)
    assert "job 'big' asks for special=5" in failed["big"]
    assert "for 10 s no live node has had special=5" in failed["big"]
    # A node that could hold it, joining in time, stops the clock.
    placement = JobPlacement(timeout=10.0)
    placement.check(100.0, waiting, scheduler.nodes)
    scheduler.add_node(b"n" * 8, b"agent-n", {"CPU": 1.0, "special": 8.0}, {})
    assert placement.check(120.0, waiting, scheduler.nodes) == {}
    assert placement.place_waiting(waiting, scheduler.nodes, "")[0][1].node_id == b"n" * 8


def test_a_lost_node_gives_nothing_back():
    scheduler = two_nodes()
    placement = JobPlacement()
    placement.hold("job", scheduler.nodes[OTHER], request_of({"CPU": 1}))
    scheduler.node_lost(OTHER, "gone")
    assert placement.release("job", scheduler.nodes) is False
    assert "job" not in placement.held


def test_the_table_keeps_waiting_jobs_unplaced_until_placed_stopped_or_failed():
    table = JobTable()
    table.submit("python a.py", b"", 1.0, "a", resources={"CPU": 1.0})
    table.submit("python b.py", b"", 2.0, "b", resources={"CPU": 1.0})
    table.submit("python c.py", b"", 3.0, "c", resources={"special": 9.0})
    assert [r.submission_id for r in table.waiting()] == ["a", "b", "c"]
    assert table.waiting_for("a", "waiting for CPU") is True
    assert table.waiting_for("a", "waiting for CPU") is False      # unchanged: no journal
    table.placed("a", HEAD)
    info = table.get("a").info()
    assert info["driver_node_id"] == HEAD.hex() and info["entrypoint_num_cpus"] == 1.0
    assert table.get("c").info()["entrypoint_resources"] == {"special": 9.0}
    assert table.stop("b", 5.0) is False           # nothing to tell an agent...
    assert table.get("b").status == STOPPED         # ...it is stopped at once
    table.unschedulable("c", "no node has special=9", 6.0)
    assert table.get("c").status == FAILED and table.get("c").message == "no node has special=9"
    assert table.waiting() == [] and table.get("a").status == PENDING
    # A lost node fails the jobs placed on it, never the ones still waiting.
    table.submit("python d.py", b"", 7.0, "d", resources={"CPU": 1.0})
    assert table.node_lost(b"", "nothing", 8.0) == []
    assert table.node_lost(HEAD, "gone", 8.0) == ["a"]
    assert job_placement.describe(()) == "nothing"


def test_the_client_refuses_what_it_cannot_do_with_what_to_do_instead():
    from rayipy.job import JobClient
    from rayipy.job.client import _refuse_unsupported
    with pytest.raises(ValueError, match="rayipy nodes have no labels: give the node a custom"):
        _refuse_unsupported({"entrypoint_label_selector": {"zone": "a"}})
    with pytest.raises(TypeError, match="unexpected keyword argument.*nope.*entrypoint_num_cpus"):
        _refuse_unsupported({"nope": 1})
    _refuse_unsupported({})
    # Ray's habit of giving the dashboard's URL, without a local cluster of ours to match.
    with pytest.raises(ValueError, match="not a dashboard URL like 'http://10.0.0.1:8265'"):
        JobClient("http://10.0.0.1:8265")
